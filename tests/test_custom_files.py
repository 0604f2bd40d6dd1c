"""A user's own --train_file/--validation_file/--test_file: every way they go wrong is one line naming the file, the
row and the fix, exit code 2, and nothing in output_dir (the data is read before a model or a file is touched)."""

import sys

import pytest

from glue_runs.data import load_custom_files
from glue_runs.run_glue import cli
from glue_runs.tasks import get_task

RTE_CSV = "sentence1,sentence2,label\na,b,entailment\nc,d,not_entailment\n"

CASES = {
    # name: (task, {file flag: (file name, content)}, what the error line must say)
    "columns differ between files": (
        "RTE",
        {"train": ("train.csv", RTE_CSV), "validation": ("dev.csv", "premise,hypothesis,label\na,b,entailment\n")},
        "--validation_file {dir}/dev.csv: missing column(s) ['sentence1', 'sentence2']; it has ['premise', "
        "'hypothesis', 'label'] (--train_file has ['sentence1', 'sentence2', 'label']). RTE reads",
    ),
    "no label column": ("RTE", {"train": ("t.csv", "sentence1,sentence2\na,b\n")}, "missing column(s) ['label']"),
    "a missing label value": (
        "RTE",
        {"train": ("t.csv", RTE_CSV + "e,f,\n")},
        "--train_file {dir}/t.csv, line 4: the label is missing; fill it in or remove the row.",
    ),
    "a null label in JSON": (
        "RTE",
        {"train": ("t.jsonl", '{"sentence1": "a", "sentence2": "b", "label": null}\n')},
        "t.jsonl, line 1: the label is missing",
    ),
    "an empty file": ("RTE", {"train": ("t.csv", "")}, "--train_file {dir}/t.csv is empty: it needs a header line"),
    "a header without rows": ("RTE", {"train": ("t.csv", "sentence1,sentence2,label\n")}, "has a header but no rows"),
    "a label outside the task's set": (
        "RTE",
        {"train": ("t.csv", RTE_CSV + "e,f,maybe\n")},
        "t.csv, line 4: label 'maybe' is outside the label set ['entailment', 'not_entailment'] (or ids 0..1).",
    ),
    "a regression label that is not a number": (
        "STS-B",
        {"train": ("t.csv", "sentence1,sentence2,label\na,b,3.2\nc,d,high\n")},
        "t.csv, line 3: label 'high' is not a number (STS-B is a regression task).",
    ),
    "a file that does not exist": ("RTE", {"train": ("nope.csv", None)}, "nope.csv does not exist: check the path"),
    "mixed keys in JSON lines": (
        "RTE",
        {"train": ("t.jsonl", '{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "c", "label": 1}\n')},
        "t.jsonl, line 2: its keys differ from the first object's (sentence1, sentence2, label): missing "
        "['sentence2'], extra []. Give every object the same keys.",
    ),
    "a CSV row with an extra field": (
        "RTE",
        {"train": ("t.csv", RTE_CSV + "e,f,g,entailment\n")},
        "t.csv, line 4: 4 comma-separated fields where the header has 3 (sentence1, sentence2, label). Quote",
    ),
    "invalid JSON": ("RTE", {"train": ("t.jsonl", '{"sentence1": "a",\n')}, "t.jsonl, line 1: not valid JSON"),
    "a null text": (
        "RTE",
        {"train": ("t.json", '[{"sentence1": "a", "sentence2": null, "label": 0}]')},
        "t.json, item 1: column 'sentence2' is null",
    ),
    "another extension": ("RTE", {"train": ("t.tsv", RTE_CSV)}, "t.tsv: use a .csv, .json or .jsonl file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_mistake_is_one_clear_line_and_writes_nothing(monkeypatch, capsys, tmp_path, case):
    task, files, expected = CASES[case]
    argv = ["--model_name_or_path", "unused", "--task_name", task, "--do_train", "--do_eval", "--report_to", "none"]
    for split, (name, content) in files.items():
        if content is not None:
            (tmp_path / name).write_text(content)
        argv += [f"--{split}_file", str(tmp_path / name)]
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["lets-glue", *argv, "--output_dir", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("lets-glue: error: ") and expected.format(dir=tmp_path) in err, err
    assert not out.exists()


def test_good_files_in_every_format_read_alike(tmp_path):
    (tmp_path / "t.csv").write_text(RTE_CSV)
    lines = ['{"sentence1": "a", "sentence2": "b", "label": 0}', '{"sentence1": "c", "sentence2": "d", "label": 1}']
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "t.json").write_text("[" + ",\n".join(lines) + "]")
    (tmp_path / "dev.csv").write_text('idx,sentence1,sentence2,label,extra\n7,"x, y",z,1,ignored\n')
    for name in ("t.csv", "t.jsonl", "t.json"):
        task, data = load_custom_files(get_task("RTE"), str(tmp_path / name), str(tmp_path / "dev.csv"), None)
        assert data["train"]["sentence1"] == ["a", "c"] and data["train"]["label"] == [0, 1]
        assert data["validation"][0] == {"sentence1": "x, y", "sentence2": "z", "label": 1, "idx": 7}
    test = tmp_path / "test.csv"
    test.write_text("sentence1,sentence2\nq,r\n")
    _, data = load_custom_files(get_task("RTE"), str(tmp_path / "t.csv"), None, str(test))
    assert data["test"]["label"] == [-1]
