"""What the radius did, for people: `LETSTrainer.lets_history` as ``lets_history.csv`` and ``lets_history.png``.

Both are written to a temporary name and renamed, so an interrupted run never leaves half a file. The plot needs
matplotlib (``pip install matplotlib``, or the ``glue`` extra); the CSV needs nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence

import numpy as np

from .checkpoint import atomic_write

__all__ = ["HISTORY_FIELDS", "plot_history", "write_history_csv"]

HISTORY_FIELDS = ("step", "rho", "gap", "hypergradient", "train_loss", "heldout_loss", "guard_tripped")


def write_history_csv(history: Sequence[dict], path: str) -> None:
    """One row per radius hyper-step: step, rho, gap, hypergradient, train loss, held-out loss, guard tripped (and
    sigma, for a run with a loss budget).

    Args:
        history: `LETSTrainer.lets_history`.
        path: the CSV file to write.
    """

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            budget = ("sigma",) if history and "sigma" in history[0] else ()  # a loss-budget run's learned sigma
            writer = csv.DictWriter(f, fieldnames=(*HISTORY_FIELDS, *budget), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


def plot_history(history: Sequence[dict], path: str, title: str = "LETS", initial_rho: float | None = None) -> None:
    """Two panels over training steps: the radius rho (log scale), and the gap l(V) - l(B') with its moving mean.

    Reading it: rho falling means the held-out loss asked for less perturbation; a flat line at a bound means the
    hypergradient kept one sign (see the troubleshooting page); the gap opening is the model starting to memorise.

    Args:
        history: `LETSTrainer.lets_history`.
        path: the PNG file to write.
        title: the plot's title.
        initial_rho: drawn as a dashed line (``sam_rho``); None: not drawn.
    """
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plot_history needs matplotlib: pip install matplotlib (or lets_hf[glue])") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (ax_rho, ax_gap) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    ax_rho.plot(steps, [h["rho"] for h in history], color="tab:blue", label="rho")
    if initial_rho is not None:
        ax_rho.axhline(initial_rho, color="grey", lw=0.8, ls="--", label=f"initial rho = {initial_rho:g}")
    ax_rho.set_yscale("log")
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
