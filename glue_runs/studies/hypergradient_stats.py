"""How much direction the radius hypergradient carries: signal-to-noise per run, from `lets_history.csv` files.

LETS moves log rho with Adam on one held-out batch's hypergradient per hyper-step. Whether that can take rho across
its 100-fold range depends on how consistent the hypergradient's sign is, which this measures for every LETS run
under a folder (a sweep's output root)::

    python -m glue_runs.studies.hypergradient_stats runs/sweep_full                    # run folders on disk
    python -m glue_runs.studies.hypergradient_stats docs/results/sweep_full.jsonl      # committed sweep records
    python -m glue_runs.studies.hypergradient_stats docs/results/a.jsonl docs/results/b.jsonl   # one table of both

Per run: the hyper-steps counted, how many pointed down (a positive dF/drho shrinks rho), the per-step
signal-to-noise mean/sd, the run's mean in standard errors (|t| < 2: the whole run's hypergradients do not agree on a
direction), the same test on signs alone, (down - up)/sqrt(n), which the hypergradient's falling scale over a run and
its heavy tails do not distort, the largest value over the median size, and how many independent samples of such a
hypergradient an estimate would have to average for a signal-to-noise of 1, (sd/mean)^2, if the run were stationary:
a rough scale for any averaging scheme (more held-out batches, or the look-ahead summed over more steps), not a
promise, since it cannot tell which source the noise comes from. Pure Python: no torch.

``--replay adam signum`` (results JSONL only) feeds each run's recorded ``dF/ds = rho dF/drho`` to the library's own
radius step (`lets_hf.radius.radius_step`, default ``lets_lr`` and bounds of the run's start) and prints
where rho would have ended under each radius optimizer; ``--clip 3``, ``--travel 1e4`` and ``--schedule linear``
replay with that ``lets_clip``, ``lets_travel`` and ``lets_lr_schedule`` (one setting per call). Open loop: the
values stay those recorded along the run's own trajectory, so it ranks optimizers on the same noise, it does not
predict a run; the loss guard is not replayed (a run its trips cut, as full CoLA's, is not comparable).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "HypergradientStats",
    "find_histories",
    "main",
    "read_hypergradients",
    "read_records",
    "render",
    "replay",
    "summarize",
]


@dataclass(frozen=True)
class HypergradientStats:
    """Summary of one run's hypergradients (see the module docstring for what each number means)."""

    n: int
    positive: int
    mean: float
    sd: float
    max_over_median: float

    @property
    def snr(self) -> float:
        """Per-hyper-step signal-to-noise, mean/sd: the direction one hyper-step gives, in units of its noise."""
        return self.mean / self.sd

    @property
    def t(self) -> float:
        """The run's mean in standard errors, mean / (sd / sqrt(n))."""
        return self.snr * math.sqrt(self.n)

    @property
    def sign_z(self) -> float:
        """Signs alone: (pointing down - pointing up) / sqrt(n), a standard normal if signs were coin tosses."""
        return (2 * self.positive - self.n) / math.sqrt(self.n)

    @property
    def samples_for_snr_1(self) -> float:
        """Independent samples to average for mean/sd = 1, (sd/mean)^2: infinite when the mean is zero."""
        return (self.sd / self.mean) ** 2 if self.mean else math.inf


def summarize(values: Sequence[float]) -> HypergradientStats:
    """Summarise hypergradients; exact zeros (a step the optimizer did not move, as warm-up's first) are dropped."""
    values = [v for v in values if v != 0.0]
    if len(values) < 2:
        raise ValueError(f"need at least two non-zero hypergradients to summarise, got {len(values)}")
    median = statistics.median(abs(v) for v in values)
    return HypergradientStats(
        n=len(values),
        positive=sum(v > 0 for v in values),
        mean=statistics.fmean(values),
        sd=statistics.stdev(values),
        max_over_median=max(abs(v) for v in values) / median if median else math.inf,
    )


