"""The exactness check: on least squares in float64 with plain SGD and no clipping, the logged hypergradient
equals a central finite difference of F(rho); the pure pieces (u estimators, w, radius step) against hand values."""

import importlib
import math
import statistics

import pytest
import torch
from toy import (
    LR,
    LinearRegressor,
    lookahead_finite_difference,
    loss_fn,
    regression_data,
    rule_data,
    sam_sgd_step,
    tiny_bert,
    token_data,
)

from lets_hf import LETSTrainer, LETSTrainingArguments, RadiusState, radius_step
from lets_hf.hypergradient import (
    clip_coefficient,
    fisher_curvature,
    hessian_vector_product,
    lookahead_add_,
    optimizer_derivative_,
    secant_curvature_,
)
from lets_hf.radius import (
    CLIP_WINDOW,
    MIN_HYPER_STEPS,
    LossGuard,
    clip_to_recent,
    constant_predictor_loss,
    guarded_log_rho,
    guarded_radius_step,
    radius_lr,
    scheduled_lr,
)

RHO = 0.05
RHO_DEFAULT = LETSTrainingArguments.sam_rho  # 0.01


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
    """Central difference of F(rho) on the batches the run used (`lookahead_finite_difference`)."""
    step = lambda micro, rho: sam_sgd_step(*theta0, micro, rho, variant)  # noqa: E731
    return lookahead_finite_difference(model, data, n_accum, objective, step, RHO, h)


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
        RadiusState(math.log(RHO)), logged, lr=0.01, optimizer=trainer.args.lets_optimizer, rho_min=RHO / 100,
        rho_max=10 * RHO, clip=trainer.args.lets_clip,
    )  # fmt: skip
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
    # fp16: the descent gradients arrive loss-scaled (here by 1024), the ascent ones unscaled
    assert torch.allclose(secant_curvature_([g.clone()], [1024 * gt], 0.3, descent_scale=1 / 1024)[0], hess @ d)
    assert torch.allclose(fisher_curvature([g], [d])[0], g * g * d)


def test_adam_preconditioner_matches_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.8, 0.9), eps=1e-8)
    for g in ([0.5, -1.0], [0.2, 0.3]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    v = opt.state[p]["exp_avg_sq"]
    u = torch.tensor([1.0, 1.0], dtype=torch.float64)
    lrs = {id(opt.param_groups[0]): 0.1}
    w = optimizer_derivative_([u.clone()], [p], opt, lrs, 0.5)[0]
    expected = -0.1 * 0.5 * (1 - 0.8) / (1 - 0.8**2) / ((v / (1 - 0.9**2)).sqrt() + 1e-8) * u
    assert torch.allclose(w, expected, rtol=1e-12)
    # the fused form adds scale * w into Z, with c a device tensor (folded into u) or a float
    z = torch.tensor([3.0, -1.0], dtype=torch.float64)
    for c in (0.5, torch.tensor(0.5, dtype=torch.float64)):
        fused = optimizer_derivative_([u.clone()], [p], opt, lrs, c, scale=2.0, into=[z.clone()])[0]
        assert torch.allclose(fused, z + 2.0 * expected, rtol=1e-12)
    sgd = torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    lrs = {id(sgd.param_groups[0]): 0.1}
    assert torch.allclose(optimizer_derivative_([u.clone()], [p], sgd, lrs, 0.5)[0], -0.1 * 0.5 * 1.9 * u)
    fused = optimizer_derivative_([u.clone()], [p], sgd, lrs, torch.tensor(0.5), scale=2.0, into=[z.clone()])[0]
    assert torch.allclose(fused, z - 2.0 * 0.1 * 0.5 * 1.9 * u)


def test_adams_first_step_adds_nothing_to_the_look_ahead_as_its_finite_difference_says():
    """Adam's first update is ``lr G / (|G| + eps)``, sign descent: flat in rho wherever the gradient is resolved.
    ``P = 1 / |G|`` (v's dependence ignored) made ``w`` largest where ``|G|`` is smallest, and under bf16 those
    entries are rounding noise: the first hyper-step's sign flipped (tests/test_mixed_precision.py)."""
    g0 = torch.tensor([0.5, -2e-2, 3e-3], dtype=torch.float64)  # resolved gradients (>> sqrt(eps) = 1e-4)
    u = torch.tensor([1.0, -3.0, 0.7], dtype=torch.float64)

    def first_step(rho):
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.3], dtype=torch.float64))
        opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        p.grad = g0 + rho * u
        opt.step()
        return p, opt

    h = 1e-9
    finite_difference = (first_step(h)[0] - first_step(-h)[0]).detach() / (2 * h)
    assert finite_difference.abs().max() < 1e-3  # the ignored term cancels P u to O(eps / G^2)
    assert (0.1 * u / g0.abs()).abs().min() >= 0.2  # what P = 1 / |G| said: derivatives of 0.2 to 23
    p, opt = first_step(0.0)
    lrs = {id(opt.param_groups[0]): 0.1}
    assert torch.equal(optimizer_derivative_([u.clone()], [p], opt, lrs, 1.0)[0], torch.zeros(3, dtype=torch.float64))
    z = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    assert torch.equal(optimizer_derivative_([u.clone()], [p], opt, lrs, 1.0, into=[z.clone()])[0], z)


