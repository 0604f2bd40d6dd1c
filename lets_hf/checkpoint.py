"""The LETS state in a checkpoint folder, beside the Trainer's own files, in JSON and safetensors (no pickle).

``lets_state.json`` holds the radius and its optimizer state, the loss guard, where the held-out loader stands,
the last logged values and the history; ``lets_curvature.safetensors`` holds the buffers in flight across the
checkpoint: the curvature ``u`` of the step just taken (``u.<i>``) and the look-ahead ``Z`` summed so far over
the interval (``z.<i>``). Both are written to a temporary name and renamed, *before* the
Trainer's own files, so that the Trainer's last file, ``trainer_state.json``, marks a complete checkpoint
(`last_complete_checkpoint`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "LETS_CURVATURE_NAME",
    "LETS_STATE_NAME",
    "atomic_write",
    "last_complete_checkpoint",
    "load_lets_state",
    "save_lets_state",
]

LETS_STATE_NAME = "lets_state.json"
LETS_CURVATURE_NAME = "lets_curvature.safetensors"


def save_lets_state(folder: str, state: dict, buffers: dict[str, list[torch.Tensor] | None]) -> None:
    """Write ``state`` (JSON-serialisable) and the named tensor lists in ``buffers`` (``u``, ``z``, ``v``; a None
    one is left out) into ``folder``."""
    path = os.path.join(folder, LETS_CURVATURE_NAME)
    buffers = {name: ts for name, ts in buffers.items() if ts is not None}
    if buffers:
        tensors = {f"{name}.{i}": t.contiguous() for name, ts in buffers.items() for i, t in enumerate(ts)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    elif os.path.exists(path):
        os.remove(path)
    atomic_write(os.path.join(folder, LETS_STATE_NAME), lambda tmp: _write_json(state, tmp))


def load_lets_state(folder: str, device: torch.device) -> tuple[dict, dict[str, list[torch.Tensor]]] | None:
    """``(state, buffers)`` from ``folder`` (``buffers`` maps ``u``/``z``/``v`` to tensor lists; empty when there were
    none), or None when it holds no LETS state.

    The tensors are read on the CPU and then moved: safetensors rejects an indexed CPU device (``cpu:1``), which is
    what ``TrainingArguments.device`` is on a CPU DDP rank. Each is copied into memory of its own: safetensors' tensors
    share one buffer at offsets that need not be 64-byte aligned, and a CPU's vectorised dot product rounds its last
    bits by alignment, so a resumed run's hypergradients would differ from the uninterrupted run's in the 7th digit."""
    path = os.path.join(folder, LETS_STATE_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    buffers: dict[str, list[torch.Tensor]] = {}
    if os.path.isfile(os.path.join(folder, LETS_CURVATURE_NAME)):
        tensors = load_file(os.path.join(folder, LETS_CURVATURE_NAME))
        for name in sorted({key.split(".")[0] for key in tensors}):
            count = sum(key.startswith(f"{name}.") for key in tensors)
            buffers[name] = [tensors[f"{name}.{i}"].to(device, copy=True) for i in range(count)]
    return state, buffers


def last_complete_checkpoint(output_dir: str) -> tuple[str | None, list[str]]:
    """The newest ``checkpoint-N`` folder in ``output_dir`` that is complete, and the newer ones skipped.

    A kill while saving leaves a folder with only some files: the Trainer writes the weights, then the optimizer,
    scheduler and RNG states, and ``trainer_state.json`` last (LETSTrainer's own state goes in first). A folder is
    complete when its ``trainer_state.json`` exists and parses. ``(None, [...])`` when there is none.
    """
    if not os.path.isdir(output_dir):
        return None, []
    steps = {name: re.fullmatch(r"checkpoint-(\d+)", name) for name in os.listdir(output_dir)}
    skipped = []
    for name in sorted((n for n, m in steps.items() if m), key=lambda n: int(steps[n].group(1)), reverse=True):
        folder = os.path.join(output_dir, name)
        try:
            with open(os.path.join(folder, "trainer_state.json")) as f:
                json.load(f)
            return folder, skipped
        except (OSError, ValueError):
            skipped.append(folder)
    return None, skipped


def _write_json(obj: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename onto ``path``, so a crash never leaves a half-written file (nor a stray tmp)."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
