"""Where HF users train: LETS with Trainer features, Seq2SeqTrainer, TRL's SFTTrainer, streaming data, the Hub's model
card, and the library without the GLUE command's packages. Every case trains a tiny model and checks that training
finishes, that rho moved, and that every example is either trained on or held out (docs/compatibility.md)."""

import os
import subprocess
import sys

import datasets
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer
from toy import tiny_bert, token_data
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from lets_hf import LETSSeq2SeqTrainer, LETSSeq2SeqTrainingArguments, LETSTrainer, LETSTrainingArguments
from lets_hf.sft import LETSSFTConfig, LETSSFTTrainer

N = 40
WORDS = "the a model learns radius sharp flat minimum loss held out batch step train test data token".split()


def accounted_for(trainer, n):
    split = trainer.lets_split
    assert len(split["train_indices"]) + len(split["heldout_indices"]) == n
    assert not set(split["train_indices"]) & set(split["heldout_indices"])
    assert len(trainer.train_dataset) == len(split["train_indices"])


def moved(trainer):
    """rho left its start at some hyper-step (signum can step back to it exactly)."""
    return any(h["rho"] != pytest.approx(trainer.args.sam_rho) for h in trainer.lets_history)


def lets_args(base_args, cls=LETSTrainingArguments, **kw):
    settings = dict(max_steps=4, lets_interval=1, lets_lr=0.3, per_device_train_batch_size=8, learning_rate=1e-3)
    return cls(**{**base_args, **settings, **kw})


# ---- Trainer features that work unchanged --------------------------------------------------------------------------
FEATURES = {
    "activation_checkpointing": dict(activation_checkpointing=True),
    "label_smoothing": dict(label_smoothing_factor=0.1),
    "adafactor": dict(optim="adafactor"),
    "sgd": dict(optim="sgd", learning_rate=0.05),
    "cosine_schedule": dict(lr_scheduler_type="cosine", warmup_steps=1),
    "accumulation_without_clipping": dict(
        gradient_accumulation_steps=2, per_device_train_batch_size=4, max_grad_norm=0
    ),
    "neftune": dict(neftune_noise_alpha=5.0),
    "dataloader_workers": dict(dataloader_num_workers=1),
    "bf16_cpu": dict(bf16=True),
    "group_by_length": dict(train_sampling_strategy="group_by_length"),
    "interval_sam": dict(sam_every=2, lets_interval=2, max_steps=6),
    "asam": dict(sam_variant="asam", sam_rho=0.1),
}


@pytest.mark.parametrize("name", list(FEATURES))
def test_a_trainer_feature_trains_with_lets(base_args, name):
    trainer = LETSTrainer(model=tiny_bert(), args=lets_args(base_args, **FEATURES[name]), train_dataset=token_data(N))
    trainer.train()
    assert trainer.state.global_step == trainer.args.max_steps
    assert moved(trainer)
    accounted_for(trainer, N)


def test_an_iterable_training_set_with_a_map_style_lets_dataset(base_args):
    rows = token_data(N)
    stream = datasets.IterableDataset.from_generator(lambda: iter(rows[:32]))
    heldout = datasets.Dataset.from_list([{k: v.tolist() for k, v in r.items()} for r in rows[32:]])
    trainer = LETSTrainer(model=tiny_bert(), args=lets_args(base_args), train_dataset=stream, lets_dataset=heldout)
    trainer.train()
    assert trainer.state.global_step == 4 and moved(trainer)


def test_a_streaming_lets_dataset_is_refused_with_the_fix(base_args):
    stream = datasets.IterableDataset.from_generator(lambda: iter(token_data(8)))
    with pytest.raises(ValueError, match=r"lets_dataset is a stream \(IterableDataset\).*stream.take\(1000\)"):
        LETSTrainer(model=tiny_bert(), args=lets_args(base_args), train_dataset=token_data(N), lets_dataset=stream)


# ---- Seq2SeqTrainer -----------------------------------------------------------------------------------------------
def test_seq2seq_trains_and_generates(base_args):
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0, pad_token_id=0
    )
    g = torch.Generator().manual_seed(0)
    rows = [
        {"input_ids": torch.randint(1, 64, (8,), generator=g), "labels": torch.randint(1, 64, (4,), generator=g)}
        for _ in range(N)
    ]
    args = lets_args(
        base_args, LETSSeq2SeqTrainingArguments, predict_with_generate=True, generation_max_length=5,
        per_device_eval_batch_size=4,
    )  # fmt: skip
    trainer = LETSSeq2SeqTrainer(model=T5ForConditionalGeneration(config), args=args, train_dataset=rows)
    trainer.train()
    assert moved(trainer)
    accounted_for(trainer, N)
    predictions = trainer.predict(rows[:4]).predictions
    assert predictions.shape[0] == 4 and predictions.ndim == 2  # generated token ids, not logits


