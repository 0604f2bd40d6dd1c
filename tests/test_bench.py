"""The benchmark script runs end to end on a tiny model (so it cannot rot); its numbers come from real runs."""

import json
import platform
import subprocess
import sys

import pytest

from glue_runs.studies import bench_speed
from glue_runs.studies.bench_speed import floors, main, measure_times, parse
from lets_hf import trainer as lets_trainer_module
from lets_hf.hypergradient import lookahead_add_


def test_bench_speed_runs_and_reports(tmp_path):
    out = tmp_path / "bench"
    rows = main(
        [
            "--model",
            "tiny",
            "--batch",
            "4",
            "--seq",
            "8",
            "--warmup",
            "1",
            "--window",
            "2",
            "--repeats",
            "2",
            "--methods",
            "sam",
            "lets-sam-i1",
            "--out",
            str(out),
            "--scratch",
            str(tmp_path / "scratch"),
            "--allocator",
            "system",  # keeping freed memory would hold for the rest of this test process
        ]
    )
    by_name = {r["method"]: r for r in rows}
    assert list(by_name) == ["erm", "sam", "lets-sam-i1"]
    assert all(len(r["all_blocks"]) == 2 and r["seconds_per_step"] > 0 for r in rows)
    lets = by_name["lets-sam-i1"]  # a held-out pass every step: LETS's own work is in every timed step
    assert all(
        0 < o < t for own, times in zip(lets["own_step_seconds"], lets["step_times"]) for o, t in zip(own, times)
    )
    shares = [sum(o) / sum(t) for o, t in zip(lets["own_step_seconds"], lets["step_times"])]
    assert lets["own_share"] == pytest.approx(sorted(shares)[0] / 2 + sorted(shares)[1] / 2)
    assert lets["paired_vs_sam"] == pytest.approx(1 / (1 - lets["own_share"]))
    assert "own_share" not in by_name["sam"]
    assert lets_trainer_module.lookahead_add_ is lookahead_add_  # the timer put it back
    for r in rows:  # every timed step is kept; a block's time is the mean of its window
        assert [len(block) for block in r["step_times"]] == [2, 2]
        assert r["all_blocks"] == pytest.approx([sum(block) / 2 for block in r["step_times"]])
        assert [len(block) for block in r["step_faults"]] == [2, 2]
        assert all(isinstance(n, int) and n >= 0 for block in r["step_faults"] for n in block)
    assert by_name["erm"]["ratio_vs_erm"] == 1.0 and by_name["sam"]["ratio_vs_sam"] == 1.0
    assert all(r["peak_memory_bytes"] > 10 * 2**20 for r in rows)  # a real process's RSS
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["erm", "sam", "lets-sam-i1"] and saved["kept"] is False
    assert "| lets-sam-i1 |" in (tmp_path / "bench.md").read_text()
    assert "the system allocator's defaults" in (tmp_path / "bench.md").read_text()


REUSE_PROBE = """
import resource, sys, torch
from glue_runs.studies.bench_speed import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for step in range(10):  # a step's transient memory (36-48 MB blocks, as MiniLM's embedding gradient), then freed
    before = faults()
    held = [torch.empty(n).fill_(1.0) for n in [12_000_000, 9_000_000, 10_000_000]]
    del held
    counts.append(faults() - before)
print(applied, *counts)
"""


