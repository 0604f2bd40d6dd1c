"""The benchmark script runs end to end on a tiny model (so it cannot rot); its numbers come from real runs."""

import json

import pytest

from glue_runs import bench_speed
from glue_runs.bench_speed import floors, main, measure_times, parse


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
        ]
    )
    by_name = {r["method"]: r for r in rows}
    assert list(by_name) == ["erm", "sam", "lets-sam-i1"]
    assert all(len(r["all_blocks"]) == 2 and r["seconds_per_step"] > 0 for r in rows)
    for r in rows:  # every timed step is kept; a block's time is the mean of its window
        assert [len(block) for block in r["step_times"]] == [2, 2]
        assert r["all_blocks"] == pytest.approx([sum(block) / 2 for block in r["step_times"]])
        assert [len(block) for block in r["step_faults"]] == [2, 2]
        assert all(isinstance(n, int) and n >= 0 for block in r["step_faults"] for n in block)
    assert by_name["erm"]["ratio_vs_erm"] == 1.0 and by_name["sam"]["ratio_vs_sam"] == 1.0
    assert all(r["peak_memory_bytes"] > 10 * 2**20 for r in rows)  # a real process's RSS
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["erm", "sam", "lets-sam-i1"]
    assert "| lets-sam-i1 |" in (tmp_path / "bench.md").read_text()


def test_a_warm_up_block_runs_first_and_is_not_timed(monkeypatch):
    """The process's first block is slow (allocator, thread pools): it must not be one of ERM's timed blocks."""
    calls = []

    def fake_train_block(method, opts, steps, timer=None):
        calls.append((method, steps, timer is not None))
        if timer is not None:
            timer.times = [float(len(calls))] * steps  # distinct per block, so a stray block would show
            timer.faults = [len(calls)] * steps

    monkeypatch.setattr(bench_speed, "train_block", fake_train_block)
    opts = parse(["--warmup", "1", "--window", "2", "--repeats", "2", "--methods", "erm", "sam"])
    blocks, faults = measure_times(["erm", "sam"], opts)
    assert calls == [("erm", 3, False), ("erm", 3, True), ("sam", 3, True), ("erm", 3, True), ("sam", 3, True)]
    assert blocks == {"erm": [[2.0, 2.0], [4.0, 4.0]], "sam": [[3.0, 3.0], [5.0, 5.0]]}
    assert faults == {"erm": [[2, 2], [4, 4]], "sam": [[3, 3], [5, 5]]}


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


def test_memory_only_reports_memory_without_timing_columns(tmp_path):
    rows = main(
        ["--model", "tiny", "--batch", "4", "--seq", "8", "--methods", "sam", "--memory-only"]
        + ["--out", str(tmp_path / "mem"), "--scratch", str(tmp_path / "scratch")]
    )
    assert [r["method"] for r in rows] == ["erm", "sam"]
    assert all("seconds_per_step" not in r and r["peak_memory_bytes"] > 10 * 2**20 for r in rows)
    assert rows[0]["extra_buffers_vs_erm"] == 0.0
    table = (tmp_path / "mem.md").read_text()
    assert "| method | peak MB | extra buffers vs ERM |" in table and "nan" not in table and "s/step" not in table
