"""A resumable quality sweep: `python -m glue_runs.studies.sweep glue_runs/studies/configs/sweep_minilm.yaml`.

Runs `lets-glue` over tasks x methods x seeds from one config, each run in its own folder
(``output_root/<task>/<method>/seed<k>``) and its own process, its settings in ``seed<k>.run.json`` and its output,
as it goes, in ``seed<k>.log`` beside the folder (a run that fails stops the sweep and names that log). A finished
run appends one line to the results JSONL and is never redone; a run interrupted half-way (a folder without an
entry) is deleted and restarted from scratch.
Each entry keeps the settings it ran with: a results file whose entries were made with other settings than the
config now asks for is refused rather than mixed into one table; so is an entry whose SAM and LETS settings, as
lets_hf resolved them (its defaults filled in, kept since records carry ``resolved``), differ from today's, so that
a method which leaves the radius to the library's defaults never mixes runs of an old and a new default. A method
runs with its flags over the ``base``'s and lets-glue's defaults: a SAM method that leaves ``lets`` out learns its
radius (``lets=True``, the default); a fixed-radius point of the grid says ``lets: false``.
After every run, ``<results>.md`` (mean and std over seeds of each task's main metric, the final rho of the LETS runs)
and ``<results>.png`` (per task, the methods side by side with their seed spread; rho over training, relative to
where it started, for the LETS runs) are rendered again, so a partial table is always on disk.
With ``details: true`` the table is followed, per task, by every seed's value and final rho, the minutes per run,
one LETS run's cost against the fixed-radius grid's, and each LETS method's difference to the best fixed radius and
to AdamW, judged by the page's rule (under two standard deviations is not a difference, and a verdict needs three
seeds in both cells). With ``verdicts: true`` the same verdicts come first as one table, a row per LETS method of the
sweep and a column per task.
With ``results_page: <file>`` the same text replaces what stands between the file's
``<!-- sweep-table:<results stem>:start -->`` and ``...:end -->`` markers.
With ``baselines: {config: <another sweep config>, methods: [...]}`` the table, the comparisons and the plot also
show those methods' finished runs from the other sweep's results (same tasks and seeds), so that new methods are
read against a grid run once; the two configs' ``base`` must be equal, or the baselines are refused. A list of
such entries reads baselines from several sweeps.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

import yaml

from lets_hf.training_args import LETSTrainingArguments

from ..report import atomic_write, atomic_write_text
from ..tasks import get_task

# The metric each task's column shows (the first of its official GLUE metrics; STS-B Pearson as in docs/algorithm.md).
MAIN_METRIC = {"CoLA": "matthews_correlation", "STS-B": "pearson", "MRPC": "accuracy", "SST-2": "accuracy"}
# The seeds both cells of a comparison need before the page calls it a difference or not (the project's rule).
VERDICT_SEEDS = 3


def main_metric(task: str) -> str:
    """The metric a task's column and verdicts read: MAIN_METRIC's, else the task's first official one."""
    return MAIN_METRIC.get(task, get_task(task).metrics[0])


def load_config(path: str) -> dict:
    with open(path) as f:
        config = yaml.safe_load(f)
    for key in ("output_root", "results", "base", "tasks", "methods", "seeds"):
        if key not in config:
            raise ValueError(
                f"{path}: the sweep config needs '{key}' (see glue_runs/studies/configs/sweep_minilm.yaml)."
            )
    return config


def plan(config: dict) -> list[tuple[str, str, int]]:
    """Every (task, method, seed), tasks outermost: a partial sweep completes whole tasks, every cell all seeds."""
    return [
        (task, method, seed) for task in config["tasks"] for seed in config["seeds"] for method in config["methods"]
    ]