def read_hypergradients(path: str) -> list[float]:
    """The `hypergradient` column of a run's lets_history.csv, as floats; the caller names the file in errors."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "hypergradient" not in (reader.fieldnames or ()):
            raise ValueError("no 'hypergradient' column: is it a lets_history.csv written by lets-glue?")
        return [float(row["hypergradient"]) for row in reader]


def find_histories(root: str) -> list[str]:
    """Every lets_history.csv under root, sorted."""
    found = sorted(
        os.path.join(folder, "lets_history.csv") for folder, _, files in os.walk(root) if "lets_history.csv" in files
    )
    if not found:
        raise FileNotFoundError(f"no lets_history.csv under {root!r}: point it at a sweep's output root (runs/...)")
    return found


def read_records(
    path: str, before_trip: bool = False, steps: tuple[int, int] | None = None
) -> list[tuple[str, list[float]]]:
    """``(task/method/seedN, hypergradients)`` of every LETS record in a sweep's results JSONL that kept its
    per-hyper-step history (``lets_history``; records made before it was kept have none and are left out). With
    ``before_trip``, only the hyper-steps before the loss guard's first trip (the radius the run was meant to have);
    with ``steps = (first, last)``, only those whose optimizer step lies in that range (a phase of training)."""
    runs = []
    with open(path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else {}
            if record.get("lets_history"):
                name = f"{record['task']}/{record['method']}/seed{record['seed']}"
                history = record["lets_history"]
                if before_trip:
                    history = history[: next((i for i, h in enumerate(history) if h["guard_tripped"]), len(history))]
                if steps is not None:
                    history = [h for h in history if steps[0] <= h["step"] <= steps[1]]
                runs.append((name, [float(h["hypergradient"]) for h in history]))
    if not runs:
        raise ValueError(f"{path} holds no record with a lets_history (LETS runs of a sweep that keeps them)")
    return sorted(runs)


def replay(
    record: dict, optimizer: str, travel: float = 100.0, clip: float = 0.0, schedule: str = "constant"
) -> float:
    """The final rho ``radius_step`` reaches on a record's recorded ``dF/ds`` with this ``lets_optimizer``,
    ``lets_travel``, ``lets_clip`` and ``lets_lr_schedule`` (see the module docstring)."""
    from lets_hf.radius import RadiusState, planned_hyper_steps, radius_lr, radius_step, scheduled_lr

    history = [h for h in record["lets_history"] if float(h["hypergradient"]) != 0.0]
    rho0 = record["settings"]["sam_rho"]
    lr = radius_lr(travel, len(history), 1)  # the default lets_lr of a run with this many hyper-steps
    state = RadiusState(math.log(rho0))
    hyper_steps = planned_hyper_steps(len(history), 1)
    for k, h in enumerate(history):
        ds = float(h["rho"]) * float(h["hypergradient"])
        lr_k = scheduled_lr(lr, k, hyper_steps, schedule)
        state = radius_step(
            state, ds / state.rho, lr=lr_k, optimizer=optimizer, rho_min=rho0 / 100, rho_max=rho0 * 10, clip=clip
        )
    return state.rho


def render_replay(
    path: str, optimizers: Sequence[str], travel: float = 100.0, clip: float = 0.0, schedule: str = "constant"
) -> str:
    """A markdown table: each LETS record of a results JSONL, its final rho and the replayed ones."""
    lines = ["| run | final rho | " + " | ".join(f"replayed: {o}" for o in optimizers) + " |"]
    lines.append("|---|---|" + "---|" * len(optimizers))
    with open(path) as f:
        records = sorted(
            (json.loads(line) for line in f if line.strip()), key=lambda r: (r["task"], r["method"], r["seed"])
        )
    for r in [r for r in records if r.get("lets_history")]:
        cells = " | ".join(f"{replay(r, o, travel, clip, schedule):.3g}" for o in optimizers)
        lines.append(f"| {r['task']}/{r['method']}/seed{r['seed']} | {r['final_rho']:.3g} | {cells} |")
    return "\n".join(lines)


def _runs(
    source: str, before_trip: bool = False, steps: tuple[int, int] | None = None
) -> list[tuple[str, list[float]]]:
    if os.path.isfile(source):
        return read_records(source, before_trip, steps)
    if steps is not None or before_trip:
        flag = "--steps" if steps is not None else "--before-trip"
        raise ValueError(f"{flag} reads a sweep's results JSONL (its records keep each hyper-step's step and trips)")
    runs = []
    for path in find_histories(source):
        try:
            runs.append((os.path.relpath(os.path.dirname(path), source), read_hypergradients(path)))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return runs


def render(sources: str | Sequence[str], before_trip: bool = False, steps: tuple[int, int] | None = None) -> str:
    """A markdown table, one row per run: the LETS records of a results JSONL, or every lets_history.csv under a
    folder (named by its path relative to it); given several sources, the rows of all of them sorted by name (the
    before/after table of two sweeps in one command). ``before_trip`` and ``steps``: see `read_records`."""
    sources = [sources] if isinstance(sources, str) else sources
    lines = [
        "| run | hyper-steps | pointing down | mean/sd per step | run mean in SEs | sign z | max/median size | "
        "samples for SNR 1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, values in sorted(run for source in sources for run in _runs(source, before_trip, steps)):
        try:
            s = summarize(values)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        lines.append(
            f"| {name} | {s.n} | {s.positive} | {s.snr:+.2f} | {s.t:+.2f} | {s.sign_z:+.2f} | "
            f"{s.max_over_median:.0f} | {s.samples_for_snr_1:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root",
        nargs="+",
        help="a sweep's results JSONL (docs/results/...) or a folder of runs with lets_history.csv files; several: "
        "one table of all their runs",
    )
    parser.add_argument(
        "--replay", nargs="+", metavar="OPTIMIZER", help="replay the recorded values through these radius optimizers"
    )
    parser.add_argument("--travel", type=float, default=100.0, help="--replay with this lets_travel (default 100)")
    parser.add_argument("--clip", type=float, default=0.0, help="--replay with this lets_clip (default 0: off)")
    parser.add_argument("--schedule", default="constant", help="--replay with this lets_lr_schedule")
    parser.add_argument(
        "--before-trip", action="store_true", help="only the hyper-steps before the loss guard's first trip (JSONL)"
    )
    parser.add_argument(
        "--steps",
        nargs=2,
        type=int,
        metavar=("FIRST", "LAST"),
        help="only the hyper-steps at optimizer steps FIRST..LAST, both included (JSONL): a phase of training",
    )
    args = parser.parse_args(argv)
    if args.replay and (len(args.root) != 1 or not os.path.isfile(args.root[0])):
        parser.error("--replay reads one sweep's results JSONL (its records keep rho and the settings)")
    try:
        table = (
            render_replay(args.root[0], args.replay, args.travel, args.clip, args.schedule)
            if args.replay
            else render(args.root, args.before_trip, tuple(args.steps) if args.steps else None)
        )
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    print(table)
    return table


if __name__ == "__main__":
    main()
