"""Small operations on lists of tensors that the trainer needs: gradients, dot products, rank averages and buffers
kept across steps."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["accumulate_", "all_finite", "all_reduce_mean_", "copy_into", "dot", "grads_of", "zeros_into"]


def grads_of(params: list[Tensor]) -> list[Tensor]:
    """Each parameter's ``.grad``, zeros for one the loss did not reach (so lists stay aligned with params)."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


def zeros_into(buffer: list[Tensor] | None, like: list[Tensor]) -> list[Tensor]:
    """``buffer`` zeroed in place, or new zeros shaped like ``like`` when there is none yet (a buffer reused every
    step costs no allocation after the first)."""
    if buffer is None:
        return [torch.zeros_like(t) for t in like]
    torch._foreach_zero_(buffer)
    return buffer


def accumulate_(
    buffer: list[Tensor] | None, tensors: list[Tensor], alpha: float = 1.0, spare: list[Tensor] | None = None
) -> list[Tensor]:
    """``buffer += alpha * tensors``; with no buffer yet, ``alpha * tensors`` copied into ``spare`` (a free buffer
    of the same shapes: no allocation, no zeroing), or into new tensors without one. Returns the buffer.

    Copying beats keeping ``tensors`` as the buffer when they are a pass's gradients: freed at once, their memory
    goes to the next pass's gradients; kept, the next pass maps fresh memory, which a CPU pays in page faults."""
    if buffer is not None:
        torch._foreach_add_(buffer, tensors, alpha=alpha)
        return buffer
    if alpha == 1.0:
        return copy_into(spare, tensors)
    if spare is None:
        return [t.detach() * alpha for t in tensors]
    for out, t in zip(spare, tensors):  # scaled into the spare in one pass (a copy, then a scale, reads it twice)
        torch.mul(t.detach(), alpha, out=out)
    return spare


@torch.no_grad()
def copy_into(buffer: list[Tensor] | None, source: list[Tensor]) -> list[Tensor]:
    """``buffer`` overwritten with ``source``, or a detached copy of it when there is none yet."""
    if buffer is None:
        return [t.detach().clone() for t in source]
    torch._foreach_copy_(buffer, source)
    return buffer


def dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """``sum_i <a_i, b_i>`` as a 0-dim float64 tensor (no host sync)."""
    if not a:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack([torch.vdot(x.reshape(-1), y.reshape(-1)).double() for x, y in zip(a, b)]).sum()


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every entry of every tensor is finite (one host sync: the fp16 overflow check)."""
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def all_reduce_mean_(tensors: list[Tensor], world_size: int) -> list[Tensor]:
    """Average ``tensors`` in place over all ranks, one all-reduce per dtype (flattened, like DDP's buckets).

    A no-op for a single process. Uses SUM then a division, since gloo has no AVG.
    """
    if world_size <= 1 or not tensors:
        return tensors
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(synced)
    return tensors