def test_adam_derivative_by_slices_equals_the_whole_tensor_computation(monkeypatch):
    """The Adam branch works slice by slice (a small temporary); slices of 3 over tensors of 10 and 7 elements, and
    a non-contiguous tensor (taken whole), give what one pass over each whole tensor gives."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(2, 5, dtype=torch.float64)), torch.nn.Parameter(torch.randn(7).double())]
    opt = torch.optim.AdamW(params, lr=0.1)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    lrs = {id(opt.param_groups[0]): 0.1}
    u = [torch.randn_like(p) for p in params]
    z = [torch.randn_like(p) for p in params]
    whole = optimizer_derivative_([t.clone() for t in u], params, opt, lrs, 0.5)
    whole_into = optimizer_derivative_([t.clone() for t in u], params, opt, lrs, 0.5, into=[t.clone() for t in z])
    module = importlib.import_module("lets_hf.hypergradient")  # lets_hf.hypergradient is also a function
    monkeypatch.setattr(module, "SLICE", 3)
    sliced = optimizer_derivative_([t.clone() for t in u], params, opt, lrs, 0.5)
    sliced_into = optimizer_derivative_([t.clone() for t in u], params, opt, lrs, 0.5, into=[t.clone() for t in z])
    transposed = [u[0].clone().t().contiguous().t(), u[1].clone()]  # same values, column-major storage
    assert not transposed[0].is_contiguous()
    strided = optimizer_derivative_(transposed, params, opt, lrs, 0.5)
    for a, b, c, d, e in zip(whole, sliced, whole_into, sliced_into, strided):
        assert torch.allclose(a, b, rtol=1e-14) and torch.allclose(c, d, rtol=1e-14) and torch.allclose(a, e)
    assert not torch.allclose(whole[0], u[0])  # it did something


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


def test_signum_moves_lr_per_step_on_a_weak_consistent_signal_where_adam_crawls():
    """The full-data hypergradient's per-step mean/sd is 0.15-0.56 (results-log.md section 7): Adam then moves log rho
    by about lr * mean/sd per hyper-step, signum by lr whenever the momentum's sign holds."""
    noisy = [3.0, -2.0] * 10  # mean 0.5, sd 2.5: "smaller" on average, every other value says "larger"
    runs = {}
    for optimizer in ("adam", "signum"):
        state = RadiusState(math.log(0.05))
        for g in noisy:
            state = radius_step(state, g, lr=0.1, optimizer=optimizer, rho_min=1e-6, rho_max=1.0)
        runs[optimizer] = math.log(0.05) - state.log_rho
    assert runs["signum"] == pytest.approx(20 * 0.1)  # m = 0.9 m + 0.1 g stays positive throughout
    assert 0 < runs["adam"] < 0.5 * runs["signum"]
    state = RadiusState(math.log(0.05))
    for g in (1.0, 1.0, 1.0, -20.0):  # one large opposite value outweighs the momentum of three: up by lr
        before = state.log_rho
        state = radius_step(state, g, lr=0.1, optimizer="signum", rho_min=1e-6, rho_max=1.0)
    assert state.log_rho - before == pytest.approx(0.1) and state.log_rho == pytest.approx(math.log(0.05) - 0.2)


