"""The loss budget (``sam_budget``, LE-SAM): each step's radius is ``min(sigma / g^T d, sam_rho)``. Checked against
hand computations with a fixed sigma, and, with LETS learning log sigma, the logged hypergradient against a central
finite difference of F(sigma) on least squares in float64 (where the secant is exact)."""

import math

import pytest
import torch
from toy import (
    LR,
    LinearRegressor,
    hand_direction,
    lookahead_finite_difference,
    loss_fn,
    regression_data,
    sam_sgd_step,
    seen_batches,
)

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.hub import radius_card
from lets_hf.perturbation import asam_direction, budget_radius, sam_direction
from lets_hf.radius import RadiusState, radius_step

SIGMA = 0.02


def test_budget_radius_is_sigma_over_the_slope_and_stops_at_the_ceiling():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]  # ||g|| = 5
    d = sam_direction([], grads)
    rho, free = budget_radius(grads, d, 0.1, rho_max=1.0)
    assert float(rho) == pytest.approx(0.1 / 5) and float(free) == 1.0  # first-order loss increase rho ||g|| = 0.1
    rho, free = budget_radius(grads, d, 0.1, rho_max=0.01)
    assert float(rho) == pytest.approx(0.01) and float(free) == 0.0
    params = [torch.tensor([2.0, -1.0]), torch.tensor([[0.5]])]
    d = asam_direction(params, grads, eta=0.0)  # T = |theta| on the matrix, 1 on the vector: T g = (3, 0, 2)
    rho, _ = budget_radius(grads, d, 0.1, rho_max=1.0)
    assert float(rho) == pytest.approx(0.1 / math.sqrt(13))  # g^T d = ||T g||


def budget_run(base_args, n_accum=1, *, lets, ceiling=10.0, variant="sam", objective="gap", max_steps=2):
    data = regression_data(24)
    model = LinearRegressor()
    theta0 = (model.linear.weight.detach().clone(), model.linear.bias.detach().clone())
    args = LETSTrainingArguments(
        **base_args, optim="sgd", learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0,
        sam_variant=variant, sam_rho=ceiling, sam_budget=SIGMA, lets=lets, lets_interval=1, lets_lr=0.01,
        lets_objective=objective, max_steps=max_steps, per_device_train_batch_size=16 // n_accum,
        gradient_accumulation_steps=n_accum, lets_batch_size=8,
    )  # fmt: skip
    lets_dataset = data[16:] if lets else None
    trainer = LETSTrainer(model=model, args=args, train_dataset=data[:16], lets_dataset=lets_dataset)
    trainer.train()
    return trainer, model, data, theta0


@pytest.mark.parametrize("variant", ["sam", "asam"])
def test_a_fixed_budget_trains_as_the_hand_computed_steps(base_args, variant):
    trainer, model, data, theta = budget_run(base_args, 2, lets=False, variant=variant, max_steps=3)
    seen = seen_batches(model, data)  # per micro-batch (ascent, descent)
    for step in range(3):
        before = theta
        theta = sam_sgd_step(*theta, [seen[4 * step], seen[4 * step + 2]], 10.0, variant, sigma=SIGMA)
    w, b = model.linear.weight.detach(), model.linear.bias.detach()
    assert torch.allclose(w, theta[0], atol=1e-12) and torch.allclose(b, theta[1], atol=1e-12)
    x, y = seen[-2]  # the radius the trainer reports: the last micro-batch's, at the weights before the last step
    w0, b0 = (t.clone().requires_grad_() for t in before)
    g = torch.autograd.grad(loss_fn(w0, b0, x, y), [w0, b0])
    slope = sum((gi * di).sum() for gi, di in zip(g, hand_direction(variant, *before, *g)))
    assert trainer.rho == pytest.approx(SIGMA / slope.item(), rel=1e-9) and trainer.sigma == SIGMA


def test_the_ceiling_holds_the_radius(base_args):
    trainer, model, data, theta = budget_run(base_args, lets=False, ceiling=1e-4, max_steps=1)
    assert trainer.rho == pytest.approx(1e-4)
    expected = sam_sgd_step(*theta, [seen_batches(model, data)[0]], 1e-4, "sam")
    assert torch.allclose(model.linear.weight.detach(), expected[0], atol=1e-12)


