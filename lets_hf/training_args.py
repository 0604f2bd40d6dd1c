"""LETSTrainingArguments: the SAM and LETS settings as a TrainingArguments dataclass (one field = one CLI flag)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .hypergradient import HORIZONS, OBJECTIVES
from .perturbation import available_perturbations
from .radius import LR_SCHEDULES

logger = logging.getLogger(__name__)

__all__ = ["LETSTrainingArguments"]

HVP_ESTIMATORS = ("secant", "fisher", "exact")
RHO_REACH = 0.5  # the default upper bound on a learned rho is at least this: SAM's own range, whatever the start
RADIUS_OPTIMIZERS = ("adam", "signum", "sgd")
SAM_REUSE = ("none", "looksam")


@dataclass
class LETSTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus sharpness-aware minimisation and the LETS learned radius.

    Every field below carries its help text, so `HfArgumentParser` exposes it as ``--<field>``.

    **The fields most users touch:** ``sam_variant`` (``"sam"``, ``"asam"``, ``"none"``), ``sam_rho`` (the start,
    or the fixed radius), ``lets`` (learn the radius or not), ``sam_every`` (perturb one step in k), and
    ``lets_heldout_fraction`` or the trainer's ``lets_dataset`` (where the held-out batches come from). The rest
    tune the radius estimator and its guard; their defaults are the measured choices (docs/algorithm.md,
    "Defaults, and why") and they are there for studies.

    The defaults let the radius travel and keep it from running away: rho lives in
    ``[sam_rho / 100, max(10 * sam_rho, 0.5)]``, can change ``lets_travel``-fold over a run whatever its length,
    follows the held-out loss (its curvature read with one dropout draw for both SAM passes), and is sent back
    when the training loss rises or stops improving.
    """

    # ---- sharpness-aware minimisation --------------------------------------------------------------------------
    sam_variant: str = field(
        default="sam",
        metadata={
            "help": "Perturbation: 'none' (plain training, one pass), 'sam', 'asam', or any variant "
            "registered with lets_hf.register_perturbation."
        },
    )
    sam_rho: float = field(
        default=0.01,
        metadata={
            "help": "Perturbation radius rho (the initial radius when lets=True). Must be >= 0. The default 0.01 "
            "lies among published SAM+AdamW fine-tuning radii; 0.05 (CIFAR/SGD) hurt small-data fine-tunes."
        },
    )
    sam_budget: float | None = field(
        default=None,
        metadata={
            "help": "Loss budget sigma (LE-SAM: Wang et al., ICML 2026): each step's radius is the one whose "
            "first-order loss increase is sigma, rho_t = min(sigma / g^T d, sam_rho) (g^T d: the gradient norm "
            "for SAM), so it grows as the gradient shrinks; sam_rho is then the ceiling. With lets=True LETS learns "
            "log sigma within [sigma / 100, 100 sigma] (lets_rho_min/max, when given, bound sigma). None: a "
            "radius, not a budget."
        },
    )
    asam_eta: float = field(
        default=0.01,
        metadata={"help": "ASAM's offset eta in T = |theta| + eta (also passed to registered variants)."},
    )
    sam_sync_perturbation: bool = field(
        default=True,
        metadata={
            "help": "True: one global perturbation from the rank-averaged ascent gradient (N ranks x batch b "
            "equal one process with batch N*b). False: each rank perturbs with its own gradient (the SAM "
            "paper's m-sharpness; equals gradient accumulation N x b) and skips one all-reduce."
        },
    )
    sam_same_dropout: bool = field(
        default=False,
        metadata={
            "help": "Run the perturbed (descent) pass with the ascent pass's dropout masks (the random state is "
            "rewound), so that G - g is the loss's change under the perturbation, not also the difference of two "
            "dropout draws. LETS's curvature u = (G - g) / rho is cleaner with it on a model with dropout (with "
            "independent masks its noise grows as 1/rho), but it changes SAM itself (docs/algorithm.md, 'Dropout')."
        },
    )
    lets_same_dropout: bool = field(
        default=True,
        metadata={
            "help": "sam_same_dropout on the steps whose curvature LETS reads only: with lets_horizon='step', one "
            "step in lets_interval (SAM's other steps keep independent masks); with 'interval' or 'trace', every "
            "perturbed step, as sam_same_dropout. On by default: with independent masks the curvature at a small "
            "radius is dropout noise and the radius cannot climb (docs/algorithm.md, 'Dropout'). No effect "
            "without lets."
        },
    )
    # ---- cheaper SAM ----------------------------------------------------------------------------------------------
    sam_every: int = field(
        default=1,
        metadata={
            "help": "Perturb every sam_every-th optimizer step only (1: every step, full SAM); the steps in between "
            "cost one forward/backward like plain training, so k costs about (k + 1) / k of AdamW. With lets, "
            "lets_interval must be a multiple of it (hyper-steps are fed by perturbed steps)."
        },
    )
    sam_reuse: str = field(
        default="none",
        metadata={
            "help": "What the steps between two perturbed ones reuse when sam_every > 1: 'none' (plain steps: "
            "interval SAM, as MosaicML Composer's) or 'looksam' (Liu et al. 2022: the part of the last SAM "
            "gradient orthogonal to its plain gradient, rescaled to each step's gradient and weighted by "
            "looksam_alpha; one more parameter-sized buffer). LookSAM's term keeps its size whatever rho is, so "
            "lets cannot switch it off by lowering rho: with lets, use 'none'.",
            "choices": list(SAM_REUSE),
        },
    )
    looksam_alpha: float = field(
        default=0.7,
        metadata={"help": "sam_reuse='looksam': the weight of the reused component (0.7 in the LookSAM paper)."},
    )
    # ---- LETS: learning the radius (lets, and the held-out data; the rest are for studies) -----------------------
    lets: bool = field(
        default=True,
        metadata={"help": "Learn rho by the LETS hypergradient on held-out batches (False: keep sam_rho fixed)."},
    )
    lets_objective: str = field(
        default="heldout",
        metadata={
            "help": "Upper-level objective of the radius: 'heldout', the held-out loss after the step "
            "(Luketina et al. 2016), or 'gap', the paper's squared gap 1/2 (L_V - L_train)^2, which can also be "
            "closed by a model that stops learning (docs/algorithm.md).",
            "choices": list(OBJECTIVES),
        },
    )
    lets_lr: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the radius optimizer on log rho: signum moves log rho by exactly lets_lr per "
            "hyper-step, Adam by at most about that. Default: ln(lets_travel) / (the run's hyper-steps, at least 10)."
        },
    )
    lets_travel: float = field(
        default=10000.0,
        metadata={
            "help": "When lets_lr is None: the factor by which rho can change over the whole run if every "
            "hyper-step agrees (1e4: the two decades from 10x too large to 10x too small in half the run, whatever "
            "its length). Must be > 1."
        },
    )
    lets_lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "The radius learning rate over the run: 'constant', or 'linear' from 2 lets_lr down to 0 (the "
            "same reach, front-loaded, and a radius that settles at the end).",
            "choices": list(LR_SCHEDULES),
        },
    )
    lets_optimizer: str = field(
        default="signum",
        metadata={
            "help": "Radius optimizer on log rho: 'signum' (exactly lets_lr per hyper-step in the sign of the "
            "hypergradient's momentum: its signal is in the signs), 'adam' or 'sgd'.",
            "choices": list(RADIUS_OPTIMIZERS),
        },
    )
    lets_clip: float = field(
        default=3.0,
        metadata={
            "help": "Clip each hyper-step's dF/d log rho to this multiple of the median size of the latest 10 "
            "before the radius optimizer sees it, so one heavy-tailed value counts as a few ordinary ones "
            "(0: off)."
        },
    )
    lets_interval: int = field(
        default=10,
        metadata={
            "help": "Optimizer steps between radius hyper-steps; each costs one held-out forward/backward, "
            "so LETS adds about 1/(2 * lets_interval) to SAM's cost."
        },
    )
    lets_horizon: str = field(
        default="interval",
        metadata={
            "help": "How far the radius looks ahead: 'interval' sums d theta/d rho over the lets_interval steps "
            "since the last hyper-step (forward mode, each step's Jacobian taken as the identity; one more buffer, "
            "no extra pass), 'step' takes the one step before the held-out pass (the paper's one-step look-ahead), "
            "'trace' never restarts that sum and lets old steps fade over lets_trace_steps steps.",
            "choices": list(HORIZONS),
        },
    )
    lets_trace_steps: int = field(
        default=100,
        metadata={
            "help": "lets_horizon='trace': the number of steps over which a step's effect on the weights fades "
            "(by 1/e) in the look-ahead."
        },
    )
    lets_rho_min: float | None = field(
        default=None,
        metadata={"help": "Lower bound on rho (default sam_rho / 100; with sam_budget, on sigma: sigma / 100)."},
    )
    lets_rho_max: float | None = field(
        default=None,
        metadata={
            "help": "Upper bound on rho (default max(10 * sam_rho, 0.5), so that a small start can climb to SAM's "
            "usual radii; with sam_budget, on sigma: 100 * sigma)."
        },
    )
    lets_hvp: str = field(
        default="secant",
        metadata={
            "help": "Curvature estimator u = d(descent grad)/d rho: 'secant' (free), 'fisher' (diagonal "
            "empirical Fisher) or 'exact' (double backward, for checking).",
            "choices": list(HVP_ESTIMATORS),
        },
    )
    lets_heldout_fraction: float = field(
        default=0.1,
        metadata={
            "help": "When no lets_dataset is given: the fraction of the training set carved off (stratified, "
            "from the seed) as held-out data for rho. Those examples are never trained on."
        },
    )
    lets_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Per-device batch size of the held-out loader (default per_device_train_batch_size). Smaller is "
            "cheaper, the held-out pass costing lets_batch_size / per_device_train_batch_size of a training pass per "
            "hyper-step, and noisier: half the training batch slowed the radius's descent from a bad start."
        },
    )
    lets_guard_tolerance: float | None = field(
        default=0.2,
        metadata={
            "help": "Loss guard: when the EMA of the training loss rises this fraction above its best, rho is "
            "sent back to at most sam_rho and may not grow until the loss recovers. None disables the guard."
        },
    )
    lets_guard_patience: int | None = field(
        default=10,
        metadata={
            "help": "Loss guard: hyper-steps without progress of the training-loss EMA (a fall of "
            "lets_guard_threshold below its best) with the loss at the level of predicting the label prior "
            "(when the labels and the loss are known: within 5 percent below it) count as a model that is not "
            "learning; rho is then cut to a tenth of at most sam_rho (never below lets_rho_min), again after "
            "every further such window, and may not grow until the loss improves. None: only a rising loss trips the "
            "guard."
        },
    )
    lets_guard_threshold: float = field(
        default=0.01,
        metadata={
            "help": "Loss guard: the relative fall of the training-loss EMA below its best that counts as progress "
            "(as EarlyStoppingCallback's early_stopping_threshold, but relative): a loss sitting still sets a new "
            "lowest value now and then by a hair, never by 1 percent."
        },
    )

    def __post_init__(self):
        # Refuse unsupported backends before TrainingArguments tries to set them up.
        if self.deepspeed:
            raise NotImplementedError(_BACKEND_MESSAGE.format(backend="DeepSpeed"))
        if self.fsdp:
            raise NotImplementedError(_BACKEND_MESSAGE.format(backend="FSDP"))
        self.validate_sam_and_lets()
        super().__post_init__()

    @property
    def lets_start(self) -> float:
        """What LETS learns (in log space), at its start: ``sam_budget`` with a loss budget, else ``sam_rho``."""
        return self.sam_budget if self.sam_budget is not None else self.sam_rho

    @property
    def rho_bounds(self) -> tuple[float, float]:
        """``(lets_rho_min, lets_rho_max)`` with the defaults filled in from the *current* ``sam_rho``: the bounds of
        what LETS learns (with ``sam_budget``, of sigma: ``[sigma / 100, 100 sigma]`` by default).

        Resolved on every read rather than once at construction, so that a hyperparameter-search trial that sets
        ``sam_rho`` gets its own bounds (`LETSTrainer._hp_search_setup`)."""
        start = self.lets_start
        reach = 100 * start if self.sam_budget is not None else max(10 * start, RHO_REACH)
        low = start / 100 if self.lets_rho_min is None else self.lets_rho_min
        high = reach if self.lets_rho_max is None else self.lets_rho_max
        return low, high

    @property
    def heldout_batch_size(self) -> int:
        """The held-out loader's per-device batch: ``lets_batch_size``, by default ``per_device_train_batch_size``
        (read now, so a trial that changes the training batch changes this one too)."""
        return self.lets_batch_size if self.lets_batch_size is not None else self.per_device_train_batch_size

    def validate_sam_and_lets(self) -> None:
        """Check the SAM and LETS fields (raises ValueError naming the field and the fix). Run at construction, and
        again by `LETSTrainer` after a hyperparameter-search trial has set its values."""
        self.sam_variant = self.sam_variant.lower()
        if self.sam_variant not in available_perturbations():
            raise ValueError(
                f"sam_variant={self.sam_variant!r} is unknown: choose one of {available_perturbations()}, or register "
                "a variant with lets_hf.register_perturbation before building the arguments."
            )
        _require(self.sam_rho >= 0 and math.isfinite(self.sam_rho), f"sam_rho={self.sam_rho} must be >= 0.")
        _require(self.asam_eta >= 0, f"asam_eta={self.asam_eta} must be >= 0.")
        if self.sam_budget is not None:
            _require(
                self.sam_budget > 0 and math.isfinite(self.sam_budget),
                f"sam_budget={self.sam_budget} must be > 0 (a loss increase, e.g. 0.05), or None for a fixed radius.",
            )
            _require(
                self.sam_rho > 0,
                f"sam_budget needs sam_rho > 0: it is the ceiling of the budget's radius (got {self.sam_rho}).",
            )
        _require(self.sam_every >= 1, f"sam_every={self.sam_every} must be >= 1 (1: every step perturbed).")
        _require(self.sam_reuse in SAM_REUSE, f"sam_reuse={self.sam_reuse!r} must be one of {SAM_REUSE}.")
        _require(
            self.looksam_alpha >= 0 and math.isfinite(self.looksam_alpha),
            f"looksam_alpha={self.looksam_alpha} must be >= 0, e.g. 0.7.",
        )
        if self.sam_variant == "none" and self.lets:
            logger.info("sam_variant='none': there is no radius to learn, so lets is turned off.")
            self.lets = False
        _require(
            self.lets_optimizer in RADIUS_OPTIMIZERS,
            f"lets_optimizer={self.lets_optimizer!r} must be one of {RADIUS_OPTIMIZERS}.",
        )
        _require(self.lets_hvp in HVP_ESTIMATORS, f"lets_hvp={self.lets_hvp!r} must be one of {HVP_ESTIMATORS}.")
        _require(
            self.lets_lr_schedule in LR_SCHEDULES,
            f"lets_lr_schedule={self.lets_lr_schedule!r} must be one of {LR_SCHEDULES}.",
        )
        _require(self.lets_horizon in HORIZONS, f"lets_horizon={self.lets_horizon!r} must be one of {HORIZONS}.")
        _require(
            self.lets_objective in OBJECTIVES, f"lets_objective={self.lets_objective!r} must be one of {OBJECTIVES}."
        )
        _require(self.lets_lr is None or self.lets_lr > 0, f"lets_lr={self.lets_lr} must be > 0 (or None: automatic).")
        _require(self.lets_travel > 1, f"lets_travel={self.lets_travel} must be > 1, e.g. 1e4 (the default).")
        _require(
            self.lets_guard_patience is None or self.lets_guard_patience >= 1,
            f"lets_guard_patience={self.lets_guard_patience} must be >= 1, or None to watch only for a rising loss.",
        )
        _require(
            0 <= self.lets_guard_threshold < 1,
            f"lets_guard_threshold={self.lets_guard_threshold} must lie in [0, 1), e.g. 0.01 (a 1% fall).",
        )
        _require(
            self.lets_clip >= 0 and math.isfinite(self.lets_clip),
            f"lets_clip={self.lets_clip} must be >= 0 (a multiple of the recent median size, e.g. 3; 0: off).",
        )
        _require(self.lets_interval >= 1, f"lets_interval={self.lets_interval} must be >= 1.")
        _require(self.lets_trace_steps >= 1, f"lets_trace_steps={self.lets_trace_steps} must be >= 1.")
        _require(
            0 < self.lets_heldout_fraction < 1,
            f"lets_heldout_fraction={self.lets_heldout_fraction} must lie in (0, 1), e.g. 0.1.",
        )
        _require(
            self.lets_batch_size is None or self.lets_batch_size >= 1,
            f"lets_batch_size={self.lets_batch_size} must be >= 1.",
        )
        _require(
            self.lets_guard_tolerance is None or self.lets_guard_tolerance > 0,
            f"lets_guard_tolerance={self.lets_guard_tolerance} must be > 0, or None to disable the guard.",
        )
        if not self.lets:
            return
        k = self.sam_every
        _require(
            self.lets_interval % k == 0,
            f"lets_interval={self.lets_interval} must be a multiple of sam_every={k}: a hyper-step needs a perturbed "
            f"step to feed it. Use e.g. lets_interval={k * max(1, self.lets_interval // k)}.",
        )
        _require(
            self.sam_every == 1 or self.lets_horizon != "trace",
            "lets_horizon='trace' with sam_every > 1 is not supported (its fading counts steps): use 'interval'.",
        )
        _require(
            self.sam_rho > 0,
            "lets=True learns log(rho), so it needs sam_rho > 0 (e.g. 0.05); use lets=False for a fixed radius of 0.",
        )
        _require(
            self.sam_budget is None or self.lets_hvp == "secant",
            f"lets_hvp={self.lets_hvp!r} with sam_budget is not supported: a budget's curvature d G / d log sigma is "
            "the secant's G - g; use lets_hvp='secant' (the default).",
        )
        low, high = self.rho_bounds
        name, what = ("sam_budget", "budget") if self.sam_budget is not None else ("sam_rho", "radius")
        _require(low > 0, f"lets_rho_min={low} must be > 0 (the {what} is learned in log space).")
        _require(low <= high, f"lets_rho_min={low} > lets_rho_max={high}: swap them or widen the range.")
        _require(
            low <= self.lets_start <= high,
            f"{name}={self.lets_start} lies outside [lets_rho_min, lets_rho_max] = [{low}, {high}]: the initial "
            f"{what} must be inside the bounds.",
        )


_BACKEND_MESSAGE = (
    "{backend} is not supported by LETSTrainer: SAM needs the full gradient of every trainable parameter on each "
    "rank between two backward passes, and {backend} shards or steps them inside backward. Use DDP instead "
    "(`accelerate launch` or `torchrun` without a {backend} config); see docs/distributed.md."
)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
