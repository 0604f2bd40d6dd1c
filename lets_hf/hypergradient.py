"""The LETS hypergradient dF/drho, as pure functions over lists of tensors (docs/algorithm.md has the derivation;
what moves the radius on it, the optimizer on log rho, its schedule and the loss guard, is in `radius.py`).

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
``g`` -> ``Gbar``).

The look-ahead's horizon (``lets_horizon``): ``interval`` (default) sums ``w`` over the ``lets_interval`` steps
since the last hyper-step, ``Z = sum_k w_k`` (`lookahead_add_`): forward-mode
``d theta / d rho`` (Franceschi et al. 2017) with each step's Jacobian ``d theta_{k+1} / d theta_k`` taken as the
identity, and ``h_V^T Z``, ``g'^T Z`` in place of ``h_V^T w``, ``g'^T w``; ``step`` takes ``w`` of the one step
before the held-out pass (the paper's one-step look-ahead, Baydin et al.'s hypergradient descent).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "HORIZONS",
    "OBJECTIVES",
    "clip_coefficient",
    "fisher_curvature",
    "hessian_vector_product",
    "hypergradient",
    "lookahead_add_",
    "optimizer_derivative_",
    "optimizer_kind",
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
