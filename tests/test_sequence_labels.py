"""Sequence labels (token classification, a causal LM's ``labels``, seq2seq targets): the carve holds out the asked
fraction uniformly and the loss guard has no label prior, since neither a class nor a target per example exists.

Before: the carve stratified on each example's *first* label value (token ids: 1 of 48 examples held out where 10%
was asked) and the prior was made of it (token classification: -0.0, a causal LM: 3.82 against a loss of 10.3)."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForTokenClassification,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
)

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.heldout import label_prior_loss, split_heldout

N, SEQ, VOCAB = 48, 8, 64


def token_classification():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, num_labels=5,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (N, SEQ), generator=g)
    labels = torch.randint(0, 5, (N, SEQ), generator=g)
    labels[:, 0] = -100  # the first token ([CLS]) is never labelled, as tokenizers' word alignment leaves it
    data = [
        {"input_ids": ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": labels[i]}
        for i in range(N)
    ]
    return BertForTokenClassification(config), data


def causal_lm():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (N, SEQ), generator=g)
    return GPT2LMHeadModel(config), [{"input_ids": ids[i], "labels": ids[i].clone()} for i in range(N)]


def seq2seq():
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0,
        pad_token_id=0,
    )  # fmt: skip
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (N, SEQ), generator=g)
    targets = torch.randint(1, VOCAB, (N, 4), generator=g)
    return T5ForConditionalGeneration(config), [{"input_ids": ids[i], "labels": targets[i]} for i in range(N)]


@pytest.mark.parametrize("make", [token_classification, causal_lm, seq2seq], ids=lambda f: f.__name__)
def test_sequence_labels_are_carved_uniformly_without_a_prior(base_args, make):
    model, data = make()
    assert label_prior_loss(model.config, data) is None
    args = LETSTrainingArguments(
        **{**base_args, "lets_guard_tolerance": 0.2}, max_steps=4, lets_interval=1, per_device_train_batch_size=8,
        learning_rate=1e-3, lets_lr=0.3,
    )  # fmt: skip
    trainer = LETSTrainer(model=model, args=args, train_dataset=data)
    split = trainer.lets_split
    assert len(split["heldout_indices"]) == round(0.1 * N) and len(split["train_indices"]) == N - round(0.1 * N)
    assert trainer.guard is not None and trainer.guard.prior is None  # the guard watches a rise only
    trainer.train()
    assert len(trainer.lets_history) == 3 and trainer.rho != pytest.approx(args.sam_rho)


def test_many_small_classes_still_give_the_asked_fraction():
    """100 classes of 3 examples: each stratum's round(0.3) is 0, and the split fell back to one example."""
    data = [{"labels": k % 100} for k in range(300)]
    _, heldout, _, heldout_idx = split_heldout(data, 0.1, seed=0)
    assert len(heldout_idx) == 30 and len({data[i]["labels"] for i in heldout_idx}) == 30  # one per class drawn


def test_a_class_label_per_example_is_still_stratified():
    data = [{"labels": int(k < 90)} for k in range(100)]  # 90 positives, 10 negatives
    _, _, _, heldout_idx = split_heldout(data, 0.2, seed=0)
    assert sorted(data[i]["labels"] for i in heldout_idx) == [0, 0] + [1] * 18
