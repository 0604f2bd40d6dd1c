"""The quality sweep on a tiny model: runs, appends JSONL, renders, never redoes a finished run, restarts an
interrupted one cleanly."""

import glob
import json
import os

import pytest
import yaml

from glue_runs.studies.sweep import main


def write_config(tmp_path, glue_dir, model):
    config = {
        "output_root": str(tmp_path / "runs"),
        "results": str(tmp_path / "results" / "sweep.jsonl"),
        "results_page": str(tmp_path / "page.md"),
        "details": True,
        "tasks": ["RTE"],
        "seeds": [0, 1],
        "base": {
            "model_name_or_path": model,
            "glue_dir": glue_dir,
            "data_source": "glue_dir",
            "do_train": True,
            "do_eval": True,
            "max_train_samples": 48,
            "max_eval_samples": 24,
            "max_seq_length": 48,
            "max_steps": 3,
            "eval_strategy": "steps",
            "eval_steps": 1,
            "per_device_train_batch_size": 8,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
            "save_final_model": False,
            "lets_interval": 1,
        },
        "methods": {"adamw": {"sam_variant": "none"}, "lets-sam": {"sam_variant": "sam", "lets": True}},
    }
    (tmp_path / "page.md").write_text(
        "# Results\n<!-- sweep-table:sweep:start -->\nold\n<!-- sweep-table:sweep:end -->\nafter\n"
    )
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path), config


def records(config):
    with open(config["results"]) as f:
        return [json.loads(line) for line in f]


def test_sweep_runs_resumes_and_renders(tmp_path, glue_dir, tiny_roberta):
    path, config = write_config(tmp_path, glue_dir, tiny_roberta)
    main([path, "--max-runs", "3"])  # one sitting: 3 of the 4 runs
    assert (
        f"3 of 4 runs finished. Command: `python -m glue_runs.studies.sweep {path}`"
        in (tmp_path / "page.md").read_text()
    )
    first = records(config)
    assert [(r["method"], r["seed"]) for r in first] == [("adamw", 0), ("lets-sam", 0), ("adamw", 1)]
    assert all(r["metric"] == "accuracy" and 0 <= r["value"] <= 1 for r in first)
    lets = first[1]
    assert lets["lets"] and lets["final_rho"] > 0 and [s for s, _ in lets["rho_trajectory"]] == [2, 3]
    assert lets["heldout"]["heldout_source"] == "train" and first[0]["final_rho"] is None
    assert lets["guard_trips_at"] == [] and lets["all_results"]["train_final_rho"] == lets["final_rho"]
    assert lets["label_noise"] == {} and "train_loss" in first[0]["all_results"]
    assert 0 < lets["cpu_seconds"] and all(r["wall_seconds"] > 0 for r in first)
    first_hyper, hyper = lets["lets_history"]  # every hyper-step's numbers: the SNR figures come from the records
    assert first_hyper["hypergradient"] == 0  # its look-ahead is Adam's first step, which adds nothing
    assert hyper["step"] == 3 and hyper["guard_tripped"] is False and hyper["rho"] == lets["final_rho"]
    assert {"gap", "hypergradient", "train_loss", "heldout_loss"} <= set(hyper) and hyper["hypergradient"] != 0
    assert [e["step"] for e in first[0]["eval_curve"]] == [1, 2, 3]  # the dev metric during training, per evaluation
    assert all(0 <= e["eval_accuracy"] <= 1 for e in first[0]["eval_curve"])

    interrupted = tmp_path / "runs" / "RTE" / "lets-sam" / "seed1"  # a run killed half-way leaves a folder
    interrupted.mkdir(parents=True)
    (interrupted / "junk.txt").write_text("half-written")
    main([path])
    second = records(config)
    assert second[:3] == first and [(r["method"], r["seed"]) for r in second[3:]] == [("lets-sam", 1)]
    assert not (interrupted / "junk.txt").exists() and (interrupted / "all_results.json").is_file()
    assert "train_runtime" in (tmp_path / "runs" / "RTE" / "lets-sam" / "seed1.log").read_text()  # its output

    main([path])  # everything done: nothing is redone
    assert records(config) == second
    table = (tmp_path / "results" / "sweep.md").read_text()
    assert "| RTE (accuracy) |" in table and "(n=2)" in table and "rho" in table and "4 of 4 runs" in table
    assert (tmp_path / "results" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "page.md").read_text()
    assert "| lets-sam | 0: " in table and "Machine time of the finished runs (4)" in table
    assert table in page and "old" not in page and page.endswith("<!-- sweep-table:sweep:end -->\nafter\n")

    config["seeds"] = [1]  # a narrower config: the other runs stay in the file but leave the table
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    main([path, "--render-only"])
    table = (tmp_path / "results" / "sweep.md").read_text()
    assert "(n=1)" in table and "(n=2)" not in table and "2 of 2 runs" in table and len(records(config)) == 4


