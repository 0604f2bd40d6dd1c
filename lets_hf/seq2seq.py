"""SAM and LETS for `transformers.Seq2SeqTrainer`: its arguments and trainer combined with ours, ready to use."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from .trainer import LETSTrainer
from .training_args import LETSTrainingArguments

__all__ = ["LETSSeq2SeqTrainer", "LETSSeq2SeqTrainingArguments"]


@dataclass
class LETSSeq2SeqTrainingArguments(LETSTrainingArguments, Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` (``predict_with_generate``, ``generation_max_length``, ...) plus the SAM and LETS
    fields of `LETSTrainingArguments`."""


class LETSSeq2SeqTrainer(LETSTrainer, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with SAM and the LETS radius: training steps are `LETSTrainer`'s, evaluation and
    ``predict_with_generate`` are `Seq2SeqTrainer`'s. Takes `LETSSeq2SeqTrainingArguments`."""