def test_clip_to_recent_bounds_a_value_by_a_multiple_of_the_recent_median_size():
    recent = [1.0, 2.0, 3.0, 10.0]  # median 2.5: the outlier 10 does not move the scale
    assert clip_to_recent(100.0, recent, 3.0) == pytest.approx(7.5)
    assert clip_to_recent(-100.0, recent, 3.0) == pytest.approx(-7.5)
    assert clip_to_recent(5.0, recent, 3.0) == 5.0  # inside the bound: untouched
    assert clip_to_recent(100.0, [], 3.0) == 100.0  # nothing to scale by yet
    assert clip_to_recent(100.0, recent, 0.0) == 100.0  # lets_clip off


def test_radius_step_keeps_the_latest_raw_sizes_and_clips_before_the_optimizer():
    state = RadiusState(math.log(0.1))
    for g in range(1, CLIP_WINDOW + 3):  # dF/ds = rho * dF/drho = g
        state = radius_step(state, float(g) / state.rho, lr=0.1, optimizer="sgd", rho_min=1e-9, rho_max=1.0, clip=1.0)
    assert state.recent == pytest.approx(list(range(3, CLIP_WINDOW + 3)))  # the latest raw sizes, not clipped
    before = state.log_rho  # sgd moves log rho by lr * (the clipped dF/ds): the bound is 1 x median(recent)
    after = radius_step(state, 1e6 / state.rho, lr=0.1, optimizer="sgd", rho_min=1e-9, rho_max=1.0, clip=1.0)
    assert before - after.log_rho == pytest.approx(0.1 * statistics.median(state.recent))


def test_a_zero_hypergradient_does_not_enter_the_clip_scale():
    """The first hyper-step of a run with warm-up sees w = 0 (step 0's learning rate is 0): dF/ds = 0 exactly. Were it
    kept, the median of [0] would clip the next value to 0 and cost the run a hyper-step (as it did the first
    full-data clip run, results-log.md section 7)."""
    state = radius_step(RadiusState(math.log(0.1)), 0.0, lr=0.3, optimizer="signum", rho_min=1e-3, rho_max=1.0, clip=3)
    assert state.recent == [] and state.log_rho == pytest.approx(math.log(0.1))
    state = radius_step(state, -0.02, lr=0.3, optimizer="signum", rho_min=1e-3, rho_max=1.0, clip=3)
    assert state.log_rho == pytest.approx(math.log(0.1) + 0.3)  # moved: nothing to clip against yet
    assert state.recent == pytest.approx([0.002])


def test_clipping_keeps_one_heavy_tailed_value_from_turning_signum():
    """Full STS-B seed 2 (results-log.md section 7): after a run of ordinary values pointing down, two values 135x the
    median turned signum's momentum and rho climbed for 24 hyper-steps. Clipped at 3x the median they weigh as six
    ordinary votes against the momentum of twenty, and rho keeps falling."""
    values = [1.0] * 20 + [-135.0, -120.0] + [1.0] * 3
    final = {}
    for clip in (0.0, 3.0):
        state, path = RadiusState(math.log(0.1)), []
        for g in values:
            state = radius_step(state, g / state.rho, lr=0.1, optimizer="signum", rho_min=1e-6, rho_max=1.0, clip=clip)
            path.append(state.log_rho)
        final[clip] = path
    assert final[0.0][21] > final[0.0][19]  # unclipped: the pair sends rho up
    assert all(b < a for a, b in zip(final[3.0], final[3.0][1:]))  # clipped: down by lr at every hyper-step
    assert final[3.0][-1] == pytest.approx(math.log(0.1) - 0.1 * len(values))


