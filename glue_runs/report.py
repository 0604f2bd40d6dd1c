"""What a run leaves for people: lets_history.csv/png and the GLUE leaderboard submission files.

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np

from lets_hf.checkpoint import atomic_write

from .tasks import GlueTask

__all__ = [
    "HISTORY_FIELDS",
    "atomic_write",
    "atomic_write_text",
    "plot_history",
    "write_history_csv",
    "write_submission",
]

HISTORY_FIELDS = ("step", "rho", "gap", "hypergradient", "train_loss", "heldout_loss", "guard_tripped")


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_history_csv(history: Sequence[dict], path: str) -> None:
    """One row per radius hyper-step: step, rho, gap, hypergradient, train loss, held-out loss, guard tripped."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


def plot_history(history: Sequence[dict], path: str, title: str, initial_rho: float) -> None:
    """Two panels over training steps: the radius rho, and the generalisation gap l(V) - l(B')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax_rho, ax_gap) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    ax_rho.plot(steps, [h["rho"] for h in history], color="tab:blue")
    ax_rho.axhline(initial_rho, color="grey", lw=0.8, ls="--", label=f"initial rho = {initial_rho:g}")
    ax_rho.set_ylabel("rho")
    ax_rho.legend(loc="best")
    ax_rho.set_title(title)
    gaps = np.array([h["gap"] for h in history], dtype=float)
    ax_gap.plot(steps, gaps, color="tab:orange", alpha=0.35, label="gap per hyper-step")
    if len(gaps) >= 5:
        k = max(5, len(gaps) // 20)
        smooth = np.convolve(gaps, np.ones(k) / k, mode="valid")
        ax_gap.plot(steps[k - 1 :], smooth, color="tab:red", label=f"moving mean ({k})")
    ax_gap.axhline(0, color="grey", lw=0.8)
    ax_gap.set_ylabel("held-out - train loss")
    ax_gap.set_xlabel("optimizer step")
    ax_gap.legend(loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_submission(task: GlueTask, indices: Sequence[int], predictions: np.ndarray, path: str) -> None:
    """GLUE leaderboard format: ``index<TAB>prediction``, label names as GLUE expects, STS-B scores in [0, 5]."""

    def fmt(p) -> str:
        return f"{float(np.clip(p, 0.0, 5.0)):.3f}" if task.is_regression else task.labels[int(p)]

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("index\tprediction\n")
            for i, p in zip(indices, predictions):
                f.write(f"{int(i)}\t{fmt(p)}\n")

    atomic_write(path, write)