def test_sweep_refuses_results_made_with_other_settings(tmp_path, glue_dir):
    """A finished run (its record as a run writes it, with the settings it ran with; no model is loaded) and a
    config changed since."""
    from glue_runs.studies.sweep import settings

    path, config = write_config(tmp_path, glue_dir, "tiny-roberta-never-loaded")
    config["seeds"], config["details"] = [0], False
    config["methods"] = {"adamw": config["methods"]["adamw"]}
    ran = settings(config, "RTE", "adamw", 0)
    os.makedirs(os.path.dirname(config["results"]))
    record = {"task": "RTE", "method": "adamw", "seed": 0, "metric": "accuracy", "value": 0.5, "settings": ran}
    record |= {"lets": False, "final_rho": None, "rho_trajectory": [], "eval_curve": [], "wall_seconds": 1.0}
    with open(config["results"], "w") as f:
        f.write(json.dumps(record) + "\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    assert len(main([path, "--render-only"])) == 1 and ran["max_train_samples"] == 48

    config["base"]["max_train_samples"] = 40  # the same runs, other settings: not silently mixed into one table
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=r"RTE/adamw/seed0 ran with other settings .*\(max_train_samples\)"):
        main([path])
    config["task_overrides"] = {"RTE": {"max_train_samples": 48}}  # an override restoring them is accepted
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    assert len(main([path])) == 1


def test_details_give_per_seed_values_costs_and_the_two_sd_rule():
    """The numbers the page's verdicts rest on: per-seed values, minutes, and 'under two sd is no difference'."""
    from glue_runs.studies.sweep import render_details, render_verdicts

    config = {
        "tasks": ["MRPC"],
        "seeds": [0, 1],
        "base": {},
        "methods": {
            "adamw": {"sam_variant": "none"},
            "sam-a": {"sam_variant": "sam", "sam_rho": 0.01, "lets": False},
            "sam-b": {"sam_variant": "sam", "sam_rho": 0.05, "lets": False},
            "lets": {"sam_variant": "sam", "sam_rho": 0.05, "lets": True},
        },
    }
    values = {"adamw": (0.80, 0.82), "sam-a": (0.84, 0.86), "sam-b": (0.70, 0.72), "lets": (0.85, 0.85)}
    records = {
        ("MRPC", m, seed): {
            "seed": seed,
            "value": v[seed],
            "lets": m == "lets",
            "final_rho": 0.02 + seed / 100 if m == "lets" else None,
            "wall_seconds": 120.0 if m == "adamw" else 300.0,
            **({} if m == "adamw" else {"cpu_seconds": 600.0}),  # a record from before CPU time was kept has none
        }
        for m, v in values.items()
        for seed in (0, 1)
    }
    text = render_details(config, records)
    assert (
        "| sam-b | 0: 0.700, 1: 0.720 | - | 5.0 |" in text
        and "| lets | 0: 0.850, 1: 0.850 | 0.02, 0.03 | 5.0 |" in text
    )
    assert "one lets run 5.0 min; the 2 fixed-radius SAM runs of one seed (sam-a, sam-b) 10.0 min" in text
    # Two seeds a cell: the numbers, but no verdict (the rule needs three).
    assert "lets vs plain AdamW (adamw): +0.040 (two sd: 0.028): a reading on 2 seeds, no verdict before 3" in text
    assert "**better**" not in text and "**not a difference**" not in text
    # A third seed (adamw 0.81, sam-a 0.85, lets 0.85): lets - sam-a = 0 < 2 * 0.01, no difference; vs AdamW
    # +0.04 > 2 * 0.01, better.
    third = {("MRPC", m, 2): {**records[("MRPC", m, 1)], "seed": 2, "value": sum(v) / 2} for m, v in values.items()}
    three = render_details({**config, "seeds": [0, 1, 2]}, {**records, **third})
    assert "its variant (sam-a): +0.000 (two sd: 0.020): **not a difference**" in three
    assert "lets vs plain AdamW (adamw): +0.040 (two sd: 0.020): **better**" in three
    assert "Machine time of the finished runs (8): 0.6 h wall, 1.0 CPU hours (the 6 runs that recorded it)." in text
    # The verdict table: the same verdicts, one cell per LETS method and task, each reference named.
    assert render_verdicts(config, records, own={"lets"}).splitlines() == [
        "| LETS method | MRPC |",
        "|---|---|",
        "| lets | 0.850 +- 0.000 (n=2)<br>vs sam-a: reading<br>vs adamw: reading |",
    ]
    assert render_verdicts({**config, "seeds": [0, 1, 2]}, {**records, **third}, own={"lets"}).splitlines()[2] == (
        "| lets | 0.850 +- 0.000 (n=3)<br>vs sam-a: tie<br>vs adamw: better |"
    )
    low = {k: {**r, "value": 0.80} for k, r in {**records, **third}.items() if k[1] == "lets"}  # sam-a - 0.05
    cell = render_verdicts({**config, "seeds": [0, 1, 2]}, {**records, **third, **low}, own={"lets"}).splitlines()[2]
    assert cell == "| lets | 0.800 +- 0.000 (n=3)<br>vs sam-a: worse<br>vs adamw: tie |"
    alone = {**config, "methods": {"lets": config["methods"]["lets"]}}  # no grid in the sweep: no cost line
    assert "Cost:" not in render_details(alone, {k: r for k, r in records.items() if k[1] == "lets"})