def test_loss_guard_trips_on_a_rising_loss():
    guard = LossGuard(tolerance=0.2, beta=0.0)
    assert [guard.update(x) for x in [1.0, 0.8, 0.7, 0.75]] == [None] * 4
    assert guard.update(0.9) == "risen" and guard.tripped and guard.trips == 1
    assert guard.update(0.95) is None and guard.tripped  # still risen: one trip, not two
    assert guard.update(0.72) is None and not guard.tripped  # back within 20% of the best: released


def test_guarded_radius_step_cuts_on_a_trip_and_then_only_lets_rho_shrink():
    step = dict(lr=0.5, optimizer="signum", clip=0.0, rho_min=1e-4, rho_max=1.0)
    guard, state = LossGuard(tolerance=0.2, beta=0.0), RadiusState(math.log(0.2))
    for loss in (1.0, 0.8):  # learning: the radius follows the hypergradient, up here
        state, message = guarded_radius_step(state, guard, -1.0, loss, sam_rho=0.1, **step)
        assert message is None
    assert state.rho == pytest.approx(0.2 * math.exp(1.0))
    state, message = guarded_radius_step(state, guard, -1.0, 1.1, sam_rho=0.1, **step)  # risen: back to sam_rho
    assert "rose more than 20%" in message and state.rho == pytest.approx(0.1)  # and the step up is refused
    state, _ = guarded_radius_step(state, guard, 1.0, 1.1, sam_rho=0.1, **step)  # still tripped: down is allowed
    assert state.rho == pytest.approx(0.1 * math.exp(-0.5))
    free, message = guarded_radius_step(RadiusState(math.log(0.2)), None, -1.0, 9.0, sam_rho=0.1, **step)
    assert message is None and free.rho == pytest.approx(0.2 * math.exp(0.5))  # no guard: radius_step alone


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
    # A short run counts as MIN_HYPER_STEPS hyper-steps: 3 steps at interval 5, 6 at 2, 45 at 5 alike.
    for max_steps, interval in [(3, 5), (6, 2), (45, 5)]:
        assert radius_lr(100.0, max_steps, interval) == pytest.approx(math.log(100.0) / MIN_HYPER_STEPS)


