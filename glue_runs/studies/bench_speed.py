"""The cost of SAM and LETS, side by side: `python -m glue_runs.studies.bench_speed --model minilm`.

Every method trains the same model from the same weights on the same batches, on this machine, in one run. After
one untimed block that warms the process up, the methods are interleaved (A B C ... A B C ...), each block a fresh
`train()` of ``warmup + window`` steps; a block's time is the mean over its last ``window`` optimizer steps (so a
hyper-step every ``lets_interval`` steps is amortised, not hidden by a median), and a method's time is the median
over ``repeats`` blocks. The timing process keeps the memory it frees for reuse (`keep_freed_memory`; ``--allocator
system`` for glibc's defaults). A LETS row's ``/ SAM paired`` is ``1 / (1 - own share)``, the share of its steps'
time spent in LETS's own work, timed inside the same steps (`StepTimer`): on a host whose speed comes in bursts it
resolves what blocks minutes apart cannot. Peak memory is the peak RSS of a separate process per method on CPU, or
``torch.cuda.max_memory_allocated`` on CUDA, also expressed as parameter-sized buffers over ERM.
Floors: SAM/ERM = 2 (two passes), LETS = SAM x (1 + 1/(2 x lets_interval)); with ``sam_every = k`` one step in k
takes two passes and the others one, so (k + 1) / k of ERM, plus 1 / lets_interval with LETS.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, TrainerCallback

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf import trainer as lets_trainer_module

from ..report import atomic_write_text
from ..run_glue import resolve_model_path

# name -> LETSTrainingArguments overrides (None: the stock Trainer with AdamW, "ERM")
METHODS: dict[str, dict | None] = {
    "erm": None,
    "none": dict(sam_variant="none"),
    "sam": dict(sam_variant="sam", lets=False),
    "lets-sam": dict(sam_variant="sam", lets=True, lets_interval=10),
    "lets-sam-horizon": dict(sam_variant="sam", lets=True, lets_interval=10, lets_horizon="interval"),
    "lets-sam-i1": dict(sam_variant="sam", lets=True, lets_interval=1),
    "lets-sam-hb16": dict(sam_variant="sam", lets=True, lets_interval=10, lets_batch_size=16),
    "lets-sam-i20": dict(sam_variant="sam", lets=True, lets_interval=20),
    "asam": dict(sam_variant="asam", sam_rho=0.5, lets=False),
    "lets-asam": dict(sam_variant="asam", sam_rho=0.5, lets=True, lets_interval=10),
    "lets-sam-fisher": dict(sam_variant="sam", lets=True, lets_interval=10, lets_hvp="fisher"),
    "lets-sam-exact": dict(sam_variant="sam", lets=True, lets_interval=10, lets_hvp="exact"),
}
# The cheaper SAM modes (sam_every k): interval SAM ("isam-k") and LookSAM, each alone and with LETS on top.
for _k in (2, 5, 10):
    for _name, _reuse in (("isam", "none"), ("looksam", "looksam")):
        METHODS[f"{_name}-{_k}"] = dict(sam_variant="sam", lets=False, sam_every=_k, sam_reuse=_reuse)
        METHODS[f"lets-{_name}-{_k}"] = dict(
            sam_variant="sam", lets=True, lets_interval=10, lets_horizon="interval", sam_every=_k, sam_reuse=_reuse
        )


def build_model(name: str) -> torch.nn.Module:
    """``minilm`` (the packaged 22.7M BERT), ``bert-base`` (random 110M BertConfig()), ``tiny`` (for the test)."""
    torch.manual_seed(0)
    if name == "minilm":
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path("packaged:minilm-l6"), num_labels=2
        )
    if name == "bert-base":
        return BertForSequenceClassification(BertConfig(num_labels=2))
    if name == "tiny":
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=128,
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                num_labels=2,
            )
        )
    raise ValueError(f"Unknown --model {name!r}: minilm, bert-base or tiny.")


def make_data(n: int, seq: int, vocab: int, seed: int) -> list[dict]:
    """Full-length random sequences: every batch costs the same, so step times compare."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (n, seq), generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(seq, dtype=torch.long), "labels": labels[i]}
        for i in range(n)
    ]


