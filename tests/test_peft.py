"""PEFT LoRA under LETSTrainer: only the adapters (and the head PEFT leaves trainable) move, the checkpoint holds the
adapter files and the LETS state, and a resume equals the uninterrupted run."""

import os

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model
from toy import params_of, rule_data, tiny_bert
from transformers import TrainerCallback

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.checkpoint import LETS_STATE_NAME


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step


def lora_bert():
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"])
    return get_peft_model(tiny_bert(), config)


def run(base_args, out, variant, resume=None, callbacks=()):
    model = lora_bert()
    before = params_of(model)
    settings = dict(base_args, output_dir=str(out), save_strategy="steps", save_steps=4, lets_guard_tolerance=0.2)
    args = LETSTrainingArguments(
        **settings,
        sam_variant=variant,
        sam_rho=0.05,
        max_steps=8,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        lets_interval=2,
        lets_lr=0.1,
    )
    trainer = LETSTrainer(model=model, args=args, train_dataset=rule_data(96), callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=resume)
    return trainer, before, params_of(model)


@pytest.mark.parametrize("variant", ["sam", "asam"])
def test_lora_moves_only_the_adapters_and_resumes_exactly(base_args, tmp_path, variant):
    trainer, before, after = run(base_args, tmp_path / "a", variant)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    frozen = set(before) - trainable
    assert len(frozen) > 20  # the whole BERT body
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"frozen {name} moved"
    assert [n for n in trainable if torch.equal(before[n], after[n])] == []  # every adapter and the head moved
    assert trainer.rho != 0.05 and len(trainer.lets_history) == 4

    checkpoint = tmp_path / "a" / "checkpoint-4"
    files = set(os.listdir(checkpoint))
    assert {"adapter_model.safetensors", "adapter_config.json", LETS_STATE_NAME} <= files
    assert "model.safetensors" not in files  # PEFT saves the adapters, not the base model

    interrupted, _, _ = run(base_args, tmp_path / "b", variant, callbacks=[StopAt(4)])
    assert interrupted.state.global_step == 4
    resumed, _, resumed_after = run(base_args, tmp_path / "b", variant, resume=str(tmp_path / "b" / "checkpoint-4"))
    assert resumed.rho == pytest.approx(trainer.rho, rel=1e-9)
    assert len(resumed.lets_history) == len(trainer.lets_history)
    for a, b in zip(resumed.lets_history, trainer.lets_history):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12)
    for name in after:
        torch.testing.assert_close(resumed_after[name], after[name], rtol=0, atol=1e-6, msg=name)
