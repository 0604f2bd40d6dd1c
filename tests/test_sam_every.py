"""Cheaper SAM (``sam_every``, ``sam_reuse``): the pure LookSAM functions against hand values, the trainer's steps
against hand references on least squares (float64, SGD), the cost in passes, and LETS on top: the logged
hypergradient rebuilt by hand, and the claim that LookSAM's reused direction does not depend on rho on a quadratic
(so the shipped look-ahead, which sums the perturbed steps only, neglects nothing more than before)."""

import pytest
import torch
from test_hypergradient import RHO, flat, step_derivative
from toy import LR, LinearRegressor, loss_fn, regression_data, sam_sgd_step

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.perturbation import looksam_gradient_, orthogonal_part_, sam_direction


def test_orthogonal_part_is_the_sam_gradient_less_its_projection_on_the_plain_one():
    g = [torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)]
    G = [torch.tensor([2.0, 3.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)]
    # G.g = 2 + 2 = 4, g.g = 5: g_v = G - 0.8 g = [1.2, 3.0], [-0.6]
    g_v = orthogonal_part_(g, G)
    assert g_v is g
    torch.testing.assert_close(flat(g_v), torch.tensor([1.2, 3.0, -0.6], dtype=torch.float64))
    assert (flat(g_v) @ torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)).item() == pytest.approx(
        0.0, abs=1e-11
    )  # _TINY in g.g


def test_looksam_gradient_adds_the_reused_direction_at_the_current_gradients_scale():
    grads = [torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)]  # ||g|| = 5
    g_v = [torch.tensor([0.0], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)]  # ||g_v|| = 0.2
    looksam_gradient_(grads, g_v, alpha=0.5)  # g + 0.5 * 5 / 0.2 * g_v = [3, 4 + 2.5]
    torch.testing.assert_close(flat(grads), torch.tensor([3.0, 6.5], dtype=torch.float64))


def sgd_run(base_args, steps, **kw):
    """SGD on least squares, one batch of 4 per step; returns the model and what it saw."""
    data = regression_data(32)
    model = LinearRegressor()
    theta0 = (model.linear.weight.detach().clone(), model.linear.bias.detach().clone())
    settings = dict(
        base_args, optim="sgd", learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0,
        sam_rho=RHO, max_steps=steps, per_device_train_batch_size=4,
    )  # fmt: skip
    args = LETSTrainingArguments(**{**settings, **kw})
    trainer = LETSTrainer(model=model, args=args, train_dataset=data[:24], lets_dataset=data[24:])
    trainer.train()
    label = {tuple(d["x"].tolist()): d["labels"] for d in data}
    batch = lambda xs: (xs, torch.stack([label[tuple(r.tolist())] for r in xs]))  # noqa: E731
    return trainer, model, [batch(x) for x in model.seen], theta0


def grad(w, b, batch):
    w0, b0 = w.clone().requires_grad_(), b.clone().requires_grad_()
    return torch.autograd.grad(loss_fn(w0, b0, *batch), [w0, b0])


def mean_grad(w, b, micro):
    """The step's gradient: the mean over its micro-batches (of equal size: the gradient of their union)."""
    grads = [grad(w, b, m) for m in micro]
    return [sum(g[i] for g in grads) / len(micro) for i in range(2)]


def plain_step(w, b, batch):
    g = mean_grad(w, b, batch if isinstance(batch, list) else [batch])
    return w - LR * g[0], b - LR * g[1]


def looksam_parts(w, b, batch, rho):
    """(the SAM step, g_v) of a perturbed step, by hand, per micro-batch: SAM's G_i at theta + rho d_i, then
    g_v = G - (G.g / g.g) g from the step's means g and G."""
    micro = batch if isinstance(batch, list) else [batch]
    g, G = mean_grad(w, b, micro), [torch.zeros_like(w), torch.zeros_like(b)]
    for m in micro:
        d = sam_direction([w, b], list(grad(w, b, m)))
        G_m = grad(w + rho * d[0], b + rho * d[1], m)
        G = [G[i] + G_m[i] / len(micro) for i in range(2)]
    coef = (flat(G) @ flat(g)) / (flat(g) @ flat(g))
    return (w - LR * G[0], b - LR * G[1]), [G[i] - coef * g[i] for i in range(2)]


def looksam_step(w, b, batch, g_v, alpha):
    g = mean_grad(w, b, batch if isinstance(batch, list) else [batch])
    scale = alpha * flat(g).norm() / flat(g_v).norm()
    return w - LR * (g[0] + scale * g_v[0]), b - LR * (g[1] + scale * g_v[1])


@pytest.mark.parametrize("reuse", ["none", "looksam"])
def test_every_kth_step_is_perturbed_and_the_others_are_the_stock_step(base_args, reuse):
    """sam_every 3, 7 steps: SAM at steps 0, 3, 6 (two passes each), plain or LookSAM steps between (one pass)."""
    trainer, model, seen, (w, b) = sgd_run(base_args, 7, lets=False, sam_every=3, sam_reuse=reuse, looksam_alpha=0.6)
    assert len(seen) == 3 * 2 + 4  # the cost: 10 passes where full SAM takes 14
    batches = [seen[i] for i in (0, 2, 3, 4, 6, 7, 8)]  # the ascent's batch on perturbed steps
    g_v = None
    for step, batch in enumerate(batches):
        if step % 3 == 0:
            sam = sam_sgd_step(w, b, [batch], RHO, "sam")
            (w, b), g_v = looksam_parts(w, b, batch, RHO)
            torch.testing.assert_close((w, b), sam, rtol=1e-14, atol=1e-14)  # the hand LookSAM step is SAM's
        elif reuse == "looksam":
            w, b = looksam_step(w, b, batch, g_v, 0.6)
        else:
            w, b = plain_step(w, b, batch)
    tol = 1e-10  # float64 rounding, amplified by ||g|| / ||g_v|| (g_v is O(rho))
    torch.testing.assert_close(model.linear.weight.detach(), w, rtol=tol, atol=tol)
    torch.testing.assert_close(model.linear.bias.detach(), b, rtol=tol, atol=tol)