def test_a_method_that_leaves_lets_out_learns_its_radius_as_lets_glue_runs_it():
    """The records' ``lets`` and the grid follow what the run did: lets-glue's default is ``lets=True``, so a SAM
    method without the flag learned its radius (a control once ran LETS while its record said fixed)."""
    from glue_runs.studies.sweep import LETS_DEFAULT, is_grid, learns_radius

    assert LETS_DEFAULT is True  # read from LETSTrainingArguments: what a bare method below runs with
    config = {
        "base": {"sam_variant": "sam"},
        "methods": {
            "bare": {"sam_rho": 0.01},
            "fixed": {"sam_rho": 0.01, "lets": False},
            "adamw": {"sam_variant": "none"},
            "adamw-lets": {"sam_variant": "none", "lets": True},  # no perturbation: nothing to learn
        },
    }
    assert [learns_radius(config, m) for m in config["methods"]] == [True, False, False, False]
    assert [is_grid(config, m) for m in config["methods"]] == [False, True, False, False]
    config["base"]["lets"] = False  # a base that turns it off for every method that does not say otherwise
    assert learns_radius(config, "bare") is False and is_grid(config, "bare")


def test_plot_names_the_methods_at_each_fixed_radius():
    """The dashed lines the learned radii are read against: each fixed radius once, with the methods that ran at it
    (SAM 0.1 and ASAM 0.1 are different perturbations), and nothing for AdamW or LETS runs or other tasks."""
    from glue_runs.studies.sweep import grid_radii

    def record(rho, variant="sam", lets=False):
        return {"lets": lets, "settings": {"sam_rho": rho, "sam_variant": variant}}

    records = {
        ("CoLA", "adamw", 0): record(None, "none"),
        ("CoLA", "sam-0.05", 0): record(0.05),
        ("CoLA", "sam-0.05", 1): record(0.05),
        ("CoLA", "sam-0.1", 0): record(0.1),
        ("CoLA", "asam-0.1", 0): record(0.1, "asam"),
        ("CoLA", "lets-0.2", 0): record(0.2, lets=True),
        ("MRPC", "sam-0.002", 0): record(0.002),
    }
    assert grid_radii(records, "CoLA") == {0.05: ["sam-0.05"], 0.1: ["asam-0.1", "sam-0.1"]}
    assert grid_radii(records, "STS-B") == {}


