"""The docs cannot drift: every CLI option is in docs/cli.md, every shipped config parses."""

import dataclasses
import glob
import os

import pytest
from transformers import TrainingArguments

from glue_runs.run_glue import DataArguments, ModelArguments, parse
from lets_hf import LETSTrainingArguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def test_every_cli_option_is_documented():
    text = read("docs/cli.md")
    trainer_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    ours = [f.name for cls in (ModelArguments, DataArguments, LETSTrainingArguments) for f in dataclasses.fields(cls)]
    missing = [name for name in ours if name not in trainer_fields and f"`--{name}`" not in text]
    assert not missing, f"document these in docs/cli.md: {missing}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "glue_runs", "configs", "*.json"))))
def test_shipped_configs_parse(tmp_path, path):
    model_args, data_args, args = parse([path, "--output_dir", str(tmp_path)])
    assert data_args.task_name and model_args.model_name_or_path
    if "demo" not in path:
        assert (args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs) == (2e-5, 32, 3)
        assert data_args.max_seq_length == 128 and args.sam_rho == 0.05 and args.lets