def test_the_linear_schedule_front_loads_the_same_reach_and_ends_at_zero():
    H = 31
    rates = [scheduled_lr(0.3, k, H, "linear") for k in range(H)]
    assert sum(rates) == pytest.approx(0.3 * H)  # the constant schedule's reach
    assert rates[0] == pytest.approx(0.3 * 2 * H / (H + 1)) and rates[-1] == pytest.approx(0.3 * 2 / (H + 1))
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert sum(rates[: H // 3]) > 0.5 * sum(rates)  # more than half the reach in the first third
    assert scheduled_lr(0.3, H, H, "linear") == 0.0 and scheduled_lr(0.3, H + 5, H, "linear") == 0.0
    assert scheduled_lr(0.3, 7, H, "constant") == 0.3
    with pytest.raises(ValueError, match="Unknown lets_lr_schedule 'cosine'"):
        scheduled_lr(0.3, 0, H, "cosine")


def test_the_trainer_steps_the_radius_by_the_scheduled_rate(base_args):
    """signum moves log rho by exactly its rate: with lets_lr_schedule linear, interval 1 and 13 steps (H = 13),
    hyper-step k (on step 1 + k, the first one fed by step 0) moves by 0.1 * 2 (13 - k) / 14."""
    args = LETSTrainingArguments(
        **base_args, max_steps=13, per_device_train_batch_size=4, learning_rate=1e-2, lets_interval=1,
        lets_lr=0.1, lets_optimizer="signum", lets_lr_schedule="linear", lets_rho_min=1e-9, lets_rho_max=10.0,
    )  # fmt: skip
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(64))
    trainer.train()
    logs = [math.log(RHO_DEFAULT)] + [math.log(h["rho"]) for h in trainer.lets_history]
    moves = [abs(b - a) for a, b in zip(logs, logs[1:])]
    expected = [0.1 * 2 * (13 - k) / 14 for k in range(len(moves))]
    assert len(moves) == 12
    assert [m for m in moves if m > 0] == pytest.approx([e for m, e in zip(moves, expected) if m > 0], rel=1e-9)
    assert sum(m > 0 for m in moves) >= 10  # signum stands still only where its momentum is exactly 0


def test_default_radius_lr_is_tied_to_the_run(base_args):
    """lets_lr=None: the first Adam step moves log rho by exactly ln(travel) / hyper-steps (here 40 steps, 40)."""
    data = regression_data(24)
    args = LETSTrainingArguments(
        **base_args, optim="sgd", learning_rate=LR, max_steps=40, per_device_train_batch_size=16, lets_batch_size=8,
        sam_rho=RHO, lets_interval=1, lets_travel=10.0,
    )  # fmt: skip
    trainer = LETSTrainer(model=LinearRegressor(), args=args, train_dataset=data[:16], lets_dataset=data[16:])
    trainer.train()
    assert trainer.radius_lr == pytest.approx(math.log(10.0) / 40)
    first = trainer.lets_history[0]["rho"]
    assert abs(math.log(first / RHO)) == pytest.approx(math.log(10.0) / 40, rel=1e-4)  # Adam eps aside


@pytest.mark.parametrize("hvp", ["secant", "fisher"])
def test_a_short_run_cannot_send_rho_to_a_bound(base_args, hvp):
    """A 7-step smoke test at interval 5 plans one hyper-step (and takes two: steps 1 and 6; the first looks ahead
    over Adam's first step only, which adds nothing). Without the floor under H the default lets_lr was ln(100) / 1,
    and Adam's first step (of size lets_lr whatever the hypergradient) sent ASAM's rho to a bound (0.1 -> 1.0; with
    lets_hvp="exact", 0.01 -> 1e-4). With it rho moves at most lets_travel^(1/10) per hyper-step: 2.5-fold at the
    default 1e4 (signum's step is exactly that), so reaching a bound (10x up, 100x down) takes 3 or 5 hyper-steps
    that agree."""
    model = tiny_bert()
    args = LETSTrainingArguments(
        **base_args, sam_variant="asam", sam_rho=0.1, lets_hvp=hvp, max_steps=7, lets_interval=5,
        per_device_train_batch_size=8, learning_rate=5e-3,
    )  # fmt: skip
    trainer = LETSTrainer(model=model, args=args, train_dataset=rule_data(96))
    trainer.train()
    first, second = (h["hypergradient"] for h in trainer.lets_history)
    assert first == 0 and second != 0
    moved = abs(math.log(trainer.rho / 0.1))
    assert moved == pytest.approx(math.log(args.lets_travel) / MIN_HYPER_STEPS, rel=1e-3)  # one full step, no more
    rho_min, rho_max = args.rho_bounds
    assert 0.1 * math.exp(2 * moved) < rho_max and 0.1 * math.exp(-4 * moved) > rho_min
    unfloored = radius_lr(args.lets_travel, 7, 5) * MIN_HYPER_STEPS  # what H = max(1, 7 // 5) = 1 gives
    assert unfloored == pytest.approx(math.log(args.lets_travel)) and math.exp(unfloored) * 0.1 >= rho_max


def test_exact_hvp_through_an_attention_kernel_without_double_backward_says_what_to_do(base_args):
    """BERT's default SDPA attention on CPU has no double backward: a clear error, not torch's."""
    args = LETSTrainingArguments(**base_args, lets_hvp="exact", max_steps=2, lets_interval=1)
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=rule_data(32))
    with pytest.raises(RuntimeError, match="attn_implementation='eager'.*lets_hvp='secant'"):
        trainer.train()


# ---- the interval look-ahead -------------------------------------------------------------------------------------
def step_derivative(theta, batch, rho, h=1e-3):
    """``w = d theta' / d rho`` at fixed theta for one SAM-SGD step: the step is linear in rho on least squares (the
    direction does not depend on rho), so the central difference is exact up to rounding."""
    plus, minus = sam_sgd_step(*theta, [batch], rho + h, "sam"), sam_sgd_step(*theta, [batch], rho - h, "sam")
    return [(p - m) / (2 * h) for p, m in zip(plus, minus)]