def test_baselines_come_from_the_other_sweep_for_this_sweeps_tasks_and_seeds_only(tmp_path):
    """A new method is read against a grid run once: the other sweep's listed methods join the table for this
    sweep's tasks and seeds; another base (other examples, other epochs) is refused, not mixed in."""
    from glue_runs.studies.sweep import with_baselines

    base = {"num_train_epochs": 3}
    other = {
        "output_root": str(tmp_path / "grid"),
        "results": str(tmp_path / "grid.jsonl"),
        "base": base,
        "tasks": ["MRPC", "CoLA"],
        "seeds": [0, 1, 2],
        "methods": {
            "adamw": {"sam_variant": "none"},
            "sam-0.01": {"sam_variant": "sam", "sam_rho": 0.01, "lets": False},
        },
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(other))
    with open(other["results"], "w") as f:
        for task in ("MRPC", "CoLA"):
            for method in other["methods"]:
                for seed in (0, 1, 2):
                    f.write(json.dumps({"task": task, "method": method, "seed": seed, "value": seed / 10}) + "\n")
    config = {
        "base": base,
        "tasks": ["MRPC"],
        "seeds": [1, 2],
        "methods": {"lets": {"sam_variant": "sam", "lets": True}},
        "baselines": {"config": str(tmp_path / "grid.yaml"), "methods": ["sam-0.01"]},
    }
    mine = {("MRPC", "lets", 1): {"value": 0.5}}
    view, shown = with_baselines(config, mine)
    assert list(view["methods"]) == ["sam-0.01", "lets"] and view["methods"]["sam-0.01"]["sam_rho"] == 0.01
    assert sorted(shown) == [("MRPC", "lets", 1), ("MRPC", "sam-0.01", 1), ("MRPC", "sam-0.01", 2)]
    assert with_baselines({**config, "baselines": None}, mine) == ({**config, "baselines": None}, mine)
    with pytest.raises(ValueError, match=r"no method sam-9 there"):
        with_baselines({**config, "baselines": {**config["baselines"], "methods": ["sam-9"]}}, mine)
    with pytest.raises(ValueError, match=r"its base differs from this sweep's \(num_train_epochs\)"):
        with_baselines({**config, "base": {"num_train_epochs": 10}}, mine)


def test_baselines_from_several_sweeps_join_in_order(tmp_path):
    """A list of baselines reads each sweep's methods; a method two of them list comes from the first."""
    from glue_runs.studies.sweep import with_baselines

    base = {"num_train_epochs": 3}
    for name, value in (("grid", 0.1), ("clip", 0.2)):
        other = {
            "output_root": str(tmp_path / name),
            "results": str(tmp_path / f"{name}.jsonl"),
            "base": base,
            "tasks": ["MRPC"],
            "seeds": [0],
            "methods": {"adamw": {"sam_variant": "none"}, f"lets-{name}": {"sam_variant": "sam", "lets": True}},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(other))
        with open(other["results"], "w") as f:
            for method in other["methods"]:
                f.write(json.dumps({"task": "MRPC", "method": method, "seed": 0, "value": value}) + "\n")
    config = {
        "base": base,
        "tasks": ["MRPC"],
        "seeds": [0],
        "methods": {"cheap": {"sam_variant": "sam", "sam_every": 5}},
        "baselines": [
            {"config": str(tmp_path / "grid.yaml"), "methods": ["adamw"]},
            {"config": str(tmp_path / "clip.yaml"), "methods": ["adamw", "lets-clip"]},
        ],
    }
    view, shown = with_baselines(config, {("MRPC", "cheap", 0): {"value": 0.3}})
    assert list(view["methods"]) == ["adamw", "lets-clip", "cheap"]
    assert {k[1]: r["value"] for k, r in shown.items()} == {"adamw": 0.1, "lets-clip": 0.2, "cheap": 0.3}


