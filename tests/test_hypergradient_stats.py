"""The hypergradient signal-to-noise report: numbers from known values, one row per run, clear errors."""

import json
import math

import pytest

from glue_runs.report import write_history_csv
from glue_runs.studies.hypergradient_stats import main, summarize


def write_history(path, hypergradients):
    """A lets_history.csv as lets-glue writes it, so the reader is tested against the real writer."""
    path.parent.mkdir(parents=True)
    row = {"rho": 0.01, "gap": 0.1, "train_loss": 0.5, "heldout_loss": 0.6, "guard_tripped": False}
    rows = [{**row, "step": 2 + 10 * i, "hypergradient": h} for i, h in enumerate(hypergradients)]
    write_history_csv(rows, str(path))


def test_summarize_known_values():
    s = summarize([0.0, 1.0, -1.0, 1.0, 3.0])  # the zero (warm-up's first step) is dropped
    assert (s.n, s.positive) == (4, 3)
    assert s.mean == pytest.approx(1.0)
    assert s.sd == pytest.approx(math.sqrt(8 / 3))
    assert s.snr == pytest.approx(math.sqrt(3 / 8))
    assert s.t == pytest.approx(2 * math.sqrt(3 / 8))
    assert s.sign_z == pytest.approx(1.0)  # (3 down - 1 up) / sqrt(4)
    assert s.max_over_median == pytest.approx(3.0)
    assert s.samples_for_snr_1 == pytest.approx(8 / 3)


def test_summarize_refuses_too_few_values():
    with pytest.raises(ValueError, match="at least two non-zero"):
        summarize([0.0, 0.5])


def test_main_renders_one_row_per_run(tmp_path, capsys):
    write_history(tmp_path / "MRPC" / "lets-0.1" / "seed1" / "lets_history.csv", [0.0, 2.0, -2.0, 2.0, -2.0])
    write_history(tmp_path / "MRPC" / "lets-0.01" / "seed0" / "lets_history.csv", [0.0, 1.0, -1.0, 1.0, 3.0])
    (tmp_path / "MRPC" / "adamw" / "seed0").mkdir(parents=True)  # no history: not a LETS run, not listed
    table = main([str(tmp_path)])
    rows = table.splitlines()[2:]
    assert rows == [
        "| MRPC/lets-0.01/seed0 | 4 | 3 | +0.61 | +1.22 | +1.00 | 3 | 3 |",
        "| MRPC/lets-0.1/seed1 | 4 | 2 | +0.00 | +0.00 | +0.00 | 1 | inf |",
    ]
    assert capsys.readouterr().out.strip() == table


def test_main_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no lets_history.csv under" in capsys.readouterr().err
    bad = tmp_path / "RTE" / "lets" / "seed0" / "lets_history.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("step,rho\n2,0.01\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert f"error: {bad}: no 'hypergradient' column" in capsys.readouterr().err


def test_main_reads_the_committed_sweep_records(tmp_path):
    """A results JSONL: one row per LETS record that kept its lets_history; AdamW and older records are left out."""
    history = lambda values: [{"step": 2 + 10 * i, "hypergradient": v} for i, v in enumerate(values)]  # noqa: E731
    rows = [
        {"task": "MRPC", "method": "lets-0.1", "seed": 1, "lets_history": history([0.0, 2.0, -2.0, 2.0, -2.0])},
        {"task": "MRPC", "method": "adamw", "seed": 0, "lets_history": []},
        {"task": "MRPC", "method": "lets-0.01", "seed": 0, "lets_history": history([0.0, 1.0, -1.0, 1.0, 3.0])},
        {"task": "MRPC", "method": "lets-0.01", "seed": 2, "rho_trajectory": [[2, 0.01]]},  # before it was kept
    ]
    path = tmp_path / "sweep.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(path)]).splitlines()[2:] == [
        "| MRPC/lets-0.01/seed0 | 4 | 3 | +0.61 | +1.22 | +1.00 | 3 | 3 |",
        "| MRPC/lets-0.1/seed1 | 4 | 2 | +0.00 | +0.00 | +0.00 | 1 | inf |",
    ]
    other = tmp_path / "other.jsonl"  # several sweeps: one table, rows sorted by name across them
    other.write_text(json.dumps({**rows[0], "method": "lets-0.1-clip", "seed": 0}) + "\n")
    assert [r.split(" |")[0] for r in main([str(path), str(other)]).splitlines()[2:]] == [
        "| MRPC/lets-0.01/seed0",
        "| MRPC/lets-0.1-clip/seed0",
        "| MRPC/lets-0.1/seed1",
    ]
    path.write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(SystemExit):
        main([str(path)])


