"""What a run leaves for people: the GLUE leaderboard submission files (and, from `lets_hf.history`, re-exported
here, lets_history.csv/png).

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lets_hf.checkpoint import atomic_write
from lets_hf.history import HISTORY_FIELDS, plot_history, write_history_csv

from .tasks import GlueTask

__all__ = [
    "HISTORY_FIELDS",
    "atomic_write",
    "atomic_write_text",
    "plot_history",
    "write_history_csv",
    "write_submission",
]


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


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