def test_under_accumulation_g_v_comes_from_the_steps_means_and_the_plain_step_is_the_stock_one(base_args):
    """2 x 4 with accumulation, sam_every 2, LookSAM: SAM per micro-batch (as every SAM step here), g_v from the
    step's mean plain and SAM gradients, the plain step on the mean gradient, the LookSAM term added once."""
    _, model, seen, (w, b) = sgd_run(
        base_args, 4, lets=False, sam_every=2, sam_reuse="looksam", gradient_accumulation_steps=2
    )
    assert len(seen) == 2 * 4 + 2 * 2  # two perturbed steps of 2 micro-batches x 2 passes, two plain of 2 x 1
    steps = [[seen[0], seen[2]], [seen[4], seen[5]], [seen[6], seen[8]], [seen[10], seen[11]]]
    for k, micro in enumerate(steps):
        if k % 2 == 0:
            (w, b), g_v = looksam_parts(w, b, micro, RHO)
        else:
            w, b = looksam_step(w, b, micro, g_v, 0.7)  # the default looksam_alpha
    torch.testing.assert_close(model.linear.weight.detach(), w, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.linear.bias.detach(), b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("objective", ["heldout", "gap"])
@pytest.mark.parametrize("reuse", ["none", "looksam"])
def test_lets_on_top_sums_the_perturbed_steps_and_reads_the_plain_steps_own_gradient(base_args, reuse, objective):
    """sam_every 2, lets_interval 4, 6 steps: perturbed steps 0, 2, 4 feed the look-ahead; hyper-steps at steps 1 and
    5, both plain. The second one's Z is w_2 + w_4 (the plain steps add nothing: their update does not depend on rho,
    and LookSAM's reused direction does not either on a quadratic, see the test below); its g'^T w and l(theta; B')
    come from step 5's own plain pass. Rebuilt by hand from the batches the run used."""
    trainer, model, seen, theta0 = sgd_run(
        base_args, 6, sam_every=2, sam_reuse=reuse, looksam_alpha=0.6, lets_interval=4, lets_horizon="interval",
        lets_objective=objective, lets_lr=0.05, lets_batch_size=8, lets_guard_tolerance=None,
    )  # fmt: skip
    assert [h["step"] for h in trainer.lets_history] == [2, 6]
    # passes: step 0 (a, d) | 1 (held-out, p) | 2 (a, d) | 3 (p) | 4 (a, d) | 5 (held-out, p)
    assert len(seen) == 11
    steps = [seen[i] for i in (0, 3, 4, 6, 7, 10)]
    heldout = seen[9]
    rhos = [RHO, RHO] + [trainer.lets_history[0]["rho"]] * 4
    thetas, g_v = [theta0], None
    for k, batch in enumerate(steps):
        if k % 2 == 0:
            step, g_v = looksam_parts(*thetas[-1], batch, rhos[k])
        elif reuse == "looksam":
            step = looksam_step(*thetas[-1], batch, g_v, 0.6)
        else:
            step = plain_step(*thetas[-1], batch)
        thetas.append(step)
    torch.testing.assert_close(model.linear.weight.detach(), thetas[-1][0], rtol=1e-10, atol=1e-10)
    z = flat(step_derivative(thetas[2], steps[2], rhos[2])) + flat(step_derivative(thetas[4], steps[4], rhos[4]))
    theta = [t.clone().requires_grad_() for t in thetas[5]]
    l_v, l_b = loss_fn(*theta, *heldout), loss_fn(*theta, *steps[5])
    h_v = flat(torch.autograd.grad(l_v, theta, retain_graph=True))
    g_b = flat(torch.autograd.grad(l_b, theta))
    expected = (h_v @ z).item() if objective == "heldout" else ((l_v - l_b) * ((h_v - g_b) @ z)).item()
    assert abs(expected) > 1e-8
    assert trainer.lets_history[1]["hypergradient"] == pytest.approx(expected, rel=1e-7)
    assert trainer.lets_history[1]["train_loss"] == pytest.approx(l_b.item(), rel=1e-12)


def test_looksams_reused_direction_does_not_depend_on_rho_on_a_quadratic():
    """g_v = G(rho) - proj_g G(rho) with G(rho) = g + rho H d exactly on least squares, so g_v = rho P H d and its
    direction, all a LookSAM step reuses, is the same for every rho: d(g_v / ||g_v||)/d rho = 0 (a central
    difference, float64), while the SAM gradient itself moves with rho. On a general loss the direction turns at
    O(third derivatives): that, and the plain steps' Jacobians, are what the shipped look-ahead neglects."""
    data = regression_data(8, seed=5)
    batch = (torch.stack([d["x"] for d in data]), torch.stack([d["labels"] for d in data]))
    w, b = torch.randn(1, 3, dtype=torch.float64), torch.randn(1, dtype=torch.float64)

    def unit_g_v(rho):
        _, g_v = looksam_parts(w, b, batch, rho)
        return flat(g_v) / flat(g_v).norm()

    def sam_grad(rho):
        return (flat([w, b]) - flat(looksam_parts(w, b, batch, rho)[0])) / LR

    h = 1e-3
    assert ((unit_g_v(RHO + h) - unit_g_v(RHO - h)) / (2 * h)).norm().item() < 1e-9
    assert ((sam_grad(RHO + h) - sam_grad(RHO - h)) / (2 * h)).norm().item() > 1e-2
