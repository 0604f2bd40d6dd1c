"""GLUE metrics under the official keys, against values computed by hand."""

import math

import numpy as np
import pytest

from glue_runs.metrics import glue_metrics, predictions_from_logits
from glue_runs.tasks import get_task


def test_matthews_by_hand():
    y, p = np.array([1, 1, 1, 0, 0, 0]), np.array([1, 1, 0, 0, 0, 1])  # tp=2 tn=2 fp=1 fn=1
    expected = (2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3)
    assert glue_metrics(get_task("CoLA"), p, y) == pytest.approx({"matthews_correlation": expected})


def test_accuracy_f1_and_combined_by_hand():
    y, p = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])  # tp=2 fp=1 fn=1
    values = glue_metrics(get_task("MRPC"), p, y)
    assert values == pytest.approx({"accuracy": 0.6, "f1": 2 / 3, "combined_score": (0.6 + 2 / 3) / 2})


def test_pearson_spearman_by_hand():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 5.0])
    yc, pc = y - y.mean(), p - p.mean()
    pearson = (yc * pc).sum() / math.sqrt((yc**2).sum() * (pc**2).sum())
    spearman = 1 - 6 * (0 + 1 + 1 + 0) / (4 * (16 - 1))  # ranks 1,2,3,4 vs 1,3,2,4
    values = glue_metrics(get_task("STS-B"), p, y)
    assert values == pytest.approx(
        {"pearson": pearson, "spearmanr": spearman, "combined_score": (pearson + spearman) / 2}
    )


def test_predictions_from_logits():
    assert predictions_from_logits(get_task("RTE"), np.array([[0.1, 0.9], [2.0, -1.0]])).tolist() == [1, 0]
    assert predictions_from_logits(get_task("STS-B"), np.array([[3.5], [1.0]])).tolist() == [3.5, 1.0]
