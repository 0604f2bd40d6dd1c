"""SAM and LETS for TRL's `SFTTrainer` (``pip install trl``): `LETSSFTConfig` and `LETSSFTTrainer`.

`LETSTrainer` carves its held-out split after ``SFTTrainer.__init__`` has tokenized, formatted and truncated the
training set, so held-out batches are what training batches are; a ``lets_dataset`` passed in text form goes through
the same `SFTTrainer._prepare_dataset`. TRL's per-step metrics (``num_tokens``, ``entropy``,
``mean_token_accuracy``) count the passes plain SFT runs only, not SAM's perturbed pass or the held-out pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

try:
    from trl import SFTConfig, SFTTrainer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("lets_hf.sft needs TRL: pip install trl") from err

from .trainer import LETSTrainer
from .training_args import LETSTrainingArguments

__all__ = ["LETSSFTConfig", "LETSSFTTrainer"]


@dataclass
class LETSSFTConfig(LETSTrainingArguments, SFTConfig):
    """TRL's `SFTConfig` (``max_length``, ``packing``, ``completion_only_loss``, ...) plus the SAM and LETS fields."""


class LETSSFTTrainer(LETSTrainer, SFTTrainer):
    """TRL's `SFTTrainer` with SAM and the LETS radius. Takes `LETSSFTConfig`; every other argument is SFTTrainer's,
    plus ``lets_dataset`` (text or tokenized, as ``train_dataset`` may be)."""

    _tag_names = ["trl", "sft", "lets_hf", "sam"]

    def _prepare_lets_dataset(self, dataset: Any) -> Any:
        if self._skip_prepare_dataset:
            return dataset
        args = self.args
        return self._prepare_dataset(dataset, self.processing_class, args, args.packing, self._formatting_func, "lets")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """SFTTrainer's loss; on a pass plain SFT would not run, its token count and metrics are put back."""
        if not self.lets_extra_pass:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        tokens = self._total_train_tokens
        saved = {mode: {key: list(values) for key, values in m.items()} for mode, m in self._metrics.items()}
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._total_train_tokens = tokens
        for mode, m in self._metrics.items():  # defaultdicts: cleared and refilled, not replaced
            m.clear()
            m.update(saved[mode])
        return result
