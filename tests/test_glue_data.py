"""Reading GLUE: the real files in ../shared/glue (row counts, labels, quirks) and malformed input."""

import os

import pytest

from glue_runs.data import DataError, load_custom_files, load_glue_dir, read_glue_tsv
from glue_runs.tasks import GLUE_TASKS, get_task

# Official sizes (train, dev, test), shared/glue/SOURCES.md.
SIZES = {
    "CoLA": (8551, 1043, 1063),
    "SST-2": (67349, 872, 1821),
    "MRPC": (3668, 408, 1725),
    "STS-B": (5749, 1500, 1379),
    "RTE": (2490, 277, 3000),
    "WNLI": (635, 71, 146),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_row_counts_and_labels_match_glue(glue_dir, name):
    task = get_task(name)
    data = load_glue_dir(task, glue_dir, with_test=True)
    assert (len(data["train"]), len(data["validation"]), len(data["test"])) == SIZES[name]
    for split in ("train", "validation"):
        labels = data[split]["label"]
        if task.is_regression:
            assert min(labels) >= 0 and max(labels) <= 5
        else:
            assert set(labels) == set(range(task.num_labels))
        assert all(isinstance(t, str) and t for c in task.text_columns for t in data[split][c])
    assert set(data["test"]["label"]) == {-1}
    assert data["test"]["idx"][:3] == [0, 1, 2]


def test_quirks_of_the_original_files(glue_dir):
    mrpc = read_glue_tsv(os.path.join(glue_dir, "MRPC", "train.tsv"), get_task("MRPC"), "train")  # BOM header
    assert mrpc[0]["label"] == 1 and mrpc[0]["sentence1"].startswith("Amrozi accused his brother")
    rte = read_glue_tsv(os.path.join(glue_dir, "RTE", "train.tsv"), get_task("RTE"), "train")
    assert any(s.startswith('"') for s in rte["sentence1"])  # quotes are literal under QUOTE_NONE
    cola = read_glue_tsv(os.path.join(glue_dir, "CoLA", "dev.tsv"), get_task("CoLA"), "validation")
    assert cola[0]["sentence"] == "The sailors rode the breeze clear of the rocks."
    qnli_dev = read_glue_tsv(os.path.join(glue_dir, "QNLI", "dev.tsv"), get_task("QNLI"), "validation")
    assert len(qnli_dev) == 5463 and set(qnli_dev["label"]) == {0, 1}
    ax = read_glue_tsv(os.path.join(glue_dir, "diagnostic", "diagnostic.tsv"), GLUE_TASKS["AX"], "test")
    assert len(ax) == 1104


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(DataError, match=r"train.tsv, line 3: expected 4 tab-separated fields, got 3"):
        read_glue_tsv(path, get_task("RTE"), "train")


def test_missing_column_and_bad_label(tmp_path):
    path = write(tmp_path / "a.tsv", "index\tsentence1\ttext\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"missing column 'sentence2'"):
        read_glue_tsv(path, get_task("RTE"), "train")
    path = write(tmp_path / "b.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"line 2: label 'maybe' is not one of \['entailment', 'not_entailment'\]"):
        read_glue_tsv(path, get_task("RTE"), "train")
    with pytest.raises(DataError, match=r"does not exist: point --glue_dir"):
        read_glue_tsv(str(tmp_path / "nope.tsv"), get_task("RTE"), "train")


def test_unknown_task_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown GLUE task 'RTF'.*CoLA, SST-2, MRPC, STS-B, QQP, MNLI"):
        get_task("RTF")
    assert get_task("sts-b").name == get_task("stsb").name == "STS-B"


def test_custom_csv_files(tmp_path):
    train = write(tmp_path / "train.csv", "sentence1,sentence2,label\na,b,entailment\nc,d,not_entailment\n")
    dev = write(tmp_path / "dev.csv", "sentence1,sentence2,label\ne,f,1\n")
    task, data = load_custom_files(get_task("RTE"), train, dev, None)
    assert data["train"]["label"] == [0, 1] and data["validation"]["label"] == [1]
    bad = write(tmp_path / "bad.csv", "sentence1,sentence2,label\na,b,7\n")
    with pytest.raises(DataError, match=r"label 7 is outside the label set"):
        load_custom_files(get_task("RTE"), bad, None, None)
    nocol = write(tmp_path / "nocol.csv", "premise,label\na,1\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['sentence1', 'sentence2'\]"):
        load_custom_files(get_task("RTE"), nocol, None, None)
    inferred, data = load_custom_files(None, write(tmp_path / "s.csv", "sentence,label\nx,0.5\ny,2.5\n"), None, None)
    assert inferred.is_regression and data["train"]["label"] == [0.5, 2.5]


def test_qqp_layout(tmp_path):
    """QQP is too large for shared/glue; its original headers (id, is_duplicate) are read like the others."""
    write(tmp_path / "QQP" / "train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\tq a\tq b\t1\n")
    write(tmp_path / "QQP" / "dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t3\t4\tq c\tq d\t0\n")
    write(tmp_path / "QQP" / "test.tsv", "id\tquestion1\tquestion2\n0\tq e\tq f\n")
    data = load_glue_dir(get_task("QQP"), str(tmp_path), with_test=True)
    assert data["train"][0] == {"question1": "q a", "question2": "q b", "idx": 5, "label": 1}
    assert data["validation"]["label"] == [0] and data["test"]["idx"] == [0]


def test_hub_source_uses_nyu_mll_glue(monkeypatch):
    """The Hub path, without a network: load_dataset is asked for nyu-mll/glue and the task's config, and the
    splits we need are kept (MNLI's two dev sets; test splits only with predictions)."""
    import datasets

    from glue_runs.data import load_hub

    asked = []

    def fake_load_dataset(path, name=None, **kwargs):
        asked.append((path, name))
        split = datasets.Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [0], "idx": [0]})
        names = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
        return datasets.DatasetDict({n: split for n in names})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dev_only = load_hub(get_task("MNLI"), with_test=False)
    assert list(dev_only) == ["train", "validation_matched", "validation_mismatched"]
    assert len(load_hub(get_task("mnli"), with_test=True)) == 5
    assert asked == [("nyu-mll/glue", "mnli"), ("nyu-mll/glue", "mnli")]


def test_ci_fails_instead_of_skipping_without_glue_files(tmp_path):
    """LETS_REQUIRE_GLUE=1 (set by .ci/run) turns a missing GLUE_DIR from a skip into a failure."""
    import subprocess
    import sys

    test = "tests/test_glue_data.py::test_quirks_of_the_original_files"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = {}
    for require in ("", "1"):
        env = {**os.environ, "GLUE_DIR": str(tmp_path / "missing"), "LETS_REQUIRE_GLUE": require}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        results[require] = (proc.returncode, proc.stdout)
    assert results[""][0] == 0 and "1 skipped" in results[""][1]
    assert results["1"][0] == 1 and "does not hold the GLUE files" in results["1"][1]
