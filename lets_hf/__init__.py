"""lets_hf: sharpness-aware minimisation for the HF Trainer, with the radius learned by LETS."""

from .heldout import split_heldout
from .hub import radius_summary
from .hypergradient import (
    LossGuard,
    RadiusState,
    constant_predictor_loss,
    guarded_log_rho,
    hypergradient,
    radius_lr,
    radius_step,
)
from .perturbation import (
    asam_direction,
    available_perturbations,
    get_perturbation,
    register_perturbation,
    sam_direction,
)
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
    "radius_lr",
    "radius_step",
    "radius_summary",
    "register_perturbation",
    "sam_direction",
    "split_heldout",
]
