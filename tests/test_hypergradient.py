"""LETS.md's exactness check: on least squares in float64 with plain SGD and no clipping, the logged hypergradient
equals a central finite difference of F(rho); the pure pieces (u estimators, w, radius step) against hand values."""

import math

import pytest
import torch
from toy import LR, LinearRegressor, loss_fn, regression_data, sam_sgd_step

from lets_hf import LETSTrainer, LETSTrainingArguments, RadiusState, radius_step
from lets_hf.hypergradient import (
    LossGuard,
    constant_predictor_loss,
    fisher_curvature,
    guarded_log_rho,
    hessian_vector_product,
    optimizer_derivative_,
    radius_lr,
    secant_curvature_,
)

RHO = 0.05


def run_lets(args_kw, n_accum, hvp, variant="sam", seed=0, objective="gap"):
    data = regression_data(24, seed=seed)
    model = LinearRegressor(seed=seed)
    w0, b0 = model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    args = LETSTrainingArguments(
        **args_kw,
        optim="sgd",
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0,
        sam_variant=variant,
        sam_rho=RHO,
        lets_interval=1,
        lets_lr=0.01,
        lets_hvp=hvp,
        lets_objective=objective,
        max_steps=2,
        per_device_train_batch_size=16 // n_accum,
        gradient_accumulation_steps=n_accum,
        lets_batch_size=8,
    )
    trainer = LETSTrainer(model=model, args=args, train_dataset=data[:16], lets_dataset=data[16:])
    trainer.train()
    logged = next(e for e in trainer.state.log_history if e.get("step") == 2 and "lets_hypergrad" in e)
    return trainer, model, data, (w0, b0), logged["lets_hypergrad"]


def finite_difference(model, data, theta0, n_accum, variant, objective="gap", h=1e-4):
    """Central difference of F(rho) on the batches the run used: ``gap`` 1/2 (l(theta'; V) - l(theta'; B'))^2,
    ``heldout`` l(theta'; V)."""
    label = {tuple(d["x"].tolist()): d["labels"] for d in data}
    stack = lambda xs: (xs, torch.stack([label[tuple(r.tolist())] for r in xs]))  # noqa: E731
    seen = model.seen  # step 1: (ascent, descent) per micro-batch; step 2: held-out, then (ascent, descent)s
    step1 = [stack(seen[2 * i]) for i in range(n_accum)]
    xv, yv = stack(seen[2 * n_accum])
    step2 = [stack(seen[2 * n_accum + 1 + 2 * i]) for i in range(n_accum)]

    def F(rho):
        w1, b1 = sam_sgd_step(*theta0, step1, rho, variant)
        train = sum(loss_fn(w1, b1, x, y) for x, y in step2) / n_accum
        heldout = loss_fn(w1, b1, xv, yv)
        return 0.5 * (heldout - train) ** 2 if objective == "gap" else heldout

    return ((F(RHO + h) - F(RHO - h)) / (2 * h)).item()


@pytest.mark.parametrize("objective", ["gap", "heldout"])
@pytest.mark.parametrize("n_accum", [1, 2])
@pytest.mark.parametrize("variant", ["sam", "asam"])
def test_logged_hypergradient_equals_finite_difference(base_args, n_accum, variant, objective):
    _, model, data, theta0, logged = run_lets(base_args, n_accum, "secant", variant, objective=objective)
    reference = finite_difference(model, data, theta0, n_accum, variant, objective)
    assert abs(reference) > 1e-6  # a real signal, not two zeros
    assert logged == pytest.approx(reference, rel=1e-6)


def test_the_objectives_differ_on_the_same_step(base_args):
    *_, gap = run_lets(base_args, 1, "secant", objective="gap")
    *_, heldout = run_lets(base_args, 1, "secant", objective="heldout")
    assert gap != pytest.approx(heldout, rel=1e-3)


def test_secant_equals_exact_on_a_quadratic(base_args):
    _, _, _, _, secant = run_lets(base_args, 2, "secant")
    _, _, _, _, exact = run_lets(base_args, 2, "exact")
    assert secant == pytest.approx(exact, rel=1e-9)


def test_fisher_runs_and_differs_from_exact(base_args):
    _, _, _, _, fisher = run_lets(base_args, 1, "fisher")
    _, _, _, _, exact = run_lets(base_args, 1, "exact")
    assert math.isfinite(fisher) and fisher != pytest.approx(exact, rel=1e-3)


def test_radius_moves_against_the_hypergradient(base_args):
    trainer, *_, logged = run_lets(base_args, 1, "secant")
    expected = radius_step(
        RadiusState(math.log(RHO)), logged, lr=0.01, optimizer="adam", rho_min=RHO / 100, rho_max=10 * RHO
    )
    assert trainer.rho == pytest.approx(expected.rho, rel=1e-12)
    assert (trainer.rho - RHO) * logged < 0


