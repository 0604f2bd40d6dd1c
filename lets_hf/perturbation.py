"""SAM perturbation variants as pure functions over lists of tensors.

Notation (shared LETS.md): ``params`` are the trainable parameters theta, ``grads`` the ascent gradients
``g = grad l(theta; B)``, ``rho`` the perturbation radius. A *variant* maps ``(params, grads)`` to a unit-radius
direction ``d``; the perturbation is ``eps = rho * d``:

- SAM  (Foret et al. 2021):  ``d = g / ||g||_2``
- ASAM (Kwon et al. 2021):   ``d = T^2 g / ||T g||_2`` with ``T = |theta| + eta`` on weight matrices and ``T = 1`` on
  biases and normalisation weights (1-D tensors).

New variants are registered with :func:`register_perturbation` and selected by ``sam_variant``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "Direction",
    "asam_direction",
    "available_perturbations",
    "get_perturbation",
    "global_norm",
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
    LayerNorm weights (1-D) keep ``T = 1`` as LETS.md specifies, whatever the module calls them.
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
