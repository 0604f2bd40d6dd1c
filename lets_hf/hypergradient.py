"""The LETS radius hypergradient and the radius optimizer, as pure functions (shared LETS.md).

One optimizer step ``t`` with radius ``rho``: ascent gradient ``g``, direction ``d``, descent gradient
``gt = grad l(theta + rho d)``, update ``theta' = Opt(theta, gt)``. The upper level is a one-step look-ahead
objective ``F(rho)`` (``lets_objective``), with ``V`` a held-out batch and ``B'`` the next training batch:

    gap      (the paper):  F = 1/2 delta^2,  delta = l(theta'; V) - l(theta'; B'),  dF/drho = delta (h_V - g')^T w
    heldout  (Luketina et al. 2016):  F = l(theta'; V),                            dF/drho = h_V^T w

    w = d theta'/d rho = -lr * c * P * u,   u = d gt / d rho

where ``h_V``/``g'`` are the held-out/training gradients at ``theta'``, ``c`` the gradient-clip coefficient,
``P`` the optimizer's diagonal preconditioner and ``u`` the curvature along ``d``, estimated by one of:

- ``secant``:  ``u = (gt - g) / rho``           (free; exact on quadratics)
- ``fisher``:  ``u = (g * g) * d``              (diagonal empirical Fisher)
- ``exact``:   ``u = H(theta + eps) d``          (double backward; for checking)

Under gradient accumulation each quantity is the mean over micro-batches (``gt`` -> the accumulated ``G``,
``g`` -> ``Gbar``). The radius is optimised on ``s = log rho`` (``dF/ds = rho dF/drho``) and clamped to bounds.

The look-ahead's horizon (``lets_horizon``): ``step`` (default) takes ``w`` of one optimizer step, the one before
the held-out pass (the paper's one-step look-ahead, Baydin et al.'s hypergradient descent); ``interval`` sums it over
the ``lets_interval`` steps since the last hyper-step, ``Z = sum_k w_k`` (`lookahead_add_`): forward-mode
``d theta / d rho`` (Franceschi et al. 2017) with each step's Jacobian ``d theta_{k+1} / d theta_k`` taken as the
identity, and ``h_V^T Z``, ``g'^T Z`` in place of ``h_V^T w``, ``g'^T w``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "HORIZONS",
    "LR_SCHEDULES",
    "CLIP_WINDOW",
    "MIN_HYPER_STEPS",
    "OBJECTIVES",
    "LossGuard",
    "RadiusState",
    "clip_to_recent",
    "clip_coefficient",
    "constant_predictor_loss",
    "fisher_curvature",
    "hessian_vector_product",
    "guarded_radius",
    "guarded_radius_step",
    "hypergradient",
    "lookahead_add_",
    "optimizer_derivative_",
    "radius_lr",
    "scheduled_lr",
    "radius_step",
    "secant_curvature_",
]


# --------------------------------------------------------------------------------------------------------------
# Curvature along the perturbation: u = d gt / d rho
# --------------------------------------------------------------------------------------------------------------
def secant_curvature_(
    mean_ascent_grads: list[Tensor],
    descent_grads: list[Tensor],
    rho: float,
    descent_scale: float = 1.0,
    factor: Tensor | float = 1.0,
) -> list[Tensor]:
    """Overwrite ``Gbar`` with the secant estimate ``u = (G - Gbar) / rho``, times ``factor``, and return it (two
    passes).

    Args:
        mean_ascent_grads: ``Gbar``, the ascent gradients averaged over micro-batches (overwritten).
        descent_grads: the accumulated descent gradients, ``G / descent_scale``: fp16's loss-scaled ``G`` with
            ``descent_scale`` the inverse loss scale, ``G`` itself (scale 1) otherwise. Same shapes.
        rho: the radius the step used (> 0).
        descent_scale: what brings ``descent_grads`` to ``G``'s units.
        factor: a scalar (a float or a 0-dim tensor) multiplied in by the same pass: the trainer folds ``w``'s clip
            coefficient ``c`` in here, a device tensor, which costs neither a pass nor a host sync this way.
    """
    torch._foreach_add_(mean_ascent_grads, descent_grads, alpha=-descent_scale)  # Gbar - G
    torch._foreach_mul_(mean_ascent_grads, factor * (-1.0 / rho))
    return mean_ascent_grads


def fisher_curvature(grads: list[Tensor], directions: list[Tensor]) -> list[Tensor]:
    """Diagonal empirical-Fisher estimate ``u = (g * g) * d`` for one micro-batch."""
    u = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(u, directions)
    return u


def hessian_vector_product(loss: Tensor, params: list[Tensor], vector: list[Tensor]) -> list[Tensor]:
    """``H v`` of ``loss`` w.r.t. ``params`` by double backward (Pearlmutter's trick); exact and costly.

    Parameters that ``loss`` does not depend on get a zero product. A model with an op that has no double backward
    (SDPA/flash attention kernels) gets an error that says what to do.
    """
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None]
    try:
        hv = torch.autograd.grad(
            [grads[i] for i in used], [params[i] for i in used], grad_outputs=[vector[i] for i in used],
            allow_unused=True,
        )  # fmt: skip
    except RuntimeError as err:
        if "derivative for" not in str(err):
            raise
        raise RuntimeError(
            f"lets_hvp='exact' needs a double backward, which this model lacks ({err}). Load the model with "
            "attn_implementation='eager' (SDPA/flash attention kernels have none), or use lets_hvp='secant'."
        ) from None
    products = [torch.zeros_like(p) for p in params]
    for i, h in zip(used, hv):
        if h is not None:
            products[i] = h.detach()
    return products


# --------------------------------------------------------------------------------------------------------------
# Through the optimizer: w = d theta' / d rho = -lr * c * P * u
# --------------------------------------------------------------------------------------------------------------
def optimizer_derivative_(
    u: list[Tensor],
    params: list[Tensor],
    optimizer: torch.optim.Optimizer,
    lrs: dict[int, float],
    clip_coef: Tensor | float,
    *,
    scale: float = 1.0,
    into: list[Tensor] | None = None,
) -> list[Tensor]:
    """Overwrite ``u`` with ``scale * w``, ``w = -lr * c * P u`` the derivative of the optimizer's update w.r.t.
    rho; or, given ``into``, add ``scale * w`` to it (``u`` is then scratch) and return ``into``.

    ``P`` is read from the optimizer's state *after* its step, ignoring the state's own dependence on
    rho: for Adam/AdamW ``P = (1 - b1)/(1 - b1^k) / (sqrt(v_k / (1 - b2^k)) + eps)``, but ``P = 0`` at Adam's first
    step (``k = 1``: sign descent, flat in rho; see the comment in the loop); for SGD ``P = 1`` (``1 + mu``
    with Nesterov momentum ``mu``). Weight decay does not depend on rho and drops out. Other optimizers get
    ``P = 1`` (the caller warns once).

    The cost is the point of the layout: every feeding step runs this (``lets_horizon="interval"``), and on a CPU
    one pass over a parameter-sized list costs ~0.5% of a batch-32 step. With Adam, ``P = s sqrt(b) / (sqrt(v) +
    eps sqrt(b))``, ``s = (1 - b1)/(1 - b1^k)``, ``b = 1 - b2^k``: the scalars (``lr``, ``c``, ``scale``) fold into
    one factor, and ``into += factor * u / (sqrt(v) + eps sqrt(b))`` is one ``addcdiv`` per tensor after the two
    ops that form the denominator, slice by slice (`_slices`: the temporary is one slice's).

    Args:
        u: the curvature ``u``, one tensor per entry of ``params`` (overwritten).
        params: the parameters ``u`` belongs to, as registered in ``optimizer``.
        optimizer: the (unwrapped) torch optimizer, after its step.
        lrs: learning rate per ``id(param_group)`` at the time of the step (before the scheduler moved it).
        clip_coef: ``c = min(1, max_grad_norm / ||G||)``, 1 without clipping; a tensor costs one more pass with
            ``into`` (the fused add takes a Python scalar), so the trainer folds it into ``u`` beforehand.
        scale: a factor on ``w`` (the look-ahead's ``rho_k`` under ``lets_horizon="trace"``).
        into: the look-ahead ``Z`` to add ``scale * w`` to, or None to return ``scale * w`` in ``u``.
    """
    if into is not None and isinstance(clip_coef, Tensor):
        torch._foreach_mul_(u, clip_coef)
        clip_coef = 1.0
    index = {id(p): i for i, p in enumerate(params)}
    kind = optimizer_kind(optimizer)
    for group in optimizer.param_groups:
        members = [index[id(p)] for p in group["params"] if id(p) in index]
        if not members:
            continue
        lr = lrs[id(group)]
        if kind == "adam":
            beta1, beta2 = group["betas"]
            for i in members:
                state = optimizer.state.get(params[i], {})
                # No state: the parameter had no gradient, and did not move. Step 1: Adam's first update is
                # lr * G / (|G| + eps), sign descent, whose derivative in G is eps / (|G| + eps)^2 (v's dependence on
                # rho, ignored below, cancels the rest exactly): ~0 wherever |G| >> sqrt(eps) = 1e-4, and made of
                # gradients below that elsewhere, which bf16 passes do not resolve (the first hyper-step's sign
                # flipped with bf16, with the exact term too): the first step adds nothing.
                if "exp_avg_sq" not in state or float(state["step"]) <= 1:
                    if into is None:
                        u[i].zero_()
                    continue
                k = float(state["step"])
                v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
                root = math.sqrt(1 - beta2**k)
                factor = clip_coef * (-lr * scale * (1 - beta1) / (1 - beta1**k) * root)
                for x, out, v_slice in _slices(u[i], u[i] if into is None else into[i], v):
                    denominator = v_slice.sqrt().add_(group["eps"] * root)
                    if into is None:
                        x.div_(denominator).mul_(factor)
                    else:
                        out.addcdiv_(x, denominator, value=factor)
        else:
            factor = clip_coef * (-lr * scale * (1.0 + group.get("momentum", 0.0) if group.get("nesterov") else 1.0))
            if into is None:
                torch._foreach_mul_([u[i] for i in members], factor)
            else:
                torch._foreach_add_([into[i] for i in members], [u[i] for i in members], alpha=factor)
    return u if into is None else into


SLICE = 1 << 20  # elements per slice in optimizer_derivative_'s Adam branch (see _slices)


def _slices(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Matching 1-D slices of ``SLICE`` elements of same-shaped tensors (the tensors whole if one is not
    contiguous). A temporary the size of a slice (4 MB in float32) stays under glibc's mmap threshold, so the
    allocator reuses it; one the size of an embedding matrix (47 MB in MiniLM) is mapped fresh and page-faulted in
    at every step (~11k faults, ~20 ms a step on a CPU, measured)."""
    if not all(t.is_contiguous() for t in tensors):
        return [tensors]
    return list(zip(*(t.view(-1).split(SLICE) for t in tensors)))


def clip_coefficient(grads: list[Tensor], max_norm: float, inv_scale: float = 1.0) -> Tensor | float:
    """``c = min(1, max_norm / ||G||)``, the factor the Trainer's gradient clipping applies (1 when ``max_norm``
    is 0 or None); ``inv_scale`` brings loss-scaled fp16 gradients to their true size. No host sync."""
    if not max_norm or max_norm <= 0:
        return 1.0
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()) * inv_scale
    return torch.clamp(max_norm / (norm + 1e-6), max=1.0)


HORIZONS = ("interval", "step", "trace")


def lookahead_add_(
    lookahead: list[Tensor] | None,
    u: list[Tensor],
    params: list[Tensor],
    optimizer: torch.optim.Optimizer,
    lrs: dict[int, float],
    clip_coef: Tensor | float,
    *,
    scale: float = 1.0,
    decay: float = 1.0,
) -> list[Tensor]:
    """One step of the look-ahead: ``Z_{k+1} = decay Z_k + scale w_k`` with this step's ``w_k = -lr c P u``
    (`optimizer_derivative_`, whose arguments follow ``lookahead``); ``Z`` starts at ``scale w``. Returns ``Z``.

    ``interval`` uses ``scale = decay = 1`` and restarts ``Z`` at every hyper-step. ``trace`` never restarts it and
    uses ``scale = rho_k`` (the radius step ``k`` used), ``decay = 1 - 1/lets_trace_steps``: ``Z`` is then
    ``d theta / d s`` for a common shift ``s`` of log rho over all past steps, each step's contribution fading with
    ``decay^age`` in place of the Jacobians' contraction (an eligibility trace), and ``h_V^T Z`` is ``dF/ds``.

    The exact forward-mode recursion for ``Z_k = d theta_k / d rho`` over steps that share one radius is
    ``Z_{k+1} = J_k Z_k + w_k`` with ``J_k = d theta_{k+1} / d theta_k = I - lr_k c_k P_k A_k`` (``A_k`` the
    Jacobian of the step's SAM gradient w.r.t. ``theta``, the Hessian plus the direction's own derivative). Taking
    ``J_k = I`` drops the terms ``lr c P A Z``: their size relative to ``Z`` is about ``lr ||P A||`` per step, so over
    ``K`` steps ``||Z_exact - Z|| <= sum_k ((1 + lr a)^(K-1-k) - 1) ||w_k||`` with ``a`` a bound on ``||P_j A_j||``
    (``tests/test_hypergradient.py`` checks this against a finite difference in float64). Costs one buffer and no
    pass of its own: ``w`` is added into ``Z`` by the same pass that divides by ``P`` (``u`` is scratch after it).

    Args:
        lookahead: ``Z`` so far (updated in place), or None at the first step of a window (``u`` becomes ``Z``).
        u, params, optimizer, lrs, clip_coef: this step's, as `optimizer_derivative_` takes them.
    """
    if lookahead is None:
        return optimizer_derivative_(u, params, optimizer, lrs, clip_coef, scale=scale)
    if decay != 1.0:
        torch._foreach_mul_(lookahead, decay)
    return optimizer_derivative_(u, params, optimizer, lrs, clip_coef, scale=scale, into=lookahead)


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """``adam`` (Adam, AdamW, fused or not), ``sgd``, or ``other`` (treated as ``P = 1``)."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return "adam"
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    return "other"


# --------------------------------------------------------------------------------------------------------------
# The hypergradient and the radius update
# --------------------------------------------------------------------------------------------------------------
OBJECTIVES = ("gap", "heldout")


def hypergradient(gap: float, heldout_dot: float, train_dot: float, objective: str = "gap") -> float:
    """``dF/drho`` of the upper-level objective, from the four numbers every hyper-step has.

    - ``gap`` (the paper's squared generalisation gap): ``F = 1/2 delta^2``, ``dF/drho = delta (h_V^T w - g'^T w)``.
    - ``heldout`` (the look-ahead held-out loss): ``F = l(theta'; V)``, ``dF/drho = h_V^T w``.

    Args:
        gap: ``delta = l(theta'; V) - l(theta'; B')``.
        heldout_dot: ``h_V^T w``, the held-out gradient at ``theta'`` dotted with ``w = d theta'/d rho``.
        train_dot: ``g'^T w``, the next training batch's gradient at ``theta'`` dotted with ``w``.
        objective: ``gap`` or ``heldout`` (``lets_objective``).
    """
    if objective == "gap":
        return gap * (heldout_dot - train_dot)
    if objective == "heldout":
        return heldout_dot
    raise ValueError(f"Unknown lets_objective {objective!r}: use one of {OBJECTIVES}.")


MIN_HYPER_STEPS = 10  # the default lets_lr treats a run with fewer hyper-steps as one with this many


def radius_lr(travel: float, max_steps: int, interval: int) -> float:
    """The default ``lets_lr``: ``ln(travel) / H`` with ``H = max(MIN_HYPER_STEPS, max_steps // interval)``.

    Signum (the default) moves ``log rho`` by exactly ``lets_lr`` per hyper-step, Adam by about that while the
    hypergradient keeps its sign (and by far less on noise, which its moments average out), so this lets a
    consistent signal change rho ``travel``-fold over the run, however long the run is: a short fine-tune and a long
    one get the same reach. The floor keeps a short run (a smoke test, a few-step probe) safe: a first step moves
    ``log rho`` by the full ``lets_lr`` whatever the hypergradient's size, and a run with one hyper-step would
    otherwise jump ``travel``-fold on one sample's sign; with the floor it moves at most ``travel^(1/10)`` (2.5x at
    the default 1e4) per hyper-step, and a run of ``H < 10`` hyper-steps at most ``travel^(H/10)`` in all.
    """
    return math.log(travel) / planned_hyper_steps(max_steps, interval)


def planned_hyper_steps(max_steps: int, interval: int) -> int:
    """``H = max(MIN_HYPER_STEPS, max_steps // interval)``: the hyper-steps `radius_lr` spreads the reach over."""
    return max(MIN_HYPER_STEPS, max_steps // interval)


LR_SCHEDULES = ("constant", "linear")


def scheduled_lr(lr: float, k: int, hyper_steps: int, schedule: str) -> float:
    """The radius learning rate at hyper-step ``k`` (0-based) of ``H = hyper_steps`` (``lets_lr_schedule``).

    - ``constant``: ``lr`` throughout.
    - ``linear``: ``lr * 2 (H - k) / (H + 1)``, from about ``2 lr`` at the start to 0 at the end (0 past it). The
      sum over the run is ``H lr``, the constant schedule's reach, but front-loaded: a consistent sign crosses two
      decades in about 30% of the run instead of all of it, which is where a bad start costs (results.md section
      7: from 0.1 on full MRPC signum at a constant rate spent the first half of the run above 0.01), and the
      radius settles at the end instead of stepping around its optimum by ``lr`` (signum never moves less).
    """
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * 2 * max(hyper_steps - k, 0) / (hyper_steps + 1)
    raise ValueError(f"Unknown lets_lr_schedule {schedule!r}: use one of {LR_SCHEDULES}.")


@dataclass
class RadiusState:
    """The radius and its optimizer state; everything a checkpoint needs (plain floats, JSON-serialisable).

    Attributes:
        log_rho: ``s = log rho`` (``-inf`` for a fixed radius of 0); ``rho`` is ``exp(log_rho)``.
        exp_avg, exp_avg_sq: Adam's first and second moments of ``dF/ds`` (signum keeps its momentum in ``exp_avg``).
        steps: hyper-steps taken.
        recent: ``|dF/ds|`` of the latest `CLIP_WINDOW` hyper-steps, before clipping: ``lets_clip``'s scale.
    """

    log_rho: float
    exp_avg: float = 0.0
    exp_avg_sq: float = 0.0
    steps: int = 0
    recent: list[float] = field(default_factory=list)

    @property
    def rho(self) -> float:
        return math.exp(self.log_rho)

    def to_dict(self) -> dict:
        return asdict(self)


CLIP_WINDOW = 10  # lets_clip's scale is the median |dF/ds| of this many latest hyper-steps


def clip_to_recent(grad: float, recent: list[float], clip: float) -> float:
    """``dF/ds`` clipped to ``[-c, c]``, ``c = clip * median(recent)``: the radius step against the heavy tail.

    The full-data hypergradient has single values 7-135x its median size (docs/results.md section 7); one of them
    outweighs the momentum of every value before it and turns rho for many hyper-steps (STS-B seed 2 with signum:
    0.026 -> 0.215 after two). Clipped to a few times the recent median, a value counts as a few ordinary ones:
    its sign still votes, its size cannot outvote the rest. The median of the latest values (not a mean) is the
    scale because a mean is what one outlier drags; it follows the hypergradient's fall over a run. Nothing is
    clipped while ``recent`` is empty (the first hyper-step) or ``clip`` is 0 (``lets_clip`` off). `radius_step`
    keeps exact zeros out of ``recent``: a hyper-step whose look-ahead is 0 (the first one of a run with warm-up,
    whose step 0 has learning rate 0) carries no size, and a median of 0 would clip the next value to nothing.

    Args:
        grad: ``dF/ds`` of this hyper-step.
        recent: ``|dF/ds|`` of the hyper-steps before it (`RadiusState.recent`).
        clip: the multiple of the median (``lets_clip``); 0 turns clipping off.
    """
    if clip == 0 or not recent:
        return grad
    bound = clip * statistics.median(recent)
    return min(max(grad, -bound), bound)


def radius_step(
    state: RadiusState,
    dF_drho: float,
    *,
    lr: float,
    optimizer: str,
    rho_min: float,
    rho_max: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    allow_increase: bool = True,
    clip: float = 0.0,
) -> RadiusState:
    """One descent step on ``s = log rho`` with ``dF/ds = rho * dF/drho``, then ``rho`` clamped to its bounds.

    Args:
        state: the current radius and optimizer state (not modified).
        dF_drho: the hypergradient ``dF/drho``.
        lr: the radius learning rate (``lets_lr``).
        optimizer: ``adam`` moves ``s`` by at most about ``lr`` per step whatever the gradient's scale, and by
            about ``lr`` times the hypergradient's mean/sd when it is noisy; ``signum`` (Bernstein et al., ICML 2018)
            by exactly ``lr`` per step in the sign of the momentum ``m`` (betas[0]), so a weak but consistent signal
            moves rho as far as a strong one; ``sgd`` by ``lr * dF/ds``.
        rho_min, rho_max: the bounds ``rho`` is clamped to.
        betas, eps: Adam's constants.
        allow_increase: False while the loss guard is tripped: ``rho`` may only shrink.
        clip: ``lets_clip``: ``dF/ds`` is clipped to this multiple of its recent median size before the
            optimizer sees it (`clip_to_recent`); 0: not clipped.
    Returns:
        The new `RadiusState`.
    """
    raw = state.rho * dF_drho
    grad = clip_to_recent(raw, state.recent, clip)
    steps = state.steps + 1
    m, v = state.exp_avg, state.exp_avg_sq
    if optimizer == "adam":
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        m_hat, v_hat = m / (1 - betas[0] ** steps), v / (1 - betas[1] ** steps)
        log_rho = state.log_rho - lr * m_hat / (math.sqrt(v_hat) + eps)
    elif optimizer == "signum":
        m = betas[0] * m + (1 - betas[0]) * grad
        log_rho = (state.log_rho - lr * math.copysign(1.0, m)) if m != 0 else state.log_rho
    elif optimizer == "sgd":
        log_rho = state.log_rho - lr * grad
    else:
        raise ValueError(f"Unknown lets_optimizer {optimizer!r}: use 'adam', 'signum' or 'sgd'.")
    if not allow_increase:
        log_rho = min(log_rho, state.log_rho)
    log_rho = min(max(log_rho, math.log(rho_min)), math.log(rho_max))
    recent = [*state.recent, abs(raw)][-CLIP_WINDOW:] if raw != 0 else state.recent
    return RadiusState(log_rho=log_rho, exp_avg=m, exp_avg_sq=v, steps=steps, recent=recent)


STALL_SHRINK = 10.0  # a stall sends rho this factor below min(rho, sam_rho): a radius the model does not learn under
PRIOR_MARGIN = 0.05  # a loss within this share below the label prior's counts as "at the prior" (see LossGuard)


def constant_predictor_loss(labels: Tensor, regression: bool) -> float:
    """The loss of the best model that ignores its input: what a model that has learned nothing but the labels'
    distribution scores, and where the training loss sits when the model is not learning (the guard's stall).

    Classification (cross-entropy): the entropy of the label frequencies; labels below 0 (the ignore index -100)
    are left out. Regression (mean squared error): the labels' variance, the error of predicting their mean.

    Args:
        labels: the training labels, one per example.
        regression: the model's loss is the mean squared error (``num_labels == 1``), not cross-entropy.
    """
    y = labels.reshape(-1).double()
    if regression:
        return float(y.var(unbiased=False))
    counts = torch.bincount(y[y >= 0].long()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@dataclass
class LossGuard:
    """Watches the training loss seen at hyper-steps; trips when the model gets worse *or is not learning*.

    Two failure modes of a mobile radius: a radius so large that the training loss rises (the collapse LETS.md
    measured on STS-B), and one under which the model never learns while the loss sits still and the hypergradient,
    which then carries no signal, drifts rho upwards (CoLA with the squared gap: rho 0.05 -> 0.28, MCC 0; SST-2
    with 20% noisy labels and the default objective from rho 0.1: rho -> 0.28, a one-class model; results.md
    sections 3 and 6). The guard keeps an EMA of the training loss and trips when

    - *risen*: the EMA is more than ``tolerance`` (relative) above its best, or
    - *stalled*: the EMA has not fallen ``threshold`` (relative) below its best for ``patience`` hyper-steps *and*
      sits at the loss of a model that predicts only the label prior (``prior``, `constant_predictor_loss`; within
      `PRIOR_MARGIN` below it). A stall trips again after every further ``patience`` hyper-steps without progress.

    ``threshold`` is what makes a stall visible: a loss sitting at the class prior's entropy still sets a new lowest
    EMA now and then by a hair (that is how the guard without it missed every recorded case), never by 1%.
    ``prior`` is what tells *not learning* from *learned, and on a plateau*: within an epoch a fine-tune's training
    loss also stops falling once the model has learned what one pass teaches (full CoLA, third epoch: 0.44 for 100
    steps, the prior's loss 0.61), and a cut of rho there would override a radius that was working. Without a
    ``prior`` (labels or loss unknown) any plateau counts.

    The trainer acts on a trip with `guarded_log_rho`. While tripped rho may not grow; progress (or, after a rise,
    a return within the tolerance) releases it.

    Attributes:
        tolerance: the relative rise of the EMA over its best that trips the guard (``lets_guard_tolerance``).
        patience: hyper-steps without progress that count as a stall (``lets_guard_patience``; None: never).
        threshold: the relative fall below the best that counts as progress (``lets_guard_threshold``).
        prior: the training loss of a constant predictor of the labels (`constant_predictor_loss`), or None.
        beta: the EMA's decay per hyper-step.
        ema, best: the current EMA of the training loss and its best (last progress) so far.
        since_best: hyper-steps since the last progress (or the last stall trip).
        reason: why the guard is tripped now (``"risen"``, ``"stalled"``), or None; trips: how often it tripped.
    """

    tolerance: float
    patience: int | None = None
    threshold: float = 0.0
    prior: float | None = None
    beta: float = 0.9
    ema: float | None = None
    best: float = math.inf
    since_best: int = 0
    reason: str | None = None
    trips: int = 0

    def update(self, train_loss: float) -> str | None:
        """Feed one training loss; return ``"risen"`` or ``"stalled"`` when the guard trips *now*, else None."""
        self.ema = train_loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * train_loss
        progress = self.ema < self.best * (1 - self.threshold)
        if progress:
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        trip = None
        if self.risen:
            trip = None if self.reason == "risen" else "risen"
        elif self.patience is not None and self.since_best >= self.patience and self.at_prior:
            trip, self.since_best = "stalled", 0
        elif progress or self.reason == "risen":
            self.reason = None
        if trip:
            self.reason, self.trips = trip, self.trips + 1
        return trip

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    @property
    def risen(self) -> bool:
        """The EMA lies more than ``tolerance`` above its best."""
        return self.ema is not None and self.ema > self.best * (1 + self.tolerance)

    @property
    def at_prior(self) -> bool:
        """The EMA is no more than `PRIOR_MARGIN` below ``prior`` (always true without a ``prior``)."""
        return self.prior is None or (self.ema is not None and self.ema >= self.prior * (1 - PRIOR_MARGIN))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> LossGuard:
        """From `to_dict`'s output, or from a checkpoint of a version that stored ``tripped`` instead of ``reason``."""
        state = dict(state)
        if "tripped" in state:
            state["reason"] = "stalled" if state.pop("tripped") else None
        return cls(**state)


def guarded_radius(
    guard: LossGuard, radius: RadiusState, train_loss: float, sam_rho: float, rho_min: float
) -> tuple[RadiusState, str | None]:
    """Feed one training loss to ``guard``; on a trip, the radius it sends rho to and a message that says why.

    Returns ``(radius, None)`` when the guard does not trip now. On a trip the new radius is `guarded_log_rho`'s,
    with Adam's moments reset (the direction they carried is void).
    """
    trip = guard.update(train_loss)
    if trip is None:
        return radius, None
    new = RadiusState(log_rho=guarded_log_rho(radius.log_rho, trip, sam_rho, rho_min))
    if trip == "risen":
        why = f"rose more than {100 * guard.tolerance:.0f}% above its best"
    else:
        why = f"has not fallen {100 * guard.threshold:g}% below its best for {guard.patience} hyper-steps"
        why += "" if guard.prior is None else f" at the label prior's loss ({guard.prior:.4f})"
    message = (
        f"the training loss (EMA {guard.ema:.4f}, best {guard.best:.4f}) {why}; rho {radius.rho:.4g} -> "
        f"{new.rho:.4g}, and it may not grow until the loss improves."
    )
    return new, message


def guarded_radius_step(
    state: RadiusState, guard: LossGuard | None, dF_drho: float, train_loss: float, *, sam_rho: float, **step: Any
) -> tuple[RadiusState, str | None]:
    """One hyper-step of the radius under the loss guard: ``guard`` sees ``train_loss`` first (`guarded_radius`: a
    trip sends rho down), then `radius_step` moves ``log rho`` on ``dF_drho``, only down while the guard is tripped.

    Args:
        state: the radius before the hyper-step.
        guard: the `LossGuard` (updated in place), or None: `radius_step` alone.
        dF_drho: the hypergradient.
        train_loss: ``l(theta; B')`` of this hyper-step.
        sam_rho: the run's initial radius (where a rise sends rho back to).
        step: `radius_step`'s keyword arguments (``lr``, ``optimizer``, ``clip``, ``rho_min``, ``rho_max``).
    Returns:
        The new `RadiusState` and the guard's message when it tripped now (None otherwise).
    """
    message = None
    if guard is not None:
        state, message = guarded_radius(guard, state, train_loss, sam_rho, step["rho_min"])
    return radius_step(state, dF_drho, allow_increase=not (guard and guard.tripped), **step), message


def guarded_log_rho(log_rho: float, trip: str, sam_rho: float, rho_min: float) -> float:
    """Where a trip of the `LossGuard` sends ``log rho``.

    A rise: back to at most ``sam_rho``, the radius the run started from, under which the model had been learning.
    A stall: `STALL_SHRINK` times below at most ``sam_rho``, never below ``rho_min``: the model is not learning
    under this radius and the start may itself be the cause (a start 10x too large), so going back there would
    not help; one decade per trip, until the model learns or rho reaches its lower bound (near plain training).

    Args:
        log_rho: ``log rho`` when the guard trips.
        trip: what `LossGuard.update` returned: ``"risen"`` or ``"stalled"``.
        sam_rho: the run's initial radius (``sam_rho``).
        rho_min: the lower bound (``lets_rho_min``).
    Returns:
        The new ``log rho``.
    """
    ceiling = min(log_rho, math.log(sam_rho))
    if trip == "stalled":
        ceiling -= math.log(STALL_SHRINK)
    return max(ceiling, math.log(rho_min))
