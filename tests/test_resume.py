"""Re-running a killed `lets-glue` command resumes it: real processes, killed with SIGKILL after a checkpoint and
while writing one, as one process and as two `torchrun` ranks; the resumed run must equal an uninterrupted one
(weights, rho, lets_history.csv).

The held-out set (6 examples) is drawn in batches of 2 (3 a held-out epoch in one process, 2 of global batch 4 with
two ranks), so that a resume lands mid-way into a later held-out epoch, where a replay of the wrong epoch's
permutation gives other held-out losses: a held-out set of one batch has the same mean loss in every order, and
cannot tell."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_cli import glue_argv

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_worker.py")


PYTHON = [sys.executable]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def lets_glue(mode, step, argv, launcher=PYTHON):
    """Run the command in fresh processes (one thread each, so runs are comparable); returns (exit code, its log)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [*launcher, WORKER, mode, str(step), "--", *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def command(tiny_roberta, glue_dir, out, *extra):
    return glue_argv(
        tiny_roberta, "RTE", glue_dir, out, *extra, max_train_samples=64, max_eval_samples=16, max_steps=8,
        per_device_train_batch_size=8, save_strategy="steps", save_steps=2, lets_interval=1, lets_lr=0.2,
        lets_batch_size=2,
    )  # fmt: skip


def outcome(out):
    with open(out / "lets_history.csv") as f:
        history = [{k: v if k == "guard_tripped" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    with open(out / "all_results.json") as f:
        rho = json.load(f)["train_final_rho"]
    return load_file(out / "model.safetensors"), rho, history


def assert_same_run(resumed, reference):
    weights, rho, history = resumed
    ref_weights, ref_rho, ref_history = reference
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)
    assert rho == pytest.approx(ref_rho, rel=1e-6) and len(history) == len(ref_history) == 7
    for row, ref in zip(history, ref_history):
        numbers = lambda r: {k: v for k, v in r.items() if k != "guard_tripped"}  # noqa: E731
        assert row["guard_tripped"] == ref["guard_tripped"]
        assert numbers(row) == numbers(ref)  # to the last bit: the CSV a resumed run writes is the same file


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_roberta, glue_dir):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    code, log = lets_glue("none", 0, command(tiny_roberta, glue_dir, out))
    assert code == 0, log[-3000:]
    return outcome(out)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, tiny_roberta, glue_dir):
    """The command killed with SIGKILL once checkpoint-6 is complete (5 held-out batches drawn); each test resumes a
    copy of its output folder."""
    out = tmp_path_factory.mktemp("killed") / "out"
    code, _ = lets_glue("after-save", 6, command(tiny_roberta, glue_dir, out))
    assert code == -9 and (out / "checkpoint-6" / "trainer_state.json").is_file()
    assert json.loads((out / "checkpoint-6" / "lets_state.json").read_text())["heldout"] == {"epoch": 1, "position": 2}
    assert not (out / "all_results.json").exists()
    return out


def test_a_killed_run_resumes_when_the_same_command_is_run_again(tmp_path, tiny_roberta, glue_dir, reference, killed):
    out = tmp_path / "out"
    shutil.copytree(killed, out)
    code, log = lets_glue("none", 0, command(tiny_roberta, glue_dir, out))
    assert code == 0, log[-3000:]
    assert f"Resuming from {out / 'checkpoint-6'}, the last checkpoint in output_dir" in log
    assert_same_run(outcome(out), reference)


def test_a_checkpoint_half_written_by_a_kill_is_skipped(tmp_path, tiny_roberta, glue_dir, reference):
    out = tmp_path / "out"
    code, _ = lets_glue("during-save", 4, command(tiny_roberta, glue_dir, out))
    half = out / "checkpoint-4"
    assert code == -9 and (half / "lets_state.json").is_file() and not (half / "trainer_state.json").exists()
    code, log = lets_glue("none", 0, command(tiny_roberta, glue_dir, out))
    assert code == 0, log[-3000:]
    assert f"{half} was left half-written (no complete trainer_state.json): removed." in log
    assert f"Resuming from {out / 'checkpoint-2'}" in log
    assert_same_run(outcome(out), reference)


def test_overwrite_output_dir_starts_afresh(tmp_path, tiny_roberta, glue_dir, reference, killed):
    out = tmp_path / "out"
    shutil.copytree(killed, out)
    code, log = lets_glue("none", 0, command(tiny_roberta, glue_dir, out, "--overwrite_output_dir", "true"))
    assert code == 0 and "Resuming" not in log and "removed 3 checkpoint(s) of the earlier run" in log, log[-3000:]
    assert_same_run(outcome(out), reference)


def test_a_killed_two_rank_run_resumes_when_the_same_command_is_run_again(tmp_path, tiny_roberta, glue_dir):
    """Both torchrun ranks (CPU, gloo) are killed once checkpoint-6 is complete (held-out epoch 2, one of its two
    batches drawn); the same command resumes both."""
    argv = lambda out: command(tiny_roberta, glue_dir, out)  # noqa: E731
    code, log = lets_glue("none", 0, argv(tmp_path / "ref"), TORCHRUN)
    assert code == 0, log[-3000:]
    with open(tmp_path / "ref" / "all_results.json") as f:  # 58 examples after the carve, global batch 2 x 8:
        assert json.load(f)["epoch"] == 2.0  # 4 steps an epoch (one process, batch 8: 8 steps, epoch 1.0)
    out = tmp_path / "out"
    code, _ = lets_glue("after-save", 6, argv(out), TORCHRUN)
    assert code != 0 and (out / "checkpoint-6" / "trainer_state.json").is_file()
    assert json.loads((out / "checkpoint-6" / "lets_state.json").read_text())["heldout"] == {"epoch": 2, "position": 1}
    assert not (out / "all_results.json").exists() and not (out / "checkpoint-8").exists()
    code, log = lets_glue("none", 0, argv(out), TORCHRUN)
    assert code == 0, log[-3000:]
    assert f"Resuming from {out / 'checkpoint-6'}, the last checkpoint in output_dir" in log
    assert_same_run(outcome(out), outcome(tmp_path / "ref"))


def test_loaded_buffers_are_aligned_copies(tmp_path):
    """safetensors hands back views into one buffer at offsets that need not be 64-byte aligned; a CPU's vectorised
    dot rounds its last bits by alignment, so a resumed run's hypergradients differed in the 7th digit."""
    from lets_hf.checkpoint import load_lets_state, save_lets_state

    u = [torch.randn(7, dtype=torch.float32), torch.randn(13, dtype=torch.float32), torch.randn(5, 3)]
    save_lets_state(str(tmp_path), {"radius": {}}, {"u": u, "z": None})
    state, buffers = load_lets_state(str(tmp_path), torch.device("cpu"))
    assert [t.data_ptr() % 64 for t in buffers["u"]] == [0, 0, 0]
    assert all(torch.equal(a, b) for a, b in zip(buffers["u"], u)) and "z" not in buffers