def test_replay_ranks_radius_optimizers_on_a_records_recorded_values(tmp_path, capsys):
    """A weak but consistent signal (every other value says "larger"): signum takes rho its full reach, ln(100)
    over 12 hyper-steps to rho0 / 100, Adam a fraction of it; both through the library's own radius step."""
    history = [{"step": 2 + 10 * i, "rho": 0.1, "hypergradient": v} for i, v in enumerate([3.0, -2.0] * 6)]
    record = {"task": "MRPC", "method": "lets", "seed": 0, "final_rho": 0.05, "settings": {"sam_rho": 0.1}}
    path = tmp_path / "sweep.jsonl"
    path.write_text(json.dumps({**record, "lets_history": history}) + "\n")
    from glue_runs.studies.hypergradient_stats import replay

    assert replay({**record, "lets_history": history}, "signum") == pytest.approx(0.001)
    assert 0.005 < replay({**record, "lets_history": history}, "adam") < 0.1
    assert main([str(path), "--replay", "signum"]).splitlines()[2] == "| MRPC/lets/seed0 | 0.05 | 0.001 |"
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--replay", "adam"])
    assert "--replay reads one sweep's results JSONL" in capsys.readouterr().err


def test_replay_with_a_clip_keeps_a_heavy_tailed_pair_from_turning_the_radius(tmp_path):
    """A consistent "smaller" with two values 100x the median against it (full STS-B seed 2's shape): unclipped,
    the pair turns signum's momentum and rho ends above where it would have; clipped at 3x the median, it does
    not, and rho ends at its bound; lets_travel 1e4 doubles each step."""
    values = [1.0] * 20 + [-100.0, -100.0] + [1.0] * 10
    history = [{"step": 2 + 10 * i, "rho": 0.1, "hypergradient": v} for i, v in enumerate(values)]
    record = {"task": "STS-B", "method": "lets", "seed": 2, "final_rho": 0.05, "settings": {"sam_rho": 0.1}}
    record["lets_history"] = history
    from glue_runs.studies.hypergradient_stats import replay

    lr = math.log(100) / len(values)  # the default lets_lr of a run of 32 hyper-steps
    assert replay(record, "signum") > 0.1 * math.exp(-lr * (len(values) - 4))  # lost ground to the pair
    assert replay(record, "signum", clip=3.0) == pytest.approx(0.1 * math.exp(-lr * len(values)))
    assert replay(record, "signum", travel=1e4, clip=3.0) == pytest.approx(0.001)  # at the bound rho0 / 100
    # linear: the same reach front-loaded, so with the pair clipped it ends where the constant rate does
    assert replay(record, "signum", clip=3.0, schedule="linear") == pytest.approx(0.001)
    assert replay(record, "signum", schedule="linear") > replay(record, "signum", clip=3.0, schedule="linear")
    path = tmp_path / "sweep.jsonl"
    path.write_text(json.dumps(record) + "\n")
    table = main([str(path), "--replay", "signum", "--clip", "3"]).splitlines()
    assert table[2] == f"| STS-B/lets/seed2 | 0.05 | {0.1 * math.exp(-lr * len(values)):.3g} |"


def test_before_trip_keeps_the_hyper_steps_before_the_guards_first_trip(tmp_path):
    history = [
        {"step": 2 + 10 * i, "hypergradient": v, "guard_tripped": i >= 4}
        for i, v in enumerate([1.0, 2.0, -1.0, 3.0, 50.0, -60.0])
    ]
    path = tmp_path / "sweep.jsonl"
    path.write_text(json.dumps({"task": "MRPC", "method": "probe", "seed": 2, "lets_history": history}) + "\n")
    whole, before = main([str(path)]).splitlines()[2], main([str(path), "--before-trip"]).splitlines()[2]
    assert whole.startswith("| MRPC/probe/seed2 | 6 | 4 |") and before.startswith("| MRPC/probe/seed2 | 4 | 3 |")
    assert before.endswith("| +0.73 | +1.46 | +1.00 | 2 | 2 |")  # mean 1.25, sd 1.708 over [1, 2, -1, 3]


def test_steps_keeps_the_hyper_steps_of_a_phase_of_training(tmp_path, capsys):
    history = [
        {"step": 2 + 10 * i, "hypergradient": v, "guard_tripped": False} for i, v in enumerate([1, 2, -1, 3, -5])
    ]
    path = tmp_path / "sweep.jsonl"
    path.write_text(json.dumps({"task": "SST-2", "method": "lets", "seed": 0, "lets_history": history}) + "\n")
    late = main([str(path), "--steps", "12", "32"]).splitlines()[2]  # steps 12, 22, 32: values 2, -1, 3
    assert late.startswith("| SST-2/lets/seed0 | 3 | 2 |")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--steps", "12", "32"])  # a folder of CSVs: refused, with what it reads
    assert "--steps reads a sweep's results JSONL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--before-trip"])  # nor read the guard's trips from CSVs, where they are not kept
    assert "--before-trip reads a sweep's results JSONL" in capsys.readouterr().err