def test_a_sweep_split_by_seed_fills_one_results_file(tmp_path, glue_dir, tiny_roberta):
    """Two sittings (or two processes) with disjoint --seeds and --methods share the file and the table."""
    path, config = write_config(tmp_path, glue_dir, tiny_roberta)
    main([path, "--seeds", "1", "--methods", "adamw"])
    assert [(r["method"], r["seed"]) for r in records(config)] == [("adamw", 1)]
    assert "1 of 4 runs finished" in (tmp_path / "page.md").read_text()
    main([path, "--seeds", "0", "--tasks", "RTE", "--methods", "lets-sam"])
    assert [(r["method"], r["seed"]) for r in records(config)] == [("adamw", 1), ("lets-sam", 0)]
    assert "2 of 4 runs finished" in (tmp_path / "page.md").read_text()


def test_a_run_that_fails_stops_the_sweep_with_its_error_and_keeps_its_log(tmp_path, glue_dir, tiny_roberta):
    path, config = write_config(tmp_path, glue_dir, tiny_roberta)
    config["methods"] = {"broken": {"sam_variant": "sam", "sam_rho": -0.1}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RuntimeError, match="RTE/broken/seed0 failed") as failure:
        main([path, "--seeds", "0"])
    log = tmp_path / "runs" / "RTE" / "broken" / "seed0.log"
    assert str(log) in str(failure.value) and "sam_rho" in str(failure.value) and "sam_rho" in log.read_text()
    assert not os.path.exists(config["results"])  # no record of a failed run


def test_dev_curves_are_tabled_and_plotted_per_evaluation(tmp_path):
    """Runs that evaluated during training (eval_strategy epoch) get a table of the dev metric per evaluation, mean
    +- sd over seeds, and a third plot row; a method whose runs evaluated only at the end gets neither."""
    from glue_runs.studies.sweep import dev_curves, render_curves, render_plot

    config = {"tasks": ["SST-2"], "seeds": [0, 1], "methods": {"adamw": {"sam_variant": "none"}, "sam": {}}}

    def record(method, seed, curve):
        return {
            "task": "SST-2", "method": method, "seed": seed, "value": curve[-1], "final_rho": None, "lets": False,
            "settings": {"sam_variant": "none"}, "rho_trajectory": [],
            "eval_curve": [{"step": 10 * (i + 1), "eval_accuracy": v} for i, v in enumerate(curve)],
        }  # fmt: skip

    records = {
        ("SST-2", "adamw", 0): record("adamw", 0, [0.7, 0.8, 0.74]),
        ("SST-2", "adamw", 1): record("adamw", 1, [0.6, 0.8, 0.76]),
        ("SST-2", "sam", 0): record("sam", 0, [0.79]),
    }
    assert dev_curves(config, records, "SST-2") == {"adamw": [(10, [0.7, 0.6]), (20, [0.8, 0.8]), (30, [0.74, 0.76])]}
    table = render_curves(config, records, "SST-2")
    assert table[2] == "| method | 10 | 20 | 30 |"
    assert table[4] == "| adamw | 0.650 +- 0.071 | 0.800 +- 0.000 | 0.750 +- 0.014 |" and len(table) == 5
    render_plot(config, records, str(tmp_path / "plot.png"))
    assert (tmp_path / "plot.png").stat().st_size > 0


ROOT = os.path.join(os.path.dirname(__file__), "..")
SHIPPED_SWEEPS = sorted(glob.glob(os.path.join(ROOT, "glue_runs", "studies", "configs", "sweep_*.yaml")))


@pytest.mark.parametrize("path", SHIPPED_SWEEPS, ids=os.path.basename)
def test_every_shipped_sweep_still_accepts_its_committed_records(path, monkeypatch):
    """A config edited after its runs (a setting pinned, a method changed) must not make the sweep refuse its own
    records: the results pages are rendered from them, and baselines of other sweeps are read from them."""
    from glue_runs.studies.sweep import check_settings, finished, load_config, with_baselines

    monkeypatch.chdir(ROOT)  # the configs name their results relative to the repository
    config = load_config(path)
    done = finished(config["results"])
    check_settings(config, done)
    with_baselines(config, done)


