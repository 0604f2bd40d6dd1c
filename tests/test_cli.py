"""`lets-glue` end to end on real GLUE files (MiniLM, a tiny RoBERTa), the MNLI/AX layout, and bad input."""

import csv
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from glue_runs.run_glue import cli, parse, run

FAST = [
    "--do_train",
    "--do_eval",
    "--report_to",
    "none",
    "--use_cpu",
    "true",
    "--max_seq_length",
    "64",
    "--save_strategy",
    "no",
    "--logging_steps",
    "1",
    "--lets_interval",
    "1",
    "--disable_tqdm",
    "true",
]


def glue_argv(model, task, glue_dir, out, *extra, **flags):
    """Flags for one fast run; ``flags`` become ``--key value``."""
    argv = ["--model_name_or_path", str(model), "--task_name", task, "--glue_dir", str(glue_dir)]
    argv += ["--output_dir", str(out), *FAST, *extra]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    return argv


def read_tsv(path):
    with open(path) as f:
        return list(csv.reader(f, delimiter="\t"))


def test_minilm_rte_end_to_end(glue_dir, tmp_path):
    out = tmp_path / "rte"
    results, trainer = run(
        glue_argv(
            "packaged:minilm-l6",
            "RTE",
            glue_dir,
            out,
            "--do_predict",
            max_train_samples=80,
            max_eval_samples=40,
            max_predict_samples=30,
            max_steps=4,
            per_device_train_batch_size=8,
        )
    )
    for name in (
        "all_results.json",
        "eval_results.json",
        "train_results.json",
        "trainer_state.json",
        "lets_history.csv",
        "lets_history.png",
        "RTE.tsv",
        "model.safetensors",
    ):
        assert (out / name).is_file(), name
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert 0 <= evaluation["eval_accuracy"] <= 1 and evaluation["eval_samples"] == 40
    history = read_tsv(out / "lets_history.csv")
    assert history[0] == ["step,rho,gap,hypergradient,train_loss,heldout_loss,guard_tripped"]
    assert [int(r[0].split(",")[0]) for r in history[1:]] == [2, 3, 4]
    assert {r[0].split(",")[-1] for r in history[1:]} <= {"True", "False"}
    assert (out / "lets_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    submission = read_tsv(out / "RTE.tsv")
    assert submission[0] == ["index", "prediction"] and len(submission) == 31
    assert {p for _, p in submission[1:]} <= {"entailment", "not_entailment"}
    summary = json.loads((out / "all_results.json").read_text())
    held = set(summary["lets_heldout"]["heldout_idx"])
    assert summary["lets_heldout"]["heldout_source"] == "train" and len(held) == 8
    assert not held & set(trainer.train_dataset["idx"]) and len(trainer.train_dataset) == 72
    assert summary["train_final_rho"] == pytest.approx(trainer.rho) and trainer.rho != trainer.args.sam_rho
    assert summary["train_lets_guard_trips"] == trainer.guard.trips


def test_tiny_roberta_stsb_with_dev_heldout(glue_dir, tiny_roberta, tmp_path):
    out = tmp_path / "stsb"
    results, trainer = run(
        glue_argv(
            tiny_roberta,
            "STS-B",
            glue_dir,
            out,
            "--do_predict",
            max_train_samples=64,
            max_eval_samples=60,
            max_predict_samples=20,
            max_steps=3,
            per_device_train_batch_size=8,
            lets_heldout_source="dev",
            sam_variant="asam",
            sam_rho=0.5,
        )
    )
    assert {"eval_pearson", "eval_spearmanr", "eval_combined_score"} <= set(results)
    held = set(trainer.lets_dataset["idx"])
    assert len(held) == 30 and results["eval_samples"] == 30
    assert not held & set(trainer.eval_dataset["idx"])  # reported metrics never include rho's examples
    assert len(trainer.train_dataset) == 64  # nothing carved off train
    scores = [float(p) for _, p in read_tsv(out / "STS-B.tsv")[1:]]
    assert len(scores) == 20 and all(0 <= s <= 5 for s in scores)


def test_cheap_sam_with_lets_from_the_command_line(glue_dir, tiny_roberta, tmp_path):
    """--sam_every 2 --sam_reuse looksam with LETS at interval 2 (and the clipped signum radius step): 6 steps, the
    radius moved, and the LookSAM buffer is what the checkpoint holds besides the radius state."""
    out = tmp_path / "looksam"
    results, trainer = run(
        glue_argv(
            tiny_roberta,
            "RTE",
            glue_dir,
            out,
            max_train_samples=64,
            max_eval_samples=16,
            max_steps=6,
            per_device_train_batch_size=8,
            sam_every=2,
            sam_reuse="looksam",
            lets_interval=2,
            lets_lr=0.2,
            lets_horizon="interval",
            lets_optimizer="signum",
            lets_clip=3,
            save_strategy="steps",
            save_steps=3,
        )  # fmt: skip
    )
    assert trainer.args.sam_every == 2 and trainer.args.sam_reuse == "looksam"
    assert [h["step"] for h in trainer.lets_history] == [2, 4, 6]
    assert results["train_final_rho"] != 0.01
    names = load_file(str(out / "checkpoint-3" / "lets_curvature.safetensors"))
    assert {k.split(".")[0] for k in names} >= {"v"}  # g_v of step 2, reused by step 3


def test_carve_heldout_always_gives_baselines_the_lets_training_set(glue_dir, tiny_roberta, tmp_path):
    def train_idx(name, *extra, **flags):
        argv = glue_argv(tiny_roberta, "RTE", glue_dir, tmp_path / name, *extra, max_train_samples=50, max_steps=1)
        _, trainer = run([a for a in argv if a != "--do_eval"] + [f"--{k}={v}" for k, v in flags.items()])
        return sorted(trainer.train_dataset["idx"]), json.loads((tmp_path / name / "all_results.json").read_text())

    lets, lets_summary = train_idx("lets", lets="true")
    fixed, fixed_summary = train_idx("fixed", "--carve_heldout_always", lets="false")
    plain, _ = train_idx("plain", lets="false")
    adamw, _ = train_idx("adamw", "--carve_heldout_always", sam_variant="none")
    assert len(lets) == 50 - lets_summary["lets_heldout"]["heldout_size"] < 50
    assert fixed == lets and adamw == lets
    assert len(plain) == 50
    assert fixed_summary["lets_heldout"]["heldout_source"] == "train (carved, unused: LETS is off)"


MNLI_PARSES = (
    "promptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
)


def fake_mnli(root, n=24):
    """A small MNLI + diagnostic folder with the original headers (the real MNLI files are not available here)."""
    labels = ["entailment", "neutral", "contradiction"]
    (root / "MNLI").mkdir(parents=True)
    (root / "diagnostic").mkdir()
    rows = [(f"a cat sat {i}", f"a dog ran {i % 5}", labels[i % 3]) for i in range(n)]
    head = f"index\t{MNLI_PARSES}\tsentence1\tsentence2"
    (root / "MNLI" / "train.tsv").write_text(
        head
        + "\tlabel1\tgold_label\n"
        + "".join(f"{i}\t1\t2\tfiction\t(\t(\t(\t(\t{a}\t{b}\t{y}\t{y}\n" for i, (a, b, y) in enumerate(rows))
    )
    for split in ("dev_matched", "dev_mismatched"):
        (root / "MNLI" / f"{split}.tsv").write_text(
            head
            + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
            + "".join(
                f"{i}\t1\t2\tfiction\t(\t(\t(\t(\t{a}\t{b}\t{y}\t{y}\t{y}\t{y}\t{y}\t{y}\n"
                for i, (a, b, y) in enumerate(rows[:9])
            )
        )
    for split in ("test_matched", "test_mismatched"):
        (root / "MNLI" / f"{split}.tsv").write_text(
            head
            + "\n"
            + "".join(f"{i}\t1\t2\tfiction\t(\t(\t(\t(\t{a}\t{b}\n" for i, (a, b, _) in enumerate(rows[:7]))
        )
    (root / "diagnostic" / "diagnostic.tsv").write_text(
        "index\tsentence1\tsentence2\n" + "".join(f"{i}\t{a}\t{b}\n" for i, (a, b, _) in enumerate(rows[:5]))
    )


def test_mnli_matched_mismatched_and_ax(tiny_roberta, tmp_path):
    fake_mnli(tmp_path / "glue")
    out = tmp_path / "mnli"
    results, _ = run(
        glue_argv(
            tiny_roberta, "MNLI", tmp_path / "glue", out, "--do_predict", max_steps=2, per_device_train_batch_size=4
        )
    )
    assert {"eval_accuracy", "eval_accuracy_mm", "eval_samples", "eval_samples_mm"} <= set(results)
    for name, rows in (("MNLI-m.tsv", 7), ("MNLI-mm.tsv", 7), ("AX.tsv", 5)):
        table = read_tsv(out / name)
        assert len(table) == rows + 1 and {p for _, p in table[1:]} <= {"entailment", "neutral", "contradiction"}


# ---- bad input: one line, exit code 2, nothing written --------------------------------------------------------------
def run_cli(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["lets-glue", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    return err


def bad_glue_dir(root, row):
    (root / "RTE").mkdir(parents=True)
    body = "index\tsentence1\tsentence2\tlabel\n" + "".join(f"{i}\ta {i}\tb\tentailment\n" for i in range(6)) + row
    for split in ("train", "dev"):
        (root / "RTE" / f"{split}.tsv").write_text(body)
    return str(root)


@pytest.mark.parametrize(
    "case,match",
    [
        ("task", "Unknown GLUE task 'RTF'"),
        ("missing_dir", "does not exist: pass --glue_dir or set GLUE_DIR"),
        ("malformed", "train.tsv, line 8: expected 4 tab-separated fields, got 5"),
        ("label", "line 8: label 'yes' is not one of ['entailment', 'not_entailment']"),
        ("rho", "sam_rho=-1.0 must be >= 0"),
        ("deepspeed", "DeepSpeed is not supported by LETSTrainer"),
        ("sam_every", "lets_interval=1 must be a multiple of sam_every=3: a hyper-step needs a perturbed step"),
    ],
)
def test_bad_input_is_one_clear_line(monkeypatch, capsys, tmp_path, tiny_roberta, case, match):
    out = tmp_path / "out"
    glue = {
        "malformed": lambda: bad_glue_dir(tmp_path / "g", "6\ta\tb\tentailment\textra\n"),
        "label": lambda: bad_glue_dir(tmp_path / "g", "6\ta\tb\tyes\n"),
    }.get(case, lambda: str(tmp_path))()
    task = "RTF" if case == "task" else "RTE"
    argv = glue_argv(tiny_roberta, task, tmp_path / "nope" if case == "missing_dir" else glue, out)
    if case == "rho":
        argv += ["--sam_rho", "-1"]
    if case == "sam_every":
        argv += ["--sam_every", "3"]
    if case == "deepspeed":
        (tmp_path / "ds.json").write_text("{}")
        argv += ["--deepspeed", str(tmp_path / "ds.json")]
    err = run_cli(monkeypatch, capsys, argv)
    assert err.startswith("lets-glue: error: ") and len(err.splitlines()) == 1 and match in err
    assert not out.exists() or not any(out.iterdir())


def test_output_dir_with_another_run_is_refused(monkeypatch, capsys, tmp_path, tiny_roberta, glue_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "all_results.json").write_text('{"eval_accuracy": 0.9}')
    err = run_cli(monkeypatch, capsys, glue_argv(tiny_roberta, "RTE", glue_dir, out))
    assert "already holds another run's results (all_results.json)" in err and "--overwrite_output_dir" in err
    assert (out / "all_results.json").read_text() == '{"eval_accuracy": 0.9}'


def test_console_script_and_module_entry_points(tmp_path):
    """Both entry points, one process each: the console script refuses a bad task in one line, the module prints
    the help with the SAM and LETS options."""
    exe = os.path.join(os.path.dirname(sys.executable), "lets-glue")
    bad = ["--model_name_or_path", "x", "--task_name", "QQQ", "--output_dir", str(tmp_path)]
    proc = subprocess.run([exe, *bad], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "lets-glue: error: Unknown GLUE task 'QQQ'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "glue_runs", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    flags = ("--task_name", "--sam_rho", "--lets_interval", "--lets_guard_patience", "--lets_guard_threshold")
    for flag in (*flags, "--sam_every", "--sam_reuse", "--looksam_alpha", "--lets_clip"):
        assert flag in proc.stdout
    assert "within 5 percent below it" in proc.stdout


def test_none_turns_an_optional_setting_off_on_the_command_line_and_in_a_config(tmp_path):
    """``--lets_guard_tolerance None`` (the documented way to turn the guard off) used to be refused as a float, and
    a config's ``lets_guard_tolerance: null`` was dropped, which silently kept the guard on."""
    required = ["--model_name_or_path", "m", "--task_name", "RTE", "--output_dir", str(tmp_path)]
    _, _, args = parse([*required, "--lets_guard_tolerance", "None", "--lets_rho_max", "0.5", "--report_to", "none"])
    assert args.lets_guard_tolerance is None and args.lets_rho_max == 0.5 and args.lets_guard_patience == 10
    assert args.report_to == []  # the string "none" (no reporting), which the Trainer turns into an empty list
    config = tmp_path / "run.yaml"
    config.write_text("model_name_or_path: m\ntask_name: RTE\nlets_guard_tolerance: null\nlets_guard_patience: null\n")
    _, _, args = parse([str(config), "--output_dir", str(tmp_path)])
    assert args.lets_guard_tolerance is None and args.lets_guard_patience is None
    with pytest.raises(SystemExit):  # a setting that cannot be None still says so (argparse: invalid float value)
        parse([*required, "--sam_rho", "None"])


def test_auto_reads_the_local_glue_files_when_they_hold_the_task_else_the_hub(monkeypatch, tmp_path, glue_dir):
    """The demo config names no data source: GLUE_DIR is used when it holds the task, the Hub otherwise; a folder
    named with --glue_dir is always meant (a wrong path is an error, test_bad_input_is_one_clear_line)."""
    from glue_runs import run_glue

    class FromHub(Exception):
        pass

    def hub(task, with_test):
        raise FromHub(task.name)

    monkeypatch.setattr(run_glue, "load_hub", hub)
    args = type("Args", (), {"do_predict": False})()
    data = run_glue.DataArguments(task_name="RTE", max_train_samples=8, max_eval_samples=8)
    for folder in (str(tmp_path), None):  # a GLUE_DIR without the task, and none at all
        monkeypatch.setenv("GLUE_DIR", folder) if folder else monkeypatch.delenv("GLUE_DIR", raising=False)
        with pytest.raises(FromHub, match="RTE"):
            run_glue.load_data(data, args)
    monkeypatch.setenv("GLUE_DIR", glue_dir)
    task, raw, where = run_glue.load_data(data, args)
    assert "GLUE TSV files under" in where and len(raw["train"]) == 8
    monkeypatch.delenv("GLUE_DIR")
    named = run_glue.DataArguments(task_name="RTE", glue_dir=str(tmp_path / "nope"))
    with pytest.raises(run_glue.DataError, match="does not exist"):
        run_glue.load_data(named, args)
