"""GLUE metrics with scikit-learn/scipy, under the keys of the official GLUE metric (the `evaluate` package
cannot load metrics offline)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from .tasks import GlueTask

__all__ = ["glue_metrics", "predictions_from_logits"]


def predictions_from_logits(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax) for classification, the squeezed score for regression."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return np.squeeze(logits, axis=-1) if task.is_regression else np.argmax(logits, axis=-1)


def glue_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's GLUE metrics, plus ``combined_score`` (their mean) where there are two."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    values = {}
    for key in task.metrics:
        if key == "accuracy":
            values[key] = float((predictions == labels).mean())
        elif key == "f1":
            values[key] = float(f1_score(labels, predictions))
        elif key == "matthews_correlation":
            values[key] = float(matthews_corrcoef(labels, predictions))
        elif key == "pearson":
            values[key] = float(pearsonr(predictions, labels)[0])
        elif key == "spearmanr":
            values[key] = float(spearmanr(predictions, labels)[0])
    if len(values) > 1:
        values["combined_score"] = float(np.mean(list(values.values())))
    return values
