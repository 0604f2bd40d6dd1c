import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture
def base_args(tmp_path):
    """Settings shared by the toy-model tests: CPU, no reporting, no checkpoints, no loss guard."""
    return dict(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, save_strategy="no",
                logging_steps=1, disable_tqdm=True, lets_guard_tolerance=None, seed=0)