def finite_difference_in_sigma(model, data, theta0, n_accum, variant, objective, ceiling=10.0, h=1e-6):
    step = lambda micro, sigma: sam_sgd_step(*theta0, micro, ceiling, variant, sigma=sigma)  # noqa: E731
    return lookahead_finite_difference(model, data, n_accum, objective, step, SIGMA, h)


@pytest.mark.parametrize("objective", ["gap", "heldout"])
@pytest.mark.parametrize("n_accum", [1, 2])
@pytest.mark.parametrize("variant", ["sam", "asam"])
def test_lets_on_log_sigma_logs_the_finite_difference_of_F(base_args, variant, n_accum, objective):
    """dF/dsigma through every micro-batch's own radius sigma / g_i^T d_i: the secant G - g is d G / d log sigma."""
    trainer, model, data, theta0 = budget_run(base_args, n_accum, lets=True, variant=variant, objective=objective)
    reference = finite_difference_in_sigma(model, data, theta0, n_accum, variant, objective)
    logged = trainer.lets_history[0]["hypergradient"]
    assert abs(reference) > 1e-6
    assert logged == pytest.approx(reference, rel=1e-6)
    expected = radius_step(
        RadiusState(math.log(SIGMA)), logged, lr=0.01, optimizer=trainer.args.lets_optimizer, rho_min=SIGMA / 100,
        rho_max=100 * SIGMA, clip=trainer.args.lets_clip,
    )  # fmt: skip
    assert trainer.lets_history[0]["sigma"] == pytest.approx(expected.rho, rel=1e-12)  # LETS moved sigma, not rho
    assert trainer.lets_history[0]["sigma"] != SIGMA


def test_under_the_ceiling_sigma_has_no_effect_and_no_hypergradient(base_args):
    trainer, model, data, theta0 = budget_run(base_args, lets=True, ceiling=1e-4, objective="heldout")
    assert finite_difference_in_sigma(model, data, theta0, 1, "sam", "heldout", ceiling=1e-4) == 0.0
    assert trainer.lets_history[0]["hypergradient"] == 0.0 and trainer.sigma == SIGMA


def test_budget_settings_are_checked(base_args):
    with pytest.raises(ValueError, match="sam_budget=-0.1 must be > 0"):
        LETSTrainingArguments(**base_args, sam_budget=-0.1)
    with pytest.raises(ValueError, match="sam_budget needs sam_rho > 0"):
        LETSTrainingArguments(**base_args, sam_budget=0.1, sam_rho=0.0, lets=False)
    with pytest.raises(ValueError, match="lets_hvp='fisher' with sam_budget is not supported"):
        LETSTrainingArguments(**base_args, sam_budget=0.1, lets_hvp="fisher")
    args = LETSTrainingArguments(**base_args, sam_budget=0.1)
    assert args.rho_bounds == pytest.approx((0.001, 10.0)) and args.lets_start == 0.1


def test_the_model_card_gives_the_budget_and_the_radii_the_run_used(base_args):
    """Not the ceiling sam_rho as a starting radius: with a budget it bounds the radius, it is not one it took."""
    trainer, *_ = budget_run(base_args, lets=True, max_steps=3)
    card = radius_card(trainer.args, trainer.lets_history, trainer.rho)
    sigma = trainer.lets_history[-1]["sigma"]
    assert f"| loss budget (`sam_budget`) | 0.02 -> {sigma:.4g}, radius at most `sam_rho` = 10 |" in card
    rhos = [h["rho"] for h in trainer.lets_history] + [trainer.rho]
    bounds = f"(sigma's bounds {SIGMA / 100:.4g} to {100 * SIGMA:.4g})"
    assert f"| range over training | {min(rhos):.4g} to {max(rhos):.4g} {bounds} |" in card
    assert max(rhos) < 1  # the radii sigma / ||g||, far under the ceiling
