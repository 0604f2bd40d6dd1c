"""lets_hf: sharpness-aware minimisation for the HF Trainer, with the radius learned by LETS."""

from .heldout import split_heldout
from .history import plot_history, write_history_csv
from .hub import radius_summary
from .hypergradient import hypergradient
from .perturbation import (
    asam_direction,
    available_perturbations,
    get_perturbation,
    register_perturbation,
    sam_direction,
)
from .radius import LossGuard, RadiusState, constant_predictor_loss, guarded_log_rho, radius_lr, radius_step
from .seq2seq import LETSSeq2SeqTrainer, LETSSeq2SeqTrainingArguments
from .trainer import LETSTrainer
from .training_args import LETSTrainingArguments

__version__ = "0.1.0"

__all__ = [
    "LETSSeq2SeqTrainer",
    "LETSSeq2SeqTrainingArguments",
    "LETSTrainer",
    "LETSTrainingArguments",
    "LossGuard",
    "RadiusState",
    "asam_direction",
    "available_perturbations",
    "constant_predictor_loss",
    "get_perturbation",
    "guarded_log_rho",
    "hypergradient",
    "plot_history",
    "radius_lr",
    "radius_step",
    "radius_summary",
    "register_perturbation",
    "sam_direction",
    "split_heldout",
    "write_history_csv",
]
