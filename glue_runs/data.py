"""Load a GLUE task from the Hub, a local GLUE directory (original TSVs) or CSV/JSON files, all into one shape.

Every split becomes a `datasets.Dataset` with the task's Hub text columns, ``label`` (class id, float for STS-B,
-1 where the split has no labels) and ``idx`` (the row's GLUE index, used in submission files).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import replace

import datasets
import numpy as np

from .custom_files import DataError, Row, read_rows
from .tasks import GLUE_TASKS, GlueTask

logger = logging.getLogger(__name__)

__all__ = ["DataError", "flip_labels", "load_custom_files", "load_glue_dir", "load_hub", "read_glue_tsv"]

csv.field_size_limit(10**8)  # QNLI/MNLI hold long paragraphs


def read_glue_tsv(path: str, task: GlueTask, split: str) -> datasets.Dataset:
    """Read one original GLUE TSV with ``csv.QUOTE_NONE`` (GLUE's own reading; quotes are literal characters).

    Handles the BOM of MRPC (``utf-8-sig``), the header-less CoLA train/dev and the label-less test files. Every
    row must have as many fields as the header, and every label must belong to the task's label set.
    """
    if not os.path.isfile(path):
        raise DataError(
            f"{path} does not exist: point --glue_dir (or GLUE_DIR) at the folder that holds "
            f"{task.name}/, in the layout of GLUE's download_glue_data.py."
        )
    labeled = split not in task.test_splits
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    has_header = task.tsv_header or not labeled
    header = rows[0] if has_header else None
    body = rows[1:] if has_header else rows
    width = len(header) if header else len(body[0]) if body else 0
    for n, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != width:
            raise DataError(
                f"{path}, line {n}: expected {width} tab-separated fields, got {len(row)}. Read GLUE "
                "files with csv.QUOTE_NONE; if the file was edited, look for a stray tab or line break."
            )

    def column(spec: str | int, hub_name: str) -> int:
        if header is None:
            return int(spec)
        name = hub_name if isinstance(spec, int) else spec  # CoLA's test file has a header with Hub names
        if name not in header:
            raise DataError(
                f"{path}: missing column {name!r} (header: {header}). Is this the {task.name} "
                f"{split} file of the original GLUE layout?"
            )
        return header.index(name)

    columns = {hub: column(spec, hub) for hub, spec in task.tsv_columns.items()}
    index_col = next((header.index(c) for c in ("index", "id") if header and c in header), None)
    out: dict[str, list] = {c: [row[i] for row in body] for c, i in columns.items()}
    out["idx"] = [int(row[index_col]) if index_col is not None else n for n, row in enumerate(body)]
    if labeled:
        label_col = column(task.tsv_label, "label")
        out["label"] = [
            _parse_label(row[label_col], task, f"{path}, line {n + 1 + has_header}") for n, row in enumerate(body)
        ]
    else:
        out["label"] = [-1.0 if task.is_regression else -1] * len(body)
    return datasets.Dataset.from_dict(out)


def _parse_label(value: str, task: GlueTask, where: str) -> int | float:
    if task.is_regression:
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{where}: label {value!r} is not a number ({task.name} is a regression task).") from None
    if value not in task.labels:
        raise DataError(
            f"{where}: label {value!r} is not one of {list(task.labels)} for {task.name}. Fix the row "
            "or check that the file belongs to this task."
        )
    return task.labels.index(value)


def tsv_path(glue_dir: str, task: GlueTask, split: str) -> str:
    """Where the original GLUE layout keeps ``split`` of ``task`` under ``glue_dir`` (``<TASK>/dev.tsv``, ...)."""
    short = "dev" if split == "validation" else split
    return os.path.normpath(os.path.join(glue_dir, task.name, task.tsv_files.get(split, f"{short}.tsv")))


def load_glue_dir(task: GlueTask, glue_dir: str, with_test: bool) -> datasets.DatasetDict:
    """``train``, the dev split(s) and, with ``with_test``, the test split(s) from ``glue_dir/<TASK>/*.tsv``."""
    if not os.path.isdir(glue_dir):
        raise DataError(
            f"GLUE directory {glue_dir!r} does not exist: pass --glue_dir or set GLUE_DIR to the folder "
            "holding CoLA/, RTE/, ... (see docs/cli.md)."
        )
    splits = ["train", *task.dev_splits, *(task.test_splits if with_test else ())]
    return datasets.DatasetDict({s: read_glue_tsv(tsv_path(glue_dir, task, s), task, s) for s in splits})


def load_hub(task: GlueTask, with_test: bool, cache_dir: str | None = None) -> datasets.DatasetDict:
    """The task from the Hub dataset ``nyu-mll/glue`` (downloaded once, then cached)."""
    raw = datasets.load_dataset("nyu-mll/glue", task.hub_config, cache_dir=cache_dir)
    keep = ["train", *task.dev_splits, *(task.test_splits if with_test else ())]
    return datasets.DatasetDict({s: raw[s] for s in keep if s in raw})


def load_custom_files(
    task: GlueTask | None, train_file: str | None, validation_file: str | None, test_file: str | None
) -> tuple[GlueTask, datasets.DatasetDict]:
    """CSV or JSON(-lines) files. With a task, they need its text columns and ``label`` (ids or label names);
    without one, ``sentence`` or ``sentence1``/``sentence2`` and ``label`` (a float label makes it regression).

    Every problem is a `DataError` naming the file, the row and the fix (`custom_files.read_rows` for the files'
    own shape; here the columns, missing values and labels). Extra columns are ignored; a test file's labels too.
    """
    files = {s: f for s, f in (("train", train_file), ("validation", validation_file), ("test", test_file)) if f}
    read = {split: read_rows(path, f"--{split}_file") for split, path in files.items()}
    if task is None:
        first = "train" if "train" in read else next(iter(read))
        task = _infer_task(*read[first], f"--{first}_file {files[first]}")
    out = {}
    for split, (rows, columns) in read.items():
        where = f"--{split}_file {files[split]}"
        missing = [c for c in (*task.text_columns, *(("label",) if split != "test" else ())) if c not in columns]
        if missing:
            others = "; ".join(f"--{s}_file has {c}" for s, (_, c) in read.items() if s != split)
            raise DataError(
                f"{where}: missing column(s) {missing}; it has {columns}{f' ({others})' if others else ''}. "
                f"{task.name} reads {list(task.text_columns)} and 'label': rename the columns."
            )
        out[split] = datasets.Dataset.from_dict(
            {
                **{c: [_custom_text(row[c], c, f"{where}, {at}") for at, row in rows] for c in task.text_columns},
                "label": [_custom_label(row["label"], task, f"{where}, {at}") for at, row in rows]
                if split != "test"
                else [-1.0 if task.is_regression else -1] * len(rows),
                "idx": [_custom_idx(row, n, f"{where}, {at}") for n, (at, row) in enumerate(rows)],
            }
        )
    return task, datasets.DatasetDict(out)


def _custom_text(value, column: str, where: str) -> str:
    if value is None:
        raise DataError(f"{where}: column {column!r} is null; give every example its text, or remove the row.")
    return str(value)


def _custom_idx(row: dict, n: int, where: str) -> int:
    if "idx" not in row:
        return n
    try:
        return int(row["idx"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: idx {row['idx']!r} is not an integer (it numbers the row in outputs).") from None


def _custom_label(value, task: GlueTask, where: str) -> int | float:
    _require_label(value, where)
    if task.is_regression:
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            raise DataError(f"{where}: label {value!r} is not a number ({task.name} is a regression task).")
        return number
    if isinstance(value, str) and value in task.labels:
        return task.labels.index(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():  # ids read as text (CSV)
        value = int(value)
    if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < task.num_labels:
        return int(value)
    raise DataError(
        f"{where}: label {value!r} is outside the label set {list(task.labels)} (or ids 0..{task.num_labels - 1})."
    )


def _infer_task(rows: list[Row], columns: list[str], where: str) -> GlueTask:
    """A task record for custom files without --task_name: text columns by name, labels from the values."""
    text = ("sentence1", "sentence2") if "sentence1" in columns else ("sentence",)
    if text[0] not in columns or "label" not in columns:
        raise DataError(
            f"{where}: custom files need 'sentence' or 'sentence1'/'sentence2' and 'label' columns (or pass "
            f"--task_name); found {columns}."
        )
    values = [_require_label(row["label"], f"{where}, {at}") for at, row in rows]
    numbers = [_as_number(v) for v in values]
    if any(n is None for n in numbers):  # label names
        labels = tuple(sorted({str(v) for v in values}))
    elif all(n.is_integer() for n in numbers):  # class ids 0..k
        labels = tuple(str(i) for i in range(int(max(numbers)) + 1))
    else:
        labels = None
    metrics = ("pearson", "spearmanr") if labels is None else ("accuracy",)
    return replace(
        GLUE_TASKS["RTE"],
        name="custom",
        hub_config="",
        text_columns=text,
        labels=labels,
        metrics=metrics,
        submission={"test": "custom.tsv"},
    )


def _require_label(value, where: str):
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: the label is missing; fill it in or remove the row.")
    return value


def _as_number(value) -> float | None:
    try:
        return None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def flip_labels(
    train: datasets.Dataset, task: GlueTask, fraction: float, seed: int
) -> tuple[datasets.Dataset, list[int]]:
    """Symmetric label noise: ``round(fraction * len(train))`` examples, drawn with ``seed``, get another class,
    uniformly among the task's other labels. Returns the noisy dataset and the ``idx`` of the flipped rows.

    Only for the training split, before the LETS held-out carve (so the held-out data is as noisy as the training
    data, as it would be in a real noisy dataset); dev and test sets stay clean. The draw uses its own generator:
    the same seed flips the same rows whatever else the run does.
    """
    if task.is_regression:
        raise DataError(
            f"--label_noise flips class labels, and {task.name} is a regression task: drop --label_noise "
            "(or use a classification task)."
        )
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"--label_noise {fraction} is not a fraction in [0, 1): e.g. 0.2 flips 20% of the labels.")
    rng = np.random.default_rng(seed)
    count = round(fraction * len(train))
    rows = np.sort(rng.choice(len(train), size=count, replace=False))
    labels = np.asarray(train["label"], dtype=np.int64)
    shift = rng.integers(1, task.num_labels, size=count)  # 1..k-1 steps round the classes: never the same class
    labels[rows] = (labels[rows] + shift) % task.num_labels
    noisy = train.remove_columns("label").add_column("label", labels.tolist()).cast(train.features)
    idx = train["idx"]
    return noisy, [int(idx[i]) for i in rows]