def finished(results_path: str) -> dict[tuple[str, str, int], dict]:
    if not os.path.isfile(results_path):
        return {}
    with open(results_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {(r["task"], r["method"], r["seed"]): r for r in rows}


def settings(config: dict, task: str, method: str, seed: int) -> dict:
    """The lets-glue flags of one run (output_dir aside): base < task_overrides < method."""
    return {
        **config["base"],
        **config.get("task_overrides", {}).get(task, {}),
        **config["methods"][method],
        "task_name": task,
        "seed": seed,
    }


RADIUS_FIELDS = [
    f.name
    for f in dataclasses.fields(LETSTrainingArguments)
    if f.name == "lets" or f.name.startswith(("sam_", "lets_", "asam_", "looksam_"))
]


def resolved_radius_settings(run_settings: dict) -> dict:
    """Every SAM and LETS setting a run gets, the library's defaults filled in, with the radius's bounds as resolved
    (a default that is a rule, such as ``[sam_rho / 100, 10 sam_rho]``, shows in ``rho_bounds``). Kept in each record,
    so that a run made before a default changed is not read as a run of the new default."""
    args = LETSTrainingArguments(output_dir="unused", **{k: v for k, v in run_settings.items() if k in RADIUS_FIELDS})
    return {**{name: getattr(args, name) for name in RADIUS_FIELDS}, "rho_bounds": list(args.rho_bounds)}


def in_effect(resolved: dict) -> dict:
    """The resolved settings that act on the run: without SAM only ``sam_variant``; without LETS no ``lets_`` field
    nor the bounds; with ``sam_same_dropout`` not ``lets_same_dropout`` (it shares the masks on every step already).
    A default that changes an inert field does not void a record."""
    if resolved.get("sam_variant") == "none":
        return {"sam_variant": "none"}
    lets = resolved.get("lets", True)
    return {
        k: v
        for k, v in resolved.items()
        if (lets or not (k.startswith("lets_") or k == "rho_bounds"))
        and not (k == "lets_same_dropout" and resolved.get("sam_same_dropout"))
    }


def check_settings(config: dict, done: dict) -> None:
    """Refuse a results file whose finished runs were made with other settings than the config's now, or, where the
    record keeps them, under other library defaults for SAM and LETS."""
    planned = set(plan(config))
    for (task, method, seed), record in done.items():
        if (task, method, seed) not in planned:
            continue  # a run the config no longer asks for: left in the file, not checked
        wanted, had = settings(config, task, method, seed), record.get("settings")
        if had != wanted:
            keys = sorted(k for k in set(wanted) | set(had or {}) if (had or {}).get(k) != wanted.get(k))
            raise ValueError(
                f"{config['results']}: {task}/{method}/seed{seed} ran with other settings than the config "
                f"asks for now ({', '.join(keys) if had else 'no settings recorded'}). Point 'results' at a new "
                "file, or remove those lines to rerun them."
            )
        then = record.get("resolved")  # records written before this was kept cannot be checked
        if then is None:
            continue
        then, now = in_effect(then), in_effect(resolved_radius_settings(wanted))
        keys = sorted(k for k in set(then) & set(now) if then[k] != now[k])  # fields added since: not compared
        if keys:
            raise ValueError(
                f"{config['results']}: {task}/{method}/seed{seed} ran under other lets_hf defaults than today's "
                f"({', '.join(f'{k}: {then.get(k)} -> {now.get(k)}' for k in keys)}). Move those lines to another "
                "results file (and give the old values their own method to keep measuring them), or remove them to "
                "measure the new defaults."
            )


def run_one(config: dict, task: str, method: str, seed: int) -> dict:
    """One lets-glue run in a fresh process; returns its JSONL record."""
    out = os.path.join(config["output_root"], task, method, f"seed{seed}")
    if os.path.isdir(out):  # an interrupted run: start it again cleanly
        shutil.rmtree(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    run_settings = settings(config, task, method, seed)
    flags = {**run_settings, "output_dir": out}
    config_path = f"{out}.run.json"  # the exact settings, kept beside the run folder
    atomic_write_text(config_path, json.dumps(flags, indent=2))
    start, children = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    log_path = f"{out}.log"  # the run's own output as it goes (`tail -f` it), kept when the run fails
    unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "glue_runs", config_path], stdout=log, stderr=subprocess.STDOUT, env=unbuffered
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the run's own CPU time: a paused run does not add to it
    cpu_seconds = after.ru_utime - children.ru_utime + after.ru_stime - children.ru_stime
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{task}/{method}/seed{seed} failed (its whole output: {log_path}):\n{tail}")
    with open(os.path.join(out, "all_results.json")) as f:
        results = json.load(f)
    metric = main_metric(task)
    curve = []  # the evaluations during training (eval_strategy "epoch" or "steps"), from the Trainer's state
    logged_rho = []  # [step, rho, grad_norm] at every logging step: a loss budget's radius moves without LETS
    if os.path.isfile(os.path.join(out, "trainer_state.json")):
        with open(os.path.join(out, "trainer_state.json")) as f:
            log = json.load(f)["log_history"]
        curve = [{k: v for k, v in e.items() if k.startswith("eval_") or k in ("epoch", "step")} for e in log]
        curve = [e for e in curve if f"eval_{metric}" in e]
        logged_rho = [[e["step"], e["rho"], e.get("grad_norm")] for e in log if "rho" in e]
    history = []
    if os.path.isfile(os.path.join(out, "lets_history.csv")):
        with open(os.path.join(out, "lets_history.csv")) as f:
            history = list(csv.DictReader(f))
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "metric": metric,
        "value": results[f"eval_{metric}"],
        "final_rho": results.get("train_final_rho"),
        "lets": learns_radius(config, method),
        "train_runtime": results.get("train_runtime"),
        "wall_seconds": round(time.time() - start, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "eval_samples": results.get("eval_samples"),
        "heldout": {k: v for k, v in results.get("lets_heldout", {}).items() if not k.endswith("idx")},
        "rho_trajectory": [[int(h["step"]), float(h["rho"])] for h in history],
        "logged_rho": logged_rho,
        "lets_history": [parse_history_row(h) for h in history],  # what hypergradient_stats reads
        "eval_curve": curve,
        "guard_trips_at": [int(h["step"]) for h in history if h.get("guard_tripped") == "True"],
        "label_noise": {k: v for k, v in results.get("label_noise", {}).items() if not k.endswith("idx")},
        "output_dir": out,
        "all_results": {k: v for k, v in results.items() if k.startswith(("eval_", "train_"))},
        "settings": run_settings,
        "resolved": resolved_radius_settings(run_settings),
    }


def parse_history_row(row: dict[str, str]) -> dict:
    """One lets_history.csv row as numbers: ``step`` an int, ``guard_tripped`` a bool, the rest floats."""
    return {k: int(v) if k == "step" else v == "True" if k == "guard_tripped" else float(v) for k, v in row.items()}


def append(results_path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    with open(results_path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _runs(records: dict, task: str, method: str) -> list[dict]:
    return [r for (t, m, _), r in sorted(records.items()) if t == task and m == method]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def _mean_pm(values: list[float]) -> str:
    """``mean +- sd`` to three decimals (the mean alone for one value)."""
    mean, sd = _mean_sd(values)
    return f"{mean:.3f} +- {sd:.3f}" if len(values) > 1 else f"{mean:.3f}"


def render_table(config: dict, records: dict) -> str:
    """Markdown: one row per task, one column per method; mean +- std (n seeds); final rho (mean +- std) for LETS."""
    methods = list(config["methods"])
    lines = ["| task (metric) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for task in config["tasks"]:
        cells = []
        for method in methods:
            runs = _runs(records, task, method)
            if not runs:
                cells.append("-")
                continue
            cell = f"{_mean_pm([r['value'] for r in runs])} (n={len(runs)})"
            if runs[0]["lets"]:
                rhos = [r["final_rho"] for r in runs]
                cell += f"<br>rho {statistics.fmean(rhos):.3g}" + (
                    f" +- {statistics.stdev(rhos):.2g}" if len(rhos) > 1 else ""
                )
            cells.append(cell)
        metric = main_metric(task)
        lines.append(f"| {task} ({metric}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant(config: dict, method: str) -> str | None:
    """The method's ``sam_variant``, as its runs get it (the method's own flag, else the base's)."""
    return config["methods"][method].get("sam_variant", config["base"].get("sam_variant"))


# lets-glue's default for ``lets`` (True): a run with a SAM variant learns its radius unless told not to
LETS_DEFAULT = {f.name: f.default for f in dataclasses.fields(LETSTrainingArguments)}["lets"]


def learns_radius(config: dict, method: str) -> bool:
    """Whether the method's runs learn rho, as lets-glue runs them: its ``lets`` flag, else the base's, else the
    arguments' default (`LETS_DEFAULT`, True); never without a SAM variant. A method that leaves ``lets`` out is a
    LETS run, not a point of the grid."""
    flags = {**config["base"], **config["methods"][method]}
    return variant(config, method) not in (None, "none") and bool(flags.get("lets", LETS_DEFAULT))


def is_grid(config: dict, method: str) -> bool:
    """A fixed-radius SAM or ASAM method: one point of the grid a learned radius replaces."""
    return variant(config, method) not in (None, "none") and not learns_radius(config, method)


def judge(records: dict, task: str, method: str, other: str) -> tuple[float, float, int, str | None]:
    """``method``'s mean minus ``other``'s, the bar (two standard deviations: the larger seed spread of the two
    cells), the seeds both cells have, and the verdict: "better", "worse" or "not a difference" (under the bar), or
    None below ``VERDICT_SEEDS`` seeds (two seeds' spread is too rough a bar to call a difference on)."""
    runs, other_runs = _runs(records, task, method), _runs(records, task, other)
    mean, sd = _mean_sd([r["value"] for r in runs])
    other_mean, other_sd = _mean_sd([r["value"] for r in other_runs])
    diff, bar = mean - other_mean, 2 * max(sd, other_sd)
    seeds = min(len(runs), len(other_runs))
    if seeds < VERDICT_SEEDS:
        return diff, bar, seeds, None
    return diff, bar, seeds, "not a difference" if abs(diff) < bar else ("better" if diff > 0 else "worse")


def versus(records: dict, task: str, method: str, other: str, label: str) -> str:
    """One line of the page: `judge`'s numbers and verdict, or "a reading" where the seeds are too few for one."""
    diff, bar, seeds, verdict = judge(records, task, method, other)
    line = f"- {method} vs {label} ({other}): {diff:+.3f} (two sd: {bar:.3f}): "
    if verdict is None:
        return line + f"a reading on {seeds} seeds, no verdict before {VERDICT_SEEDS}"
    return line + f"**{verdict}**"


def references(config: dict, records: dict, task: str, method: str) -> list[tuple[str, str]]:
    """What a LETS method is read against on a task, as ``(other method, label)``: the best fixed radius of its own
    variant (by mean, among cells with two seeds or more) and plain AdamW."""
    done = {m for m in config["methods"] if len(_runs(records, task, m)) >= 2}
    grid = [
        (statistics.fmean(r["value"] for r in _runs(records, task, m)), m)
        for m in done
        if is_grid(config, m) and variant(config, m) == variant(config, method)
    ]
    best = [(max(grid)[1], "the best fixed radius of its variant")] if grid else []
    return best + [(m, "plain AdamW") for m in done if variant(config, m) in (None, "none")]


def compare(config: dict, records: dict, task: str) -> list[str]:
    """Each LETS method (two seeds or more) against the best fixed radius of its own variant and against AdamW."""
    lets = [m for m in config["methods"] if learns_radius(config, m) and len(_runs(records, task, m)) >= 2]
    return [
        versus(records, task, m, other, label) for m in lets for other, label in references(config, records, task, m)
    ]


SHORT_VERDICT = {"not a difference": "tie", None: "reading"}  # the table's words; "better", "worse" stay as they are


def render_verdicts(config: dict, records: dict, own: set[str]) -> str:
    """Markdown: one row per LETS method of this sweep, one column per task; each cell the method's mean +- sd (n)
    and its verdict against the best fixed radius of its variant and against AdamW, each named (`judge`: better,
    worse, tie under two sd, or a reading below ``VERDICT_SEEDS`` seeds). The table a radius search is judged by."""
    methods = [m for m in config["methods"] if m in own and learns_radius(config, m)]
    lines = ["| LETS method | " + " | ".join(config["tasks"]) + " |", "|---|" + "---|" * len(config["tasks"])]
    for method in methods:
        cells = []
        for task in config["tasks"]:
            runs = _runs(records, task, method)
            if not runs:
                cells.append("-")
                continue
            cell = f"{_mean_pm([r['value'] for r in runs])} (n={len(runs)})"
            for other, _ in references(config, records, task, method):
                verdict = judge(records, task, method, other)[3]
                cell += f"<br>vs {other}: {SHORT_VERDICT.get(verdict, verdict)}"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_details(config: dict, records: dict, own: set[str] | None = None) -> str:
    """Per task: every seed's value and final rho, minutes per run, and the comparisons the page's verdicts rest on.

    Wall minutes run from the start of the run's process to its end (loading, training, the dev evaluation): what a
    user waits on the sweep's machine, if nothing else ran. CPU minutes are the process's own user + system time
    (all its threads): a sweep paused with SIGSTOP, or slowed by another job, does not inflate them as it does the
    wall time.
    """
    out = []
    for task in config["tasks"]:
        rows = []
        for method in config["methods"]:
            runs = _runs(records, task, method)
            if not runs:
                continue
            seeds = ", ".join(f"{r['seed']}: {r['value']:.3f}" for r in runs)
            rhos = ", ".join(f"{r['final_rho']:.3g}" for r in runs) if runs[0]["lets"] else "-"
            minutes = statistics.fmean(r["wall_seconds"] for r in runs) / 60
            cpu = [r["cpu_seconds"] for r in runs if r.get("cpu_seconds") is not None]  # older records lack it
            cpu_minutes = f"{statistics.fmean(cpu) / 60:.1f}" if cpu else "-"
            rows.append(f"| {method} | {seeds} | {rhos} | {minutes:.1f} | {cpu_minutes} |")
        if not rows:
            continue
        metric = main_metric(task)
        out += [f"**{task}** ({metric} per seed; final rho per seed for LETS runs; minutes per run):", ""]
        out += [
            "| method | value per seed | final rho per seed | wall minutes | CPU minutes |",
            "|---|---|---|---|---|",
        ]
        out += [*rows, ""]
        grid = [m for m in config["methods"] if is_grid(config, m) and variant(config, m) == "sam"]
        grid_runs = [r for m in grid for r in _runs(records, task, m) if r["seed"] == config["seeds"][0]]
        for method in config["methods"]:
            lets_runs = _runs(records, task, method)
            if (
                learns_radius(config, method)
                and variant(config, method) == "sam"
                and lets_runs
                and grid
                and len(grid_runs) == len(grid)
            ):
                lets_min = statistics.fmean(r["wall_seconds"] for r in lets_runs) / 60
                grid_min = sum(r["wall_seconds"] for r in grid_runs) / 60
                out.append(
                    f"- Cost: one {method} run {lets_min:.1f} min; the {len(grid)} fixed-radius SAM runs of one seed "
                    f"({', '.join(grid)}) {grid_min:.1f} min together."
                )
                break
        out += compare(config, records, task)
        out += [""] + render_curves(config, records, task)
        out.append("")
    counted = [r for (_, m, _), r in records.items() if own is None or m in own]
    hours = sum(r["wall_seconds"] for r in counted) / 3600
    cpu = [r["cpu_seconds"] for r in counted if r.get("cpu_seconds") is not None]
    of = f" (the {len(cpu)} runs that recorded it)" if len(cpu) < len(counted) else ""
    out.append(
        f"Machine time of the finished runs ({len(counted)}): {hours:.1f} h wall, {sum(cpu) / 3600:.1f} CPU hours{of}."
    )
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))  # one blank line between tasks, whatever a block held


def dev_curves(config: dict, records: dict, task: str) -> dict[str, list[tuple[int, list[float]]]]:
    """Per method, the dev metric at each evaluation during training (``eval_strategy``), over its seeds: ``[(step,
    [value per seed]), ...]`` at the steps every seed evaluated at; methods whose runs evaluated once are left out."""
    metric = f"eval_{main_metric(task)}"
    curves = {}
    for method in config["methods"]:
        runs = [{e["step"]: e[metric] for e in r.get("eval_curve") or []} for r in _runs(records, task, method)]
        steps = sorted(set.intersection(*(set(c) for c in runs))) if runs else []
        if len(steps) >= 2:
            curves[method] = [(step, [c[step] for c in runs]) for step in steps]
    return curves


def render_curves(config: dict, records: dict, task: str) -> list[str]:
    """The dev curves as a table: one row per method, mean +- sd over seeds at each evaluation (the last column is
    the final value the verdicts read)."""
    curves = dev_curves(config, records, task)
    if not curves:
        return []
    steps = sorted({step for curve in curves.values() for step, _ in curve})
    lines = [
        f"Dev {main_metric(task)} at each evaluation during training (mean +- sd over "
        "seeds; columns: optimizer step):",
        "",
        "| method | " + " | ".join(str(step) for step in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for method, curve in curves.items():
        at = dict(curve)
        cells = [_mean_pm(at[step]) if step in at else "-" for step in steps]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def grid_radii(records: dict, task: str) -> dict[float, list[str]]:
    """The fixed radii of a task's finished runs, each with the methods that ran at it (SAM's and ASAM's radii are
    on different scales, so the plot names the method beside each dashed line, not just the number)."""
    grid: dict[float, set[str]] = {}
    for (t, method, _), r in records.items():
        rho = r["settings"].get("sam_rho")
        if t == task and not r["lets"] and rho is not None and r["settings"].get("sam_variant", "sam") != "none":
            grid.setdefault(rho, set()).add(method)
    return {rho: sorted(grid[rho]) for rho in sorted(grid)}


def render_plot(config: dict, records: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, methods = config["tasks"], list(config["methods"])
    curves = {task: dev_curves(config, records, task) for task in tasks}
    n_rows = 3 if any(curves.values()) else 2  # a third row for the dev curves when runs evaluated during training
    fig, axes = plt.subplots(n_rows, len(tasks), figsize=(4.5 * len(tasks), 3.5 * n_rows), squeeze=False)
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        for x, method in enumerate(methods):
            values = [r["value"] for r in _runs(records, task, method)]
            if values:
                ax.scatter([x] * len(values), values, color="tab:blue", s=14, alpha=0.7)
                ax.hlines(statistics.fmean(values), x - 0.3, x + 0.3, color="black")
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{task}: {main_metric(task)}")
        ax_rho, labelled = axes[1][col], set()
        for (t, m, _), r in sorted(records.items()):
            if t == task and r.get("rho_trajectory"):
                steps, rhos = zip(*r["rho_trajectory"])
                start = r["settings"].get("sam_rho", rhos[0])  # each line starts at its own initial radius
                color = f"C{methods.index(m) % 10}"  # one colour per method, one line per seed
                label = None if m in labelled else m
                labelled.add(m)
                ax_rho.plot((0,) + steps, (start,) + rhos, lw=1, color=color, label=label)
        for rho, names in grid_radii(records, task).items() if ax_rho.lines else []:  # to read learned radii against
            ax_rho.axhline(rho, color="gray", lw=0.6, ls="--")
            ax_rho.annotate(", ".join(names), (0, rho), fontsize=6, color="gray", va="bottom")
        ax_rho.set_xlabel("optimizer step")
        ax_rho.set_ylabel("rho (LETS runs; dashed: fixed radii)")
        if ax_rho.lines:
            ax_rho.set_yscale("log")
            ax_rho.legend(fontsize=6)
        for method, curve in curves[task].items():
            steps, values = zip(*curve)
            color = f"C{methods.index(method) % 10}"
            axes[2][col].plot(steps, [statistics.fmean(v) for v in values], lw=1.5, color=color, label=method)
            for seed_values in zip(*values):  # one thin line per seed
                axes[2][col].plot(steps, seed_values, lw=0.5, alpha=0.4, color=color)
        if n_rows == 3:
            axes[2][col].set_xlabel("optimizer step")
            axes[2][col].set_ylabel("dev metric during training (mean; thin: seeds)")
            axes[2][col].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def with_baselines(config: dict, records: dict) -> tuple[dict, dict]:
    """The config and records to render: the sweep's own, preceded by the ``baselines`` methods' finished runs of
    other sweeps (their tasks and seeds restricted to this one's). ``baselines`` is one ``{config, methods}`` or a
    list of them (earlier entries first); each is refused when its sweep's ``base`` differs from this one's."""
    specs = baseline_specs(config)
    if not specs:
        return config, records
    methods, theirs = {}, {}
    for spec in specs:
        other = load_config(spec["config"])
        if other["base"] != config["base"]:
            keys = sorted(
                k for k in set(other["base"]) | set(config["base"]) if other["base"].get(k) != config["base"].get(k)
            )
            raise ValueError(
                f"baselines {spec['config']}: its base differs from this sweep's ({', '.join(keys)}); its runs are "
                "not baselines of these. Make the bases equal or drop 'baselines'."
            )
        missing = [m for m in spec["methods"] if m not in other["methods"]]
        if missing:
            raise ValueError(f"baselines {spec['config']}: no method {', '.join(missing)} there.")
        mine = {m: other["methods"][m] for m in spec["methods"] if m not in config["methods"] and m not in methods}
        wanted = {(t, m, s) for t in config["tasks"] for m in mine for s in config["seeds"]}
        theirs.update({key: r for key, r in finished(other["results"]).items() if key in wanted})
        methods.update(mine)
    return {**config, "methods": {**methods, **config["methods"]}}, {**theirs, **records}


def baseline_specs(config: dict) -> list[dict]:
    """``baselines`` as a list of ``{config, methods}`` (none, one, or several)."""
    spec = config.get("baselines")
    return [] if not spec else [spec] if isinstance(spec, dict) else list(spec)


def render(config: dict, command: str) -> None:
    planned = set(plan(config))  # runs the config no longer asks for stay in the file, out of the table
    records = {key: r for key, r in finished(config["results"]).items() if key in planned}
    stem = os.path.splitext(config["results"])[0]
    total = len(planned)
    view, shown = with_baselines(config, records)
    text = f"{render_table(view, shown)}\n\n{len(records)} of {total} runs finished. Command: `{command}`\n"
    taken = set(config["methods"])
    for spec in baseline_specs(config):  # each line names the methods read from that sweep (the first that lists one)
        names = [m for m in spec["methods"] if m not in taken]
        taken.update(names)
        text += f"Baselines ({', '.join(names)}): `{spec['config']}`.\n"
    if config.get("verdicts"):  # the LETS methods' verdicts per task, one table
        head = f"Verdicts (two-sd rule; a cell with fewer than {VERDICT_SEEDS} seeds is a reading):"
        text += f"\n{head}\n\n{render_verdicts(view, shown, set(config['methods']))}\n"
    if config.get("details"):  # per-seed values, minutes per run and the grid comparisons under the table
        text += f"\n{render_details(view, shown, own=set(config['methods']))}\n"
    atomic_write_text(f"{stem}.md", text)
    page = config.get("results_page")  # optional: keep a docs page's copy of the table current
    if page and os.path.isfile(page):
        with open(page) as f:
            content = f.read()
        name = os.path.basename(stem)  # one pair of markers per results file: a page can hold several sweeps
        start, end = f"<!-- sweep-table:{name}:start -->\n", f"<!-- sweep-table:{name}:end -->"
        if content.count(start) > 1:  # only the first copy would be rewritten: the second would go stale unseen
            raise ValueError(f"{page} holds the table {name} more than once: keep one start/end marker pair.")
        if start in content and end in content:
            head, rest = content.split(start, 1)
            atomic_write_text(page, head + start + text + rest[rest.index(end) :])
    if records:
        render_plot(view, shown, f"{stem}.png")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="sweep config (.yaml or .json)")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (one sitting)")
    parser.add_argument("--render-only", action="store_true", help="only redraw the table and plot")
    parser.add_argument("--tasks", nargs="+", help="run only these of the config's tasks (to split a sweep)")
    parser.add_argument("--seeds", nargs="+", type=int, help="run only these of the config's seeds (to split a sweep)")
    parser.add_argument("--methods", nargs="+", help="run only these of the config's methods")
    opts = parser.parse_args(argv)
    config = load_config(opts.config)
    command = (
        f"python -m glue_runs.studies.sweep {opts.config}"  # what produces the table: not --max-runs/--render-only
    )
    done, new = finished(config["results"]), 0
    check_settings(config, done)
    for task, method, seed in [] if opts.render_only else plan(config):
        if (task, method, seed) in done or not selected(opts, task, method, seed):
            continue
        if opts.max_runs is not None and new >= opts.max_runs:
            break
        print(f"[sweep] {task} {method} seed {seed}", flush=True)
        record = run_one(config, task, method, seed)
        append(config["results"], record)
        done[(task, method, seed)] = record
        new += 1
        print(
            f"[sweep]   {record['metric']} = {record['value']:.4f} rho = {record['final_rho']} "
            f"({record['wall_seconds']} s)",
            flush=True,
        )
        render(config, command)
    render(config, command)
    return done


def selected(opts: argparse.Namespace, task: str, method: str, seed: int) -> bool:
    """Whether ``--tasks``/``--methods``/``--seeds`` (absent: everything) let this run through. Two processes given
    disjoint selections share one results file: each appends its own records and renders the table from the file."""
    wanted = ((opts.tasks, task), (opts.methods, method), (opts.seeds, seed))
    return all(chosen is None or value in chosen for chosen, value in wanted)


if __name__ == "__main__":
    main()