def step_jacobian(theta, batch, rho, h=1e-6):
    """``J = d theta' / d theta`` of one SAM-SGD step (4 x 4 on the 3-weight regressor), by central differences."""
    flat = torch.cat([t.reshape(-1) for t in theta])

    def step(x):
        return torch.cat([t.reshape(-1) for t in sam_sgd_step(x[:3].reshape(1, 3), x[3:], [batch], rho, "sam")])

    columns = [(step(flat + h * e) - step(flat - h * e)) / (2 * h) for e in torch.eye(4, dtype=torch.float64)]
    return torch.stack(columns, dim=1)


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def test_interval_lookahead_is_forward_mode_with_identity_jacobians_and_its_error_is_bounded():
    """K = 6 SAM-SGD steps sharing one radius, F = l(theta_K; V), float64. The full forward-mode recursion
    Z <- J Z + w equals a finite difference of F; the shipped sum Z <- Z + w (`lookahead_add_`) differs from it by no
    more than the stated bound sum_k (prod_{j>k} (1 + ||J_j - I||) - 1) ||w_k||, and the difference is real."""
    data = regression_data(40, seed=3)
    xs = torch.stack([d["x"] for d in data])
    ys = torch.stack([d["labels"] for d in data])
    batches = [(xs[4 * k : 4 * k + 4], ys[4 * k : 4 * k + 4]) for k in range(6)]
    xv, yv = xs[24:], ys[24:]
    model = LinearRegressor(seed=1)
    theta0 = (model.linear.weight.detach().clone(), model.linear.bias.detach().clone())
    rho = 0.05

    def trajectory(r):
        thetas = [theta0]
        for batch in batches:
            thetas.append(sam_sgd_step(*thetas[-1], [batch], r, "sam"))
        return thetas

    def F(r):
        return loss_fn(*trajectory(r)[-1], xv, yv)

    h = 1e-5
    reference = ((F(rho + h) - F(rho - h)) / (2 * h)).item()
    thetas = trajectory(rho)
    final = [t.clone().requires_grad_() for t in thetas[-1]]
    h_v = flat(torch.autograd.grad(loss_fn(*final, xv, yv), final))

    ws = [step_derivative(theta, batch, rho) for theta, batch in zip(thetas, batches)]
    jacobians = [step_jacobian(theta, batch, rho) for theta, batch in zip(thetas, batches)]
    z_full = torch.zeros(4, dtype=torch.float64)
    for w, jac in zip(ws, jacobians):
        z_full = jac @ z_full + flat(w)
    assert (h_v @ z_full).item() == pytest.approx(reference, rel=1e-6)  # the exact recursion: the true dF/drho

    z = None
    params = [torch.zeros_like(t, requires_grad=True) for t in ws[0]]
    sgd = torch.optim.SGD(params, lr=1.0)  # P = 1: w = -lr c u, so u = -w at lr 1, c 1
    for w in ws:
        z = lookahead_add_(z, [-t.clone() for t in w], params, sgd, {id(sgd.param_groups[0]): 1.0}, 1.0)
    shipped = (h_v @ flat(z)).item()
    sizes = [torch.linalg.matrix_norm(j - torch.eye(4, dtype=torch.float64), ord=2).item() for j in jacobians]
    bound = sum((math.prod(1 + a for a in sizes[k + 1 :]) - 1) * flat(w).norm().item() for k, w in enumerate(ws))
    error = abs(shipped - reference)
    assert 1e-9 < error <= h_v.norm().item() * bound  # a truncation, and within its bound
    assert shipped * reference > 0 and error < 0.5 * abs(reference)  # the same direction, the same scale
    one_step = (h_v @ flat(ws[-1])).item()  # the one-step look-ahead sees a sixth of the radius's effect
    assert abs(one_step - reference) > abs(shipped - reference)