def test_kept_memory_is_reused_without_page_faults():
    """A step's worth of transient tensors (124 MB), freed and allocated again: with glibc's defaults a block above
    its largest mmap threshold (32 MiB) is mapped afresh, so every step faults all of it in (30k pages); kept
    (`keep_freed_memory`, the timing process's default), the first steps do. In a child process: the setting lasts
    for the process."""
    runs = {}
    for mode in ("keep", "system"):
        out = subprocess.run([sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True, check=True)
        applied, *counts = out.stdout.split()
        runs[mode] = (applied, [int(c) for c in counts])
    if platform.libc_ver()[0] != "glibc":  # nothing to set: the function says so
        assert runs["keep"][0] == "False"
        return
    assert runs["keep"][0] == "True"
    keep, system = runs["keep"][1], runs["system"][1]
    assert min(system) > 0.9 * 124e6 / 4096  # every step maps all of it afresh
    assert sum(keep[1:]) < 0.25 * sum(system[1:]) and sum(keep[5:]) < 1_000  # kept: soon nothing new at all
    assert keep[0] > 20_000  # the first step faults either way (the probe does touch its memory)


def test_a_warm_up_block_runs_first_and_is_not_timed(monkeypatch):
    """The process's first block is slow (allocator, thread pools): it must not be one of ERM's timed blocks."""
    calls = []

    def fake_train_block(method, opts, steps, timer=None):
        calls.append((method, steps, timer is not None))
        if timer is not None:
            timer.times = [float(len(calls))] * steps  # distinct per block, so a stray block would show
            timer.faults = [len(calls)] * steps
            timer.own = [0.5] * steps if method == "lets-sam" else []

    monkeypatch.setattr(bench_speed, "train_block", fake_train_block)
    opts = parse(["--warmup", "1", "--window", "10", "--repeats", "2", "--methods", "erm", "lets-sam"])
    blocks, faults, own = measure_times(["erm", "lets-sam"], opts)
    assert calls == [("erm", 11, False)] + [("erm", 11, True), ("lets-sam", 11, True)] * 2
    assert blocks == {"erm": [[2.0] * 10, [4.0] * 10], "lets-sam": [[3.0] * 10, [5.0] * 10]}
    assert faults == {"erm": [[2] * 10, [4] * 10], "lets-sam": [[3] * 10, [5] * 10]}
    assert own == {"erm": [], "lets-sam": [[0.5] * 10] * 2}


def test_floors_follow_lets_md():
    assert floors("sam") == {"floor_vs_erm": 2.0, "floor_vs_sam": 1.0}
    assert floors("lets-sam") == {"floor_vs_erm": 2.0 * 1.05, "floor_vs_sam": 1.05}
    assert floors("lets-sam-i1")["floor_vs_sam"] == 1.5
    assert floors("lets-sam-horizon") == floors("lets-sam")  # the interval look-ahead adds no pass
    assert floors("isam-5") == floors("looksam-5") == {"floor_vs_erm": 1.2, "floor_vs_sam": 0.6}
    assert floors("lets-looksam-5")["floor_vs_erm"] == pytest.approx(1.3)  # the target: one step in 5 + 1/10
    assert floors("lets-isam-10")["floor_vs_erm"] == pytest.approx(1.2)
    assert floors("lets-sam-hb16", batch=32)["floor_vs_sam"] == pytest.approx(1.025)  # half a pass per hyper-step
    assert floors("lets-sam-hb16", batch=16)["floor_vs_sam"] == pytest.approx(1.05)
    assert floors("lets-sam", batch=8)["floor_vs_sam"] == pytest.approx(1.05)  # the default: the training batch
    assert floors("lets-sam-i20")["floor_vs_sam"] == pytest.approx(1.025)  # one pass every 20 steps


def test_the_window_holds_every_timed_methods_share_of_hyper_steps(capsys):
    assert parse(["--methods", "sam", "lets-sam"]).window == 10
    assert parse(["--methods", "sam", "lets-sam", "lets-sam-i20"]).window == 20  # the default grows to fit
    assert parse(["--methods", "lets-sam-i1"]).window == 10
    assert parse(["--window", "40", "--methods", "lets-sam-i20"]).window == 40
    with pytest.raises(SystemExit):
        parse(["--window", "10", "--methods", "sam", "lets-sam-i20"])
    assert "not a multiple of every timed method's lets_interval ([20])" in capsys.readouterr().err
    assert parse(["--window", "3", "--methods", "sam", "erm"]).window == 3  # no hyper-steps: any window


def test_memory_only_reports_memory_without_timing_columns(tmp_path, monkeypatch):
    """The report's shape; the peak itself, a fresh process's RSS per method, test_bench_speed_runs_and_reports
    measures (here a stand-in: sam's peak 20 MiB above erm's)."""
    peaks = {"erm": 40 * 2**20, "sam": 60 * 2**20}
    monkeypatch.setattr(bench_speed, "measure_memory", lambda method, opts: float(peaks[method]))
    rows = main(
        ["--model", "tiny", "--batch", "4", "--seq", "8", "--methods", "sam", "--memory-only"]
        + ["--out", str(tmp_path / "mem"), "--scratch", str(tmp_path / "scratch")]
    )
    assert [r["method"] for r in rows] == ["erm", "sam"]
    assert all("seconds_per_step" not in r for r in rows)
    assert [r["peak_memory_bytes"] for r in rows] == [peaks["erm"], peaks["sam"]]
    assert rows[0]["extra_buffers_vs_erm"] == 0.0 and rows[1]["extra_buffers_vs_erm"] > 0
    table = (tmp_path / "mem.md").read_text()
    assert "| method | peak MB | extra buffers vs ERM |" in table and "nan" not in table and "s/step" not in table