# ---- the pure functions ------------------------------------------------------------------------------------------
def test_estimators_on_a_quadratic():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    hess = a @ a.T
    p = torch.randn(4, dtype=torch.float64, requires_grad=True)
    d = torch.randn(4, dtype=torch.float64)
    loss = 0.5 * p @ hess @ p
    assert torch.allclose(hessian_vector_product(loss, [p], [d])[0], hess @ d)
    g, gt = hess @ p.detach(), hess @ (p.detach() + 0.3 * d)
    assert torch.allclose(secant_curvature_([g.clone()], [gt], 0.3)[0], hess @ d)
    assert torch.allclose(fisher_curvature([g], [d])[0], g * g * d)


def test_adam_preconditioner_matches_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    for g in ([0.5, -1.0], [0.2, 0.3]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    v = opt.state[p]["exp_avg_sq"]
    u = torch.tensor([1.0, 1.0], dtype=torch.float64)
    w = optimizer_derivative_([u.clone()], [p], opt, {id(opt.param_groups[0]): 0.1}, 0.5)[0]
    expected = -0.1 * 0.5 * (1 - 0.8) / (1 - 0.8**2) / ((v / (1 - 0.9**2)).sqrt() + 1e-8) * u
    assert torch.allclose(w, expected, rtol=1e-12)


def test_radius_step_bounds_and_no_increase():
    state = RadiusState(math.log(0.05))
    up = radius_step(state, -1.0, lr=0.1, optimizer="adam", rho_min=0.01, rho_max=0.2)
    assert up.log_rho == pytest.approx(math.log(0.05) + 0.1)  # Adam's first step has size lr
    capped = radius_step(state, -1.0, lr=10.0, optimizer="adam", rho_min=0.01, rho_max=0.2)
    assert capped.rho == pytest.approx(0.2)
    held = radius_step(state, -1.0, lr=0.1, optimizer="adam", rho_min=0.01, rho_max=0.2, allow_increase=False)
    assert held.rho == pytest.approx(0.05)
    sgd = radius_step(state, 2.0, lr=0.5, optimizer="sgd", rho_min=0.01, rho_max=0.2)
    assert sgd.log_rho == pytest.approx(math.log(0.05) - 0.5 * 0.05 * 2.0)


def test_loss_guard_trips_on_a_rising_loss():
    guard = LossGuard(tolerance=0.2, beta=0.0)
    assert [guard.update(x) for x in [1.0, 0.8, 0.7, 0.75]] == [None] * 4
    assert guard.update(0.9) == "risen" and guard.tripped and guard.trips == 1
    assert guard.update(0.95) is None and guard.tripped  # still risen: one trip, not two
    assert guard.update(0.72) is None and not guard.tripped  # back within 20% of the best: released


def test_loss_guard_trips_on_a_model_that_does_not_learn_and_again_while_it_does_not():
    """A loss that sits still sets new lows by hairs; only a 1% fall counts as progress."""
    guard = LossGuard(tolerance=0.2, patience=3, threshold=0.01, beta=0.0)
    # 0.69 -> 0.61 is progress; 0.605, 0.606, 0.604 stay above 0.61 * 0.99 = 0.6039: a stall.
    assert [guard.update(x) for x in [0.69, 0.61, 0.605, 0.606, 0.604]] == [None, None, None, None, "stalled"]
    assert guard.tripped and guard.trips == 1 and guard.best == 0.61 and guard.since_best == 0
    assert [guard.update(0.607) for _ in range(3)] == [None, None, "stalled"] and guard.trips == 2  # re-armed
    assert guard.update(0.59) is None and not guard.tripped  # progress releases it
    # Without the threshold every hair-thin new low counted as progress: the flat loss never tripped.
    blind = LossGuard(tolerance=0.2, patience=3, beta=0.0)
    assert not any(blind.update(x) for x in [0.69, 0.61, 0.605, 0.604, 0.603, 0.602, 0.601, 0.6])
    flat = LossGuard(tolerance=0.2, threshold=0.01, beta=0.0)  # without patience a flat loss never trips
    assert not any(flat.update(0.6) for _ in range(50))


def test_a_plateau_well_below_the_label_prior_is_not_a_stall():
    """A model that has learned also plateaus (within an epoch, late in a schedule): not a model that is not learning.
    With the prior's loss known, a stall needs the loss at it (no more than 5% below)."""
    plateau = [0.69, 0.45, 0.449, 0.45, 0.448, 0.449, 0.45, 0.449]
    learned = LossGuard(tolerance=0.2, patience=3, threshold=0.01, prior=0.61, beta=0.0)
    assert not any(learned.update(x) for x in plateau)
    blind = LossGuard(tolerance=0.2, patience=3, threshold=0.01, beta=0.0)  # no prior: any plateau counts
    assert [blind.update(x) for x in plateau][4] == "stalled"
    at_prior = LossGuard(tolerance=0.2, patience=3, threshold=0.01, prior=0.61, beta=0.0)
    # 0.585 is 4.1% below the prior: at it; the same stall as without a prior.
    assert [at_prior.update(x) for x in [0.69, 0.59, 0.587, 0.586, 0.585]] == [None, None, None, None, "stalled"]
    # Still counting while below the margin: a loss that climbs back to the prior without progress trips at once.
    late = LossGuard(tolerance=0.2, patience=3, threshold=0.01, prior=0.61, beta=0.0)
    assert [late.update(x) for x in [0.69, 0.55, 0.56, 0.56, 0.56, 0.59]] == [None] * 5 + ["stalled"]


def test_constant_predictor_loss_is_the_label_entropy_or_the_label_variance():
    labels = torch.tensor([0, 0, 0, 1, -100])  # the ignore index does not count
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert constant_predictor_loss(labels, regression=False) == pytest.approx(entropy)
    assert constant_predictor_loss(torch.tensor([2, 2, 2]), regression=False) == 0.0  # one class: nothing to learn
    scores = torch.tensor([0.0, 1.0, 2.0, 5.0])
    assert constant_predictor_loss(scores, regression=True) == pytest.approx(float(((scores - 2.0) ** 2).mean()))
    # It is the loss the heads compute for the constant prediction that minimises it.
    logits = torch.tensor([math.log(0.75), math.log(0.25)]).expand(4, 2)
    ce = torch.nn.functional.cross_entropy(logits, labels[:4])
    assert constant_predictor_loss(labels, regression=False) == pytest.approx(float(ce))


def test_a_trip_sends_rho_back_to_sam_rho_after_a_rise_and_a_decade_lower_after_a_stall():
    def to(rho, trip, sam_rho=0.1, rho_min=0.001):
        return math.exp(guarded_log_rho(math.log(rho), trip, sam_rho, rho_min))

    assert to(0.3, "risen") == pytest.approx(0.1) and to(0.05, "risen") == pytest.approx(0.05)
    assert to(0.3, "stalled") == pytest.approx(0.01)  # the start itself may be what the model cannot learn under
    assert to(0.02, "stalled") == pytest.approx(0.002) and to(0.002, "stalled") == pytest.approx(0.001)  # the floor


def test_loss_guard_state_loads_from_a_checkpoint_of_the_previous_format():
    guard = LossGuard(tolerance=0.2, patience=3, threshold=0.01, beta=0.0)
    for x in [0.69, 0.61, 0.605, 0.606, 0.604]:
        guard.update(x)
    assert LossGuard.from_dict(guard.to_dict()) == guard
    old = {"tolerance": 0.2, "patience": 10, "beta": 0.9, "ema": 0.6, "best": 0.6, "since_best": 12, "tripped": True}
    assert LossGuard.from_dict(old).reason == "stalled" and LossGuard.from_dict(old).threshold == 0.0
    assert LossGuard.from_dict(old).prior is None  # a checkpoint before the prior: the trainer supplies it


def test_radius_lr_gives_every_run_the_same_reach():
    for max_steps, interval in [(113, 5), (485, 5), (36000, 10)]:
        hyper_steps = max_steps // interval
        assert radius_lr(100.0, max_steps, interval) * hyper_steps == pytest.approx(math.log(100.0))
    assert radius_lr(100.0, 3, 5) == pytest.approx(math.log(100.0))  # fewer steps than the interval: one step


def test_default_radius_lr_is_tied_to_the_run(base_args):
    """lets_lr=None: the first Adam step moves log rho by exactly ln(travel) / hyper-steps (here 2 steps, 2)."""
    data = regression_data(24)
    args = LETSTrainingArguments(
        **base_args, optim="sgd", learning_rate=LR, max_steps=2, per_device_train_batch_size=16, lets_batch_size=8,
        sam_rho=RHO, lets_interval=1, lets_travel=10.0,
    )  # fmt: skip
    trainer = LETSTrainer(model=LinearRegressor(), args=args, train_dataset=data[:16], lets_dataset=data[16:])
    trainer.train()
    assert trainer.radius_lr == pytest.approx(math.log(10.0) / 2)
    assert abs(math.log(trainer.rho / RHO)) == pytest.approx(math.log(10.0) / 2, rel=1e-4)  # Adam eps aside