def keep_freed_memory() -> bool:
    """Have glibc keep the memory a process frees for its next allocations (``mallopt``: no ``mmap`` for large
    blocks, no trimming of the heap below 2 GiB of free space at its top), as PyTorch's CUDA caching allocator and
    jemalloc do. Returns False (and changes nothing) off glibc.

    Why the timing process does this: with glibc's defaults a CPU step maps part of its memory afresh and pays a page
    fault per 4 KiB, and how much depends on where the heap's free blocks happen to lie, not on the method: SAM's
    blocks faulted 25k-90k times a step on MiniLM, LETS-SAM's 69k-112k (docs/bench/minilm_copy.json and
    minilm_i20.json; docs/results-log.md section 7, "What the CPU's allocator costs"), more noise than the 5% a
    held-out pass every 10 steps costs. Kept, the faults are gone and the methods differ by their work.
    ``--allocator system`` measures glibc's defaults."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


# What a LETSTrainer does that SAM does not: the held-out pass, the look-ahead's update (`lookahead_add_`), the
# curvature buffer and its secant, the radius step. Everything else in its step is SAM's work, except the two dot
# products with Z on a hyper-step (one pass each, once per window: left untimed).
LETS_OWN_WORK = ("_heldout_pass", "_accumulate_curvature", "_form_curvature", "_radius_step")


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from its first micro-batch to after the optimizer and scheduler, and the
    process's minor page faults in it (on CPU the cost of fresh memory shows there, not in any one kernel); for a
    LETSTrainer it `watch`es, also the seconds of each step spent in LETS's own work (``own``).

    The own time pairs LETS with SAM inside one step: ``1 / (1 - own share)`` is LETS-SAM over SAM with both halves
    timed under the same load, where two blocks minutes apart differ by the host's bursts (docs/results-log.md section
    7). It leaves out what LETS costs SAM's own work indirectly (page faults, caches); the side-by-side ratio
    keeps that."""

    def __init__(self):
        self.times: list[float] = []
        self.faults: list[int] = []
        self.own: list[float] = []
        self._start, self._faults, self._own = 0.0, 0, 0.0
        self._watching = None

    def watch(self, trainer: LETSTrainer) -> None:
        """Time ``LETS_OWN_WORK`` on this trainer and `lookahead_add_` until the end of its training."""
        for name in LETS_OWN_WORK:
            setattr(trainer, name, self._timed(getattr(trainer, name)))
        self._watching = lets_trainer_module.lookahead_add_
        lets_trainer_module.lookahead_add_ = self._timed(self._watching)

    def _timed(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            _sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                self._own += time.perf_counter() - start

        return timed

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self._start, self._own = time.perf_counter(), 0.0

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.times.append(time.perf_counter() - self._start)
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self._faults)
        if self._watching is not None:
            self.own.append(self._own)

    def on_train_end(self, args, state, control, **kwargs):
        if self._watching is not None:
            lets_trainer_module.lookahead_add_ = self._watching


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_block(
    method: str, opts: argparse.Namespace, steps: int, timer: TrainerCallback | None = None
) -> torch.nn.Module:
    model = build_model(opts.model)
    vocab = model.config.vocab_size
    common = dict(
        output_dir=os.path.join(opts.scratch, method),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10**6,
        max_steps=steps,
        per_device_train_batch_size=opts.batch,
        learning_rate=2e-5,
        seed=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=opts.bf16,
        fp16=opts.fp16,
    )
    train, heldout = make_data(opts.batch * steps, opts.seq, vocab, 0), make_data(opts.batch * 4, opts.seq, vocab, 1)
    settings = METHODS[method]
    callbacks = [timer] if timer else []
    if settings is None:
        from transformers import Trainer, TrainingArguments

        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=train, callbacks=callbacks)
        trainer.model_accepts_loss_kwargs = False  # the same loss scaling as LETSTrainer (transformers #47688)
    else:
        args = LETSTrainingArguments(**common, **settings)
        heldout = heldout if args.lets else None
        trainer = LETSTrainer(model=model, args=args, train_dataset=train, lets_dataset=heldout, callbacks=callbacks)
        if timer is not None and args.lets:
            timer.watch(trainer)
    trainer.train()
    return model


