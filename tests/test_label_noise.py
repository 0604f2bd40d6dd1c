"""`--label_noise`: a seeded fraction of the *training* labels flipped to another class before the held-out carve;
dev sets untouched; what was flipped recorded in all_results.json; regression tasks and bad fractions refused."""

import json
import sys
from collections import Counter

import datasets
import pytest
from test_cli import glue_argv

from glue_runs.data import DataError, flip_labels, load_glue_dir
from glue_runs.run_glue import cli, run
from glue_runs.tasks import get_task


def labelled(n, num_labels):
    return datasets.Dataset.from_dict(
        {"idx": [100 + i for i in range(n)], "label": [i % num_labels for i in range(n)]}
    )


def changed(before, after):
    return [row for row, (a, b) in enumerate(zip(before["label"], after["label"])) if a != b]


def test_flip_labels_flips_exactly_the_fraction_to_other_classes():
    mnli = get_task("MNLI")
    clean = labelled(1000, 3)
    noisy, flipped = flip_labels(clean, mnli, 0.2, seed=0)
    rows = changed(clean, noisy)
    assert len(rows) == len(flipped) == 200
    assert flipped == [100 + r for r in rows]  # the idx of exactly the rows whose label changed
    assert set(noisy["label"]) == {0, 1, 2}
    # Symmetric noise: a flipped label goes to each of the two other classes about half the time.
    moves = Counter((clean["label"][r] - noisy["label"][r]) % 3 for r in rows)
    assert set(moves) == {1, 2} and abs(moves[1] - moves[2]) < 60
    assert noisy.column_names == clean.column_names and noisy["idx"] == clean["idx"]


def test_flip_labels_is_seeded():
    rte = get_task("RTE")
    clean = labelled(300, 2)
    assert flip_labels(clean, rte, 0.1, seed=3)[1] == flip_labels(clean, rte, 0.1, seed=3)[1]
    assert flip_labels(clean, rte, 0.1, seed=3)[1] != flip_labels(clean, rte, 0.1, seed=4)[1]
    same, none = flip_labels(clean, rte, 0.0, seed=3)
    assert none == [] and same["label"] == clean["label"]


def test_flip_labels_keeps_a_hub_classlabel_feature():
    """The Hub's nyu-mll/glue has `label: ClassLabel(names=[...])`; the noisy column must keep it (names, int64)."""
    features = datasets.Features({"idx": datasets.Value("int32"), "label": datasets.ClassLabel(names=["no", "yes"])})
    clean = datasets.Dataset.from_dict(
        {"idx": list(range(50)), "label": [i % 2 for i in range(50)]}, features=features
    )
    noisy, flipped = flip_labels(clean, get_task("RTE"), 0.2, seed=0)
    assert noisy.features == features and noisy.features["label"].names == ["no", "yes"]
    assert len(flipped) == 10 and len(changed(clean, noisy)) == 10


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_flip_labels_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(DataError, match=r"is not a fraction in \[0, 1\)"):
        flip_labels(labelled(10, 2), get_task("RTE"), fraction, seed=0)


def test_lets_glue_flips_training_labels_only_and_records_them(glue_dir, tiny_roberta, tmp_path):
    out = tmp_path / "mrpc"
    argv = glue_argv(tiny_roberta, "MRPC", glue_dir, out, max_train_samples=200, max_eval_samples=40, max_steps=1)
    _, trainer = run(argv + ["--label_noise", "0.25", "--seed", "5"])
    summary = json.loads((out / "all_results.json").read_text())["label_noise"]
    assert summary["fraction"] == 0.25 and summary["seed"] == 5
    assert summary["flipped"] == len(summary["flipped_idx"]) == 50 and summary["train_examples"] == 200

    clean = load_glue_dir(get_task("MRPC"), glue_dir, with_test=False)
    truth = dict(zip(clean["train"]["idx"], clean["train"]["label"]))
    seen = {}
    for part in (trainer.train_dataset, trainer.lets_dataset):  # the carve comes after the flip: both are noisy
        seen |= dict(zip(part["idx"], part["labels"]))
    assert len(seen) == 200 and len(trainer.lets_dataset) > 0
    assert sorted(i for i, y in seen.items() if y != truth[i]) == sorted(summary["flipped_idx"])
    dev = clean["validation"].select(range(40))
    assert trainer.eval_dataset["idx"] == dev["idx"] and trainer.eval_dataset["labels"] == dev["label"]


def test_lets_glue_refuses_label_noise_on_regression(glue_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "stsb"
    argv = glue_argv("packaged:minilm-l6", "STS-B", glue_dir, out, max_steps=1, label_noise=0.2)
    monkeypatch.setattr(sys, "argv", ["lets-glue", *argv])
    with pytest.raises(SystemExit) as stop:
        cli()
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "lets-glue: error: --label_noise flips class labels, and STS-B is a regression task: drop --label_noise "
        "(or use a classification task)."
    )
    assert not out.exists()