def test_the_page_render_refuses_a_table_pasted_twice(tmp_path):
    """Only the first copy of a table would be rewritten; a page holding two must be mended, not half-updated."""
    from glue_runs.studies.sweep import render

    block = "<!-- sweep-table:grid:start -->\nold\n<!-- sweep-table:grid:end -->\n"
    page = tmp_path / "page.md"
    config = {
        "results": str(tmp_path / "grid.jsonl"),
        "results_page": str(page),
        "base": {},
        "tasks": ["MRPC"],
        "seeds": [0],
        "methods": {"adamw": {"sam_variant": "none"}},
    }
    page.write_text("# A\n" + block + "# B\n" + block)
    with pytest.raises(ValueError, match=r"holds the table grid more than once"):
        render(config, "cmd")
    assert page.read_text() == "# A\n" + block + "# B\n" + block
    page.write_text("# A\n" + block)
    render(config, "cmd")
    assert "0 of 1 runs finished. Command: `cmd`" in page.read_text() and "old" not in page.read_text()


def test_runs_made_under_other_library_defaults_are_refused_not_mixed_in(tmp_path):
    """A method that leaves a setting to lets_hf's defaults measures whatever the defaults are when it runs: its
    records keep the resolved SAM and LETS settings, and a run made before a default changed (here the bounds' rule)
    is refused with the field, its old and its new value; settings added to the library since are not compared."""
    from glue_runs.studies.sweep import check_settings, resolved_radius_settings, settings

    config = {
        "results": str(tmp_path / "grid.jsonl"),
        "base": {"num_train_epochs": 3},
        "tasks": ["MRPC"],
        "seeds": [0],
        "methods": {"lets-default": {"sam_variant": "sam"}},
    }
    ran = settings(config, "MRPC", "lets-default", 0)
    resolved = resolved_radius_settings(ran)
    assert resolved["sam_rho"] == 0.01 and resolved["lets"] is True and resolved["lets_rho_min"] is None
    assert resolved["rho_bounds"] == [pytest.approx(1e-4), pytest.approx(0.5)]
    record = {"task": "MRPC", "method": "lets-default", "seed": 0, "settings": ran}
    key = ("MRPC", "lets-default", 0)
    check_settings(config, {key: record})  # an old record without them: nothing to compare
    check_settings(config, {key: {**record, "resolved": {**resolved, "a_field_since_removed": 1}}})
    older = {**resolved, "rho_bounds": [1e-4, 0.1]}
    older.pop("lets_same_dropout")  # a field the library did not have then
    with pytest.raises(ValueError, match=r"other lets_hf defaults than today's \(rho_bounds: \[0.0001, 0.1\] -> \["):
        check_settings(config, {key: {**record, "resolved": older}})


def test_a_default_that_changes_only_an_inert_setting_keeps_the_records():
    """A LETS default does not void a fixed-radius run, nor ``lets_same_dropout`` a run that shares the masks on every
    step (``sam_same_dropout``); the same change voids a LETS run with independent masks."""
    from glue_runs.studies.sweep import check_settings, resolved_radius_settings, settings

    methods = {
        "sam-0.2": {"sam_variant": "sam", "sam_rho": 0.2, "lets": False},
        "same": {"sam_variant": "sam", "sam_same_dropout": True},
        "lets": {"sam_variant": "sam"},
        "adamw": {"sam_variant": "none"},
    }
    config = {"results": "grid.jsonl", "base": {}, "tasks": ["MRPC"], "seeds": [0], "methods": methods}

    def record_of(method, **then):
        ran = settings(config, "MRPC", method, 0)
        return {("MRPC", method, 0): {"settings": ran, "resolved": {**resolved_radius_settings(ran), **then}}}

    old = {"lets_same_dropout": False, "rho_bounds": [0.002, 0.02]}
    check_settings(config, record_of("sam-0.2", **old))
    check_settings(config, record_of("adamw", **old, sam_rho=0.05))
    check_settings(config, record_of("same", lets_same_dropout=False))
    with pytest.raises(ValueError, match=r"lets_same_dropout: False -> True"):
        check_settings(config, record_of("lets", lets_same_dropout=False))
    with pytest.raises(ValueError, match=r"sam_rho: 0.05 -> 0.2"):
        check_settings(config, record_of("sam-0.2", sam_rho=0.05))