def run_interval(base_args, horizon, objective):
    """SGD on least squares, lets_interval 3, 5 steps: hyper-steps at steps 2 and 5; returns the trainer and model."""
    data = regression_data(24)
    model = LinearRegressor()
    theta0 = (model.linear.weight.detach().clone(), model.linear.bias.detach().clone())
    args = LETSTrainingArguments(
        **base_args, optim="sgd", learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0,
        sam_rho=RHO, lets_interval=3, lets_horizon=horizon, lets_objective=objective, lets_lr=0.05, max_steps=5,
        lets_trace_steps=4,
        per_device_train_batch_size=4, lets_batch_size=8,
    )  # fmt: skip
    trainer = LETSTrainer(model=model, args=args, train_dataset=data[:16], lets_dataset=data[16:])
    trainer.train()
    return trainer, model, data, theta0


@pytest.mark.parametrize("objective", ["heldout", "gap"])
@pytest.mark.parametrize("horizon", ["interval", "step", "trace"])
def test_logged_interval_hypergradient_is_the_sum_over_the_window(base_args, horizon, objective):
    """The second hyper-step (step 5) of a run at lets_interval 3: its w sums steps 2-4 ('interval') or is step 4's
    alone ('step'); 'trace' sums rho_k w_k over steps 1-4, fading by 3/4 a step (lets_trace_steps 4), and divides
    by the current rho. Rebuilt by hand from the batches the run used; the first radius step lies between."""
    trainer, model, data, theta0 = run_interval(base_args, horizon, objective)
    assert [h["step"] for h in trainer.lets_history] == [2, 5]
    label = {tuple(d["x"].tolist()): d["labels"] for d in data}
    batch = lambda xs: (xs, torch.stack([label[tuple(r.tolist())] for r in xs]))  # noqa: E731
    seen = model.seen  # per step (ascent, descent); a held-out pass first on steps 2 and 5 (1-based)
    steps = [batch(seen[i]) for i in (0, 3, 5, 7, 10)]
    heldout = batch(seen[9])
    rhos = [RHO, RHO] + [trainer.lets_history[0]["rho"]] * 3  # the radius each step used
    thetas = [theta0]
    for b, r in zip(steps, rhos):
        thetas.append(sam_sgd_step(*thetas[-1], [b], r, "sam"))
    window = {"interval": range(1, 4), "step": range(3, 4), "trace": range(4)}[horizon]  # 0-based steps in Z
    weight = {k: 0.75 ** (3 - k) * rhos[k] / rhos[4] if horizon == "trace" else 1.0 for k in window}
    ws = {k: step_derivative(thetas[k], steps[k], rhos[k]) for k in window}
    z = flat([sum(weight[k] * ws[k][i] for k in window) for i in range(2)])
    theta = [t.clone().requires_grad_() for t in thetas[4]]
    l_v, l_b = loss_fn(*theta, *heldout), loss_fn(*theta, *steps[4])
    h_v = flat(torch.autograd.grad(l_v, theta, retain_graph=True))
    g_b = flat(torch.autograd.grad(l_b, theta))
    expected = (h_v @ z).item() if objective == "heldout" else ((l_v - l_b) * ((h_v - g_b) @ z)).item()
    assert abs(expected) > 1e-8
    assert trainer.lets_history[1]["hypergradient"] == pytest.approx(expected, rel=1e-7)


def test_clip_coefficient_is_the_trainers_gradient_clipping_factor():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]  # ||G|| = 5
    assert clip_coefficient(grads, 0.0) == 1.0 and clip_coefficient(grads, None) == 1.0
    assert float(clip_coefficient(grads, 1.0)) == pytest.approx(1.0 / (5.0 + 1e-6))
    assert float(clip_coefficient(grads, 10.0)) == 1.0  # never above 1
    # loss-scaled gradients (fp16): 1024 G with inv_scale 1/1024 clips like G
    scaled = [g * 1024 for g in grads]
    assert float(clip_coefficient(scaled, 1.0, 1 / 1024)) == pytest.approx(float(clip_coefficient(grads, 1.0)))