def measure_times(methods: list[str], opts: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Seconds, minor page faults and (LETS only) seconds of LETS's own work of each timed optimizer step, one list
    per block (repeat), methods interleaved.

    One untimed block of the first method runs first: the process's first block is slower than any later one
    (likely allocator and thread-pool warm-up; on BERT-base ERM's first block ran 11% slower than its second in two
    runs), and without it that cost fell on ERM, the denominator of every ratio.
    """
    train_block(methods[0], opts, opts.warmup + opts.window)
    blocks: dict[str, list[list[float]]] = {m: [] for m in methods}
    faults: dict[str, list[list[int]]] = {m: [] for m in methods}
    own: dict[str, list[list[float]]] = {m: [] for m in methods}
    for repeat in range(opts.repeats):
        for method in methods:
            timer = StepTimer()
            train_block(method, opts, opts.warmup + opts.window, timer)
            blocks[method].append(timer.times[opts.warmup :])
            faults[method].append(timer.faults[opts.warmup :])
            if timer.own:
                own[method].append(timer.own[opts.warmup :])
            mean = statistics.fmean(blocks[method][-1])
            print(f"  repeat {repeat + 1}/{opts.repeats} {method:16s} {mean:.3f} s/step", flush=True)
    return blocks, faults, own


def measure_memory(method: str, opts: argparse.Namespace) -> float:
    """Peak bytes for ``method``: a fresh process's peak RSS on CPU, max_memory_allocated on CUDA."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        train_block(method, opts, 2)
        return float(torch.cuda.max_memory_allocated())
    cmd = [sys.executable, "-m", "glue_runs.studies.bench_speed", "--memory-worker", method, *opts.passthrough]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def profile(method: str, opts: argparse.Namespace) -> None:
    """Where a step's time goes: torch.profiler over ``window`` steps after ``warmup``, ops by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    class Profiled(TrainerCallback):
        prof = torch_profile(activities=[ProfilerActivity.CPU])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == opts.warmup:  # start after the warm-up steps
                self.prof.__enter__()

        def on_train_end(self, *args, **kwargs):
            self.prof.__exit__(None, None, None)

    hook = Profiled()
    train_block(method, opts, opts.warmup + opts.window, hook)
    table = hook.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print(f"== {method}: {opts.window} steps ==\n{table}", flush=True)


def method_args(method: str, batch: int = 32) -> LETSTrainingArguments | None:
    """The method's arguments as LETSTrainingArguments resolves them (its defaults not written again here), or None
    where the radius is not learned (no held-out pass)."""
    settings = METHODS[method]
    if not (settings and settings.get("lets") and settings.get("sam_variant") != "none"):
        return None
    return LETSTrainingArguments(output_dir="unused", per_device_train_batch_size=batch, use_cpu=True, **settings)


def floors(method: str, batch: int = 32) -> dict[str, float | None]:
    """The reference points: (floor vs ERM, floor vs SAM). The held-out pass costs ``lets_batch_size / batch`` of
    a training pass, with ``lets_batch_size`` and ``lets_interval`` as `method_args` resolves them."""
    settings = METHODS[method]
    if settings is None or settings.get("sam_variant") == "none":
        return {"floor_vs_erm": 1.0, "floor_vs_sam": 0.5}
    if settings.get("lets_hvp") == "exact":  # + a forward and a double backward per feeding step: no floor given
        return {"floor_vs_erm": None, "floor_vs_sam": None}
    k = settings.get("sam_every", 1)
    args = method_args(method, batch)
    heldout = args.heldout_batch_size / batch / args.lets_interval if args else 0.0  # in training passes per step
    passes = (k + 1) / k + heldout  # ERM's step: one pass
    return {"floor_vs_erm": passes, "floor_vs_sam": passes / 2}


def report(
    blocks: dict[str, list[list[float]]],
    memory: dict[str, float],
    n_params: int,
    opts,
    faults: dict[str, list[list[int]]],
    own: dict[str, list[list[float]]] | None = None,
) -> tuple[list[dict], str]:
    """One row per method, and the Markdown table. A ``--memory-only`` run has no timings, so its table has none.

    A method's time is the median over blocks of the block's mean step time; every step's time and page-fault count
    is kept in the row (``step_times``, ``step_faults``), so a hyper-step's own cost can be read off. A LETS row
    also has ``own_share``, the median over blocks of the share of its steps' time spent in LETS's own work
    (`StepTimer`), and ``paired_vs_sam = 1 / (1 - own_share)``.
    """
    timed = not opts.memory_only
    means = {m: [statistics.fmean(b) for b in steps] for m, steps in blocks.items()} if timed else {}
    erm = statistics.median(means["erm"]) if "erm" in means else None
    sam = statistics.median(means["sam"]) if "sam" in means else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    setting = (
        f"Model {opts.model} ({n_params / 1e6:.1f}M trainable parameters), batch {opts.batch}, "
        f"sequence {opts.seq}, device {device}, "
    )
    memory_columns = "peak MB | extra buffers vs ERM |"
    if timed:
        setting += f"{opts.repeats} repeats of {opts.warmup}+{opts.window} steps, "
        setting += "freed memory kept for reuse." if opts.kept else "the system allocator's defaults."
        header = (
            f"| method | s/step (median) | spread | / ERM | floor | / SAM | floor | / SAM paired | {memory_columns}"
        )
    else:
        setting += "peak memory of 2 training steps per method (no timing)."
        header = f"| method | {memory_columns}"
    rows, lines = [], [setting, "", header, "|" + "---|" * (header.count("|") - 1)]
    fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for method in blocks:
        row = {"method": method, "peak_memory_bytes": memory.get(method)}
        if "erm" in memory and method in memory:
            row["extra_buffers_vs_erm"] = (memory[method] - memory["erm"]) / (4 * n_params)
        peak = f"{fmt(row['peak_memory_bytes'] and row['peak_memory_bytes'] / 2**20, 0)} | "
        peak += f"{fmt(row.get('extra_buffers_vs_erm'), 1)} |"
        if not timed:
            rows.append(row)
            lines.append(f"| {method} | {peak}")
            continue
        times = means[method]
        t = statistics.median(times)
        if (own or {}).get(method):
            shares = [sum(o) / sum(b) for o, b in zip(own[method], blocks[method])]
            row.update(own_step_seconds=own[method], own_share=statistics.median(shares))
            row["paired_vs_sam"] = 1 / (1 - row["own_share"])
        row.update(
            seconds_per_step=t,
            all_blocks=times,
            step_times=blocks[method],
            step_faults=faults[method],
            **floors(method, opts.batch),
            ratio_vs_erm=t / erm if erm else None,
            ratio_vs_sam=t / sam if sam else None,
        )
        rows.append(row)
        lines.append(
            f"| {method} | {t:.3f} | {min(times):.3f}-{max(times):.3f} | {fmt(row['ratio_vs_erm'])} | "
            f"{fmt(row['floor_vs_erm'])} | {fmt(row['ratio_vs_sam'])} | {fmt(row['floor_vs_sam'])} | "
            f"{fmt(row.get('paired_vs_sam'), 3)} | {peak}"
        )
    return rows, "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm", help="minilm, bert-base or tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2, help="steps per block before timing")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="timed steps per block, a multiple of every timed method's lets_interval (each block then holds its "
        "share of hyper-steps); default: the least such multiple that is at least 10",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory processes, no timing")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    p.add_argument("--scratch", default="/tmp/lets_bench")
    p.add_argument(
        "--profile",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="instead of timing: profile these methods' steps with torch.profiler and print the top ops",
    )
    p.add_argument(
        "--allocator",
        choices=["keep", "system"],
        default="keep",
        help="keep: the timing process keeps freed memory for reuse (glibc's mallopt, `keep_freed_memory`), so page "
        "faults do not drown the methods' difference; system: glibc's defaults. Peak memory always uses the defaults",
    )
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    timed = [] if opts.memory_only or opts.memory_worker else (opts.profile or opts.methods)
    intervals = [args.lets_interval for args in map(method_args, timed, [opts.batch] * len(timed)) if args]
    step = math.lcm(*intervals) if intervals else 1
    if opts.window is None:
        opts.window = step * math.ceil(10 / step)
    elif opts.window % step:
        p.error(
            f"--window {opts.window} is not a multiple of every timed method's lets_interval "
            f"({sorted(set(intervals))}): a block would hold more or fewer hyper-steps than its share. Use a "
            f"multiple of {step}."
        )
    opts.passthrough = (
        ["--model", opts.model, "--batch", str(opts.batch), "--seq", str(opts.seq), "--scratch", opts.scratch]
        + (["--bf16"] if opts.bf16 else [])
        + (["--fp16"] if opts.fp16 else [])
    )
    return opts


def main(argv=None) -> list[dict]:
    opts = parse(argv)
    if opts.memory_worker:  # a child process: train 2 steps, print the peak RSS in bytes
        train_block(opts.memory_worker, opts, 2)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return []
    if opts.profile:
        for method in opts.profile:
            profile(method, opts)
        return []
    methods = ["erm", *[m for m in opts.methods if m != "erm"]]
    opts.kept = opts.allocator == "keep" and not opts.memory_only and keep_freed_memory()
    n_params = sum(p.numel() for p in build_model(opts.model).parameters() if p.requires_grad)
    blocks, faults, own = ({m: [] for m in methods}, {}, {}) if opts.memory_only else measure_times(methods, opts)
    memory = {} if opts.no_memory else {m: measure_memory(m, opts) for m in methods}
    rows, table = report(blocks, memory, n_params, opts, faults, own)
    command = "python -m glue_runs.studies.bench_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n{table}\n\nCommand: `{command}`")
    if opts.out:
        atomic_write_text(f"{opts.out}.md", f"{table}\n\nCommand: `{command}`\n")
        summary = {"command": command, "model": opts.model, "n_params": n_params, "kept": opts.kept, "rows": rows}
        atomic_write_text(f"{opts.out}.json", json.dumps(summary, indent=2))
    return rows


if __name__ == "__main__":
    main()