# ---- TRL's SFTTrainer ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2():
    """A byte-level BPE tokenizer trained here on the test's own words (no download), GPT-2's special token."""
    g = torch.Generator().manual_seed(0)
    sentences = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (12,), generator=g)) for _ in range(200)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(sentences, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def gpt2_model(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return GPT2LMHeadModel(config)


def texts(n, words, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (words,), generator=g)) for _ in range(n)]


def sft(base_args, tokenizer, train, **kw):
    lets_dataset = kw.pop("lets_dataset", None)
    args = lets_args(base_args, LETSSFTConfig, max_length=24, **kw)
    trainer = LETSSFTTrainer(
        model=gpt2_model(tokenizer),
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        lets_dataset=lets_dataset,
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("words", [8, 60], ids=["short", "longer-than-max_length"])
def test_sft_on_text_holds_out_tokenized_truncated_examples(base_args, gpt2, words):
    """Before: the carve ran before SFTTrainer tokenized, the held-out split stayed text ("No columns in the
    dataset match the model's forward method signature"), and long examples reached GPT-2 untruncated."""
    trainer = sft(base_args, gpt2, datasets.Dataset.from_dict({"text": texts(N, words)}))
    assert moved(trainer)
    accounted_for(trainer, N)
    assert max(len(ids) for ids in trainer.lets_dataset["input_ids"]) <= 24


def test_sft_on_pre_tokenized_data(base_args, gpt2):
    ids = [gpt2(t)["input_ids"][:24] for t in texts(N, 10)]
    trainer = sft(base_args, gpt2, datasets.Dataset.from_dict({"input_ids": ids}))
    assert moved(trainer)
    accounted_for(trainer, N)


def test_sft_counts_the_tokens_plain_sft_trains_on(base_args, gpt2):
    """TRL's num_tokens counted SAM's second pass and the held-out pass too (1142 against 571 for 6 steps)."""
    train = datasets.Dataset.from_dict({"text": texts(32, 10)})
    heldout = datasets.Dataset.from_dict({"text": texts(8, 10, seed=1)})  # text: prepared as train_dataset is
    plain = sft(base_args, gpt2, train, sam_variant="none")
    lets = sft(base_args, gpt2, train, lets_dataset=heldout)
    assert "input_ids" in lets.lets_dataset.column_names and moved(lets)
    assert lets._total_train_tokens == plain._total_train_tokens > 0
    logged = [e["num_tokens"] for e in lets.state.log_history if "num_tokens" in e and "loss" in e]
    assert logged == [e["num_tokens"] for e in plain.state.log_history if "num_tokens" in e and "loss" in e]


# ---- The Hub ------------------------------------------------------------------------------------------------------
def test_the_model_card_says_how_the_model_was_trained(base_args, tmp_path):
    args = lets_args({**base_args, "output_dir": str(tmp_path)})
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(N))
    trainer.train()
    trainer.create_model_card(model_name="tiny-lets")
    card = (tmp_path / "README.md").read_text()
    header = card.split("---")[1]
    assert all(f"- {tag}" in header for tag in ("lets_hf", "sam", "lets"))
    summary = trainer.lets_history
    assert "## Sharpness-aware training (lets_hf)" in card and f"| final radius | {trainer.rho:.4g} |" in card
    low = min(min(h["rho"] for h in summary), args.sam_rho, trainer.rho)
    assert f"| range over training | {low:.4g} to " in card and "| hyper-steps | 3 " in card
    assert "lets_hf" in trainer.model.model_tags  # what push_to_hub's card carries


# ---- The library without the GLUE command's packages ------------------------------------------------------------
def test_the_library_imports_and_trains_without_the_glue_extra(tmp_path):
    """`pip install lets_hf` brings torch, transformers, accelerate and safetensors; datasets, scikit-learn, scipy
    and matplotlib come with the `glue` extra. Here they are made unimportable, as in a venv without them."""
    code = f"""
import sys
for name in ("datasets", "sklearn", "scipy", "matplotlib"):
    sys.modules[name] = None
sys.path.insert(0, {os.path.dirname(__file__)!r})
from toy import tiny_bert, token_data
from lets_hf import LETSTrainer, LETSTrainingArguments
args = LETSTrainingArguments(output_dir={str(tmp_path)!r}, use_cpu=True, report_to="none", max_steps=3,
                             lets_interval=1, lets_lr=0.3, per_device_train_batch_size=8, disable_tqdm=True)
trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(40))
trainer.train()
print("rho", trainer.rho)
try:
    import glue_runs
except ImportError as err:
    print("glue_runs:", err)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rho " in proc.stdout and float(proc.stdout.split("rho ")[1].split()[0]) != pytest.approx(0.01)
    assert "needs datasets, sklearn, scipy, matplotlib" in proc.stdout and "pip install 'lets_hf[glue]'" in proc.stdout
