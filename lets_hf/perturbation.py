"""SAM perturbation variants as pure functions over lists of tensors.

Notation (docs/algorithm.md): ``params`` are the trainable parameters theta, ``grads`` the ascent gradients
``g = grad l(theta; B)``, ``rho`` the perturbation radius. A *variant* maps ``(params, grads)`` to a unit-radius
direction ``d``; the perturbation is ``eps = rho * d``:

- SAM  (Foret et al. 2021):  ``d = g / ||g||_2``
- ASAM (Kwon et al. 2021):   ``d = T^2 g / ||T g||_2`` with ``T = |theta| + eta`` on weight matrices and ``T = 1`` on
  biases and normalisation weights (1-D tensors).

New variants are registered with :func:`register_perturbation` and selected by ``sam_variant``.

Cheaper SAM (``sam_every = k``): only every k-th optimizer step is perturbed. LookSAM (Liu et al., CVPR 2022)
keeps, from the perturbed step, the part of the SAM gradient ``G = grad l(theta + rho d)`` orthogonal to the plain
gradient ``g``, ``g_v = G - (G.g / g.g) g`` (`orthogonal_part_`), and adds it back on the k-1 plain steps in between,
rescaled to the new gradient: ``g + alpha ||g|| / ||g_v|| g_v`` (`looksam_gradient_`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from .tensor_lists import dot

__all__ = [
    "Direction",
    "asam_direction",
    "available_perturbations",
    "budget_radius",
    "get_perturbation",
    "global_norm",
    "looksam_gradient_",
    "orthogonal_part_",
    "register_perturbation",
    "sam_direction",
]

_TINY = 1e-12  # guards the division by ||g|| when the gradient vanishes


class Direction(Protocol):
    """A SAM variant: ``(params, grads, *, eta) -> directions``, each direction shaped like its parameter.

    ``eta`` is the variant's own scale hyper-parameter (``asam_eta``); variants that have none ignore it.
    The function must not modify its inputs and must return the direction with the radius factored out.
    """

    def __call__(self, params: list[Tensor], grads: list[Tensor], *, eta: float) -> list[Tensor]: ...


def global_norm(tensors: list[Tensor]) -> Tensor:
    """``||concat(tensors)||_2`` as a 0-dim tensor, without a host sync (accumulated in float32 or wider)."""
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(tensors)
    dtype = torch.promote_types(norms[0].dtype, torch.float32)
    return torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]))


def sam_direction(params: list[Tensor], grads: list[Tensor], *, eta: float = 0.0) -> list[Tensor]:
    """SAM's first-order worst case on the unit L2 ball.

    ``d = g / ||g||_2``.

    Args:
        params: trainable parameters (unused; kept for the common signature).
        grads: ascent gradients ``g``, one per parameter.
        eta: unused.
    Returns:
        ``d``, one tensor per parameter, with ``||d||_2 = 1`` (0 when ``g = 0``).
    """
    scale = 1.0 / (global_norm(grads) + _TINY)
    return torch._foreach_mul(grads, scale.to(grads[0].dtype)) if grads else []


def asam_scale(params: list[Tensor], *, eta: float) -> list[Tensor]:
    """ASAM's normalisation operator ``T``: ``|theta| + eta`` on weight matrices (ndim > 1), ``1`` elsewhere.

    SamsungLabs/ASAM applies ``T`` to parameters named ``weight``; we key on shape instead, so that biases and
    LayerNorm weights (1-D) keep ``T = 1`` as docs/algorithm.md specifies, whatever the module calls them.
    """
    return [p.detach().abs() + eta if p.ndim > 1 else torch.ones_like(p) for p in params]


def asam_direction(params: list[Tensor], grads: list[Tensor], *, eta: float = 0.01) -> list[Tensor]:
    """Adaptive SAM: the worst case on the ellipsoid ``||T^{-1} eps||_2 <= rho``.

    ``d = T^2 g / ||T g||_2``, ``T = asam_scale(params, eta)``.

    Args:
        params: trainable parameters ``theta``.
        grads: ascent gradients ``g``.
        eta: ASAM's offset (``asam_eta``; 0.01 in the ASAM paper).
    Returns:
        ``d``, one tensor per parameter.
    """
    t = asam_scale(params, eta=eta)
    tg = torch._foreach_mul(t, grads)
    scale = 1.0 / (global_norm(tg) + _TINY)
    d = torch._foreach_mul(tg, t)  # T^2 g
    torch._foreach_mul_(d, scale.to(grads[0].dtype))
    return d


def budget_radius(
    grads: list[Tensor], directions: list[Tensor], sigma: float, rho_max: float
) -> tuple[Tensor, Tensor]:
    """The loss budget's radius (LE-SAM, Wang et al. 2026): the one whose first-order loss increase is ``sigma``.

    ``l(theta + rho d) ~ l(theta) + rho g^T d``, so ``rho = sigma / g^T d``, capped at ``rho_max``:
    ``sigma / ||g||`` for SAM, ``sigma / ||T g||`` for ASAM. As the gradient shrinks while a model fits its data the
    radius grows, without a learned step. Both results are 0-dim float64 tensors (no host sync).

    Args:
        grads: the ascent gradients ``g``.
        directions: the unit-radius direction ``d`` of the variant.
        sigma: the budget (``sam_budget``).
        rho_max: the ceiling (``sam_rho``).
    Returns:
        ``(rho, free)``: the radius, and 1.0 where it is under the ceiling (``d rho / d log sigma = rho``), 0.0 where
        the ceiling holds it (``d rho / d log sigma = 0``).
    """
    rho = sigma / (dot(grads, directions) + _TINY)
    free = (rho < rho_max).to(rho.dtype)
    return torch.clamp(rho, max=rho_max), free


def orthogonal_part_(g: list[Tensor], G: list[Tensor]) -> list[Tensor]:
    """LookSAM's reused component, in place of ``g``: the part of the SAM gradient orthogonal to the plain one.

    ``g_v = G - (G^T g / g^T g) g``. ``G - g = rho H d + O(rho^2)`` and ``g`` has no part orthogonal to itself,
    so ``g_v = rho (I - g g^T / g^T g) H d + O(rho^2)``: the curvature that SAM's step adds and the plain step lacks.

    Args:
        g: the plain gradients ``grad l(theta)`` of the perturbed step (overwritten with ``g_v``).
        G: the SAM gradients ``grad l(theta + rho d)`` of the same step, in ``g``'s units.
    Returns:
        ``g``, now holding ``g_v``.
    """
    if not g:
        return g
    coef = dot(G, g) / (dot(g, g) + _TINY)  # 0-dim float64, no host sync
    torch._foreach_mul_(g, (-coef).to(g[0].dtype))
    torch._foreach_add_(g, G)
    return g


def looksam_gradient_(grads: list[Tensor], g_v: list[Tensor], alpha: float) -> list[Tensor]:
    """A LookSAM step's gradient, in place: ``g <- g + alpha ||g|| / ||g_v|| g_v``.

    The reused direction is rescaled to the current gradient's size, so it carries over however the gradient's
    scale changes between perturbed steps (and whatever loss scale ``grads`` are in: ``g_v`` may be unscaled).

    Args:
        grads: the plain gradients ``g`` of this step (modified).
        g_v: `orthogonal_part_` of the last perturbed step.
        alpha: LookSAM's weight (``looksam_alpha``; 0.7 in the paper's ViT runs).
    Returns:
        ``grads``.
    """
    if not grads:
        return grads
    scale = alpha * global_norm(grads) / (global_norm(g_v) + _TINY)
    torch._foreach_add_(grads, torch._foreach_mul(g_v, scale.to(g_v[0].dtype)))
    return grads


_REGISTRY: dict[str, Direction] = {"sam": sam_direction, "asam": asam_direction}


def register_perturbation(name: str) -> Callable[[Direction], Direction]:
    """Decorator that makes a direction function available as ``sam_variant=name`` (case-insensitive).

    The function takes ``(params, grads, *, eta)`` (lists of tensors and ``asam_eta``) and returns the unit-radius
    direction as a new list, leaving its inputs untouched.

    Example::

        @register_perturbation("fisher_sam")
        def fisher_direction(params, grads, *, eta):
            ...
    """
    key = name.lower()
    if key == "none":
        raise ValueError("'none' is reserved: it means plain training without a perturbation.")

    def decorator(fn: Direction) -> Direction:
        _REGISTRY[key] = fn
        return fn

    return decorator


def get_perturbation(name: str) -> Direction:
    """The direction function registered under ``name`` (case-insensitive)."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown sam_variant {name!r}. Choose one of {available_perturbations()}, or register your own with "
            "lets_hf.register_perturbation(name)."
        ) from None


def available_perturbations() -> list[str]:
    """The names ``sam_variant`` accepts: ``none`` and every registered variant."""
    return ["none", *sorted(_REGISTRY)]
