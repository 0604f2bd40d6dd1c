"""One frozen record per GLUE task: columns, labels, splits, metrics and the leaderboard file.

Column names follow the Hub dataset `nyu-mll/glue`; ``tsv_columns`` maps them to the header (or, for the
header-less CoLA, the position) of the original GLUE TSVs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GLUE_TASKS", "GlueTask", "get_task"]


@dataclass(frozen=True)
class GlueTask:
    name: str  # as GLUE spells it: "RTE", "STS-B"
    hub_config: str  # nyu-mll/glue config: "rte", "stsb"
    text_columns: tuple[str, ...]  # Hub column names of the text fields
    labels: tuple[str, ...] | None  # label names in id order; None for regression
    metrics: tuple[str, ...]  # keys of the official GLUE metric
    tsv_columns: dict[str, str | int]  # Hub column -> TSV header name (or index, header-less files)
    tsv_label: str | int | None  # TSV header name (or index) of the label
    dev_splits: tuple[str, ...] = ("validation",)  # Hub split names; MNLI has two
    test_splits: tuple[str, ...] = ("test",)
    tsv_files: dict[str, str] = field(default_factory=dict)  # split -> TSV file name, if not "<split>.tsv"
    tsv_header: bool = True  # CoLA train/dev have none
    submission: dict[str, str] = field(default_factory=dict)  # test split -> leaderboard file name

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def main_metric(self) -> str:
        return self.metrics[0] if len(self.metrics) == 1 else "combined_score"


_NLI = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask(
            "CoLA",
            "cola",
            ("sentence",),
            ("0", "1"),
            ("matthews_correlation",),
            tsv_columns={"sentence": 3},
            tsv_label=1,
            tsv_header=False,
            submission={"test": "CoLA.tsv"},
        ),
        GlueTask(
            "SST-2",
            "sst2",
            ("sentence",),
            ("0", "1"),
            ("accuracy",),
            tsv_columns={"sentence": "sentence"},
            tsv_label="label",
            submission={"test": "SST-2.tsv"},
        ),
        GlueTask(
            "MRPC",
            "mrpc",
            ("sentence1", "sentence2"),
            ("0", "1"),
            ("accuracy", "f1"),
            tsv_columns={"sentence1": "#1 String", "sentence2": "#2 String"},
            tsv_label="Quality",
            submission={"test": "MRPC.tsv"},
        ),
        GlueTask(
            "STS-B",
            "stsb",
            ("sentence1", "sentence2"),
            None,
            ("pearson", "spearmanr"),
            tsv_columns={"sentence1": "sentence1", "sentence2": "sentence2"},
            tsv_label="score",
            submission={"test": "STS-B.tsv"},
        ),
        GlueTask(
            "QQP",
            "qqp",
            ("question1", "question2"),
            ("0", "1"),
            ("accuracy", "f1"),
            tsv_columns={"question1": "question1", "question2": "question2"},
            tsv_label="is_duplicate",
            submission={"test": "QQP.tsv"},
        ),
        GlueTask(
            "MNLI",
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            tsv_columns={"premise": "sentence1", "hypothesis": "sentence2"},
            tsv_label="gold_label",
            dev_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
            tsv_files={
                "validation_matched": "dev_matched.tsv",
                "validation_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            submission={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"},
        ),
        GlueTask(
            "QNLI",
            "qnli",
            ("question", "sentence"),
            _NLI,
            ("accuracy",),
            tsv_columns={"question": "question", "sentence": "sentence"},
            tsv_label="label",
            submission={"test": "QNLI.tsv"},
        ),
        GlueTask(
            "RTE",
            "rte",
            ("sentence1", "sentence2"),
            _NLI,
            ("accuracy",),
            tsv_columns={"sentence1": "sentence1", "sentence2": "sentence2"},
            tsv_label="label",
            submission={"test": "RTE.tsv"},
        ),
        GlueTask(
            "WNLI",
            "wnli",
            ("sentence1", "sentence2"),
            ("0", "1"),
            ("accuracy",),
            tsv_columns={"sentence1": "sentence1", "sentence2": "sentence2"},
            tsv_label="label",
            submission={"test": "WNLI.tsv"},
        ),
        # The diagnostic set: test-only, predicted with an MNLI model (lets-glue --task_name MNLI --do_predict).
        GlueTask(
            "AX",
            "ax",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            tsv_columns={"premise": "sentence1", "hypothesis": "sentence2"},
            tsv_label=None,
            dev_splits=(),
            tsv_files={"test": "../diagnostic/diagnostic.tsv"},
            submission={"test": "AX.tsv"},
        ),
    ]
}

_ALIASES = {k.lower().replace("-", ""): k for k in GLUE_TASKS} | {"sst2": "SST-2", "stsb": "STS-B"}


def get_task(name: str) -> GlueTask:
    """The task record for ``name`` (any case, with or without the hyphen: "rte", "sts-b", "STSB")."""
    key = _ALIASES.get(name.lower().replace("-", "").replace("_", ""))
    if key is None or key == "AX":
        known = ", ".join(k for k in GLUE_TASKS if k != "AX")
        raise ValueError(f"Unknown GLUE task {name!r}: choose one of {known} (AX predictions come with MNLI).")
    return GLUE_TASKS[key]
