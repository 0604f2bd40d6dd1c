import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture
def base_args(tmp_path):
    """Settings shared by the toy-model tests: CPU, no reporting, no checkpoints, no loss guard."""
    return dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        lets_guard_tolerance=None,
        seed=0,
    )


@pytest.fixture(scope="session")
def glue_dir():
    """The GLUE files (GLUE_DIR). Unset locally: skip with the reason; in CI (LETS_REQUIRE_GLUE=1): fail."""
    path = os.environ.get("GLUE_DIR")
    if not path or not os.path.isfile(os.path.join(path, "RTE", "train.tsv")):
        message = f"GLUE_DIR={path!r} does not hold the GLUE files: set GLUE_DIR=../shared/glue"
        if os.environ.get("LETS_REQUIRE_GLUE"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory, glue_dir):
    """A 2-layer random RoBERTa with a byte-level BPE tokenizer trained here on CoLA sentences (no download)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_roberta")
    with open(os.path.join(glue_dir, "CoLA", "train.tsv")) as f:
        sentences = [line.split("\t")[3] for line in f][:2000]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        sentences, vocab_size=400, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    tokenizer = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=160,
        pad_token_id=tokenizer.pad_token_id,
    )
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)  # a base checkpoint: no task head
    return str(folder)
