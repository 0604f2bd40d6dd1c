"""What moves the radius on the hypergradient: one step of an optimizer on ``s = log rho`` (``dF/ds = rho dF/drho``),
its learning rate and schedule, the clip against heavy-tailed values, the bounds, and the loss guard that sends a
run-away radius back (docs/algorithm.md, "The radius update" and "Defaults, and why"). Pure functions and plain
dataclasses; the trainer keeps their state in checkpoints.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CLIP_WINDOW",
    "LR_SCHEDULES",
    "MIN_HYPER_STEPS",
    "LossGuard",
    "RadiusState",
    "clip_to_recent",
    "constant_predictor_loss",
    "guarded_log_rho",
    "guarded_radius",
    "guarded_radius_step",
    "planned_hyper_steps",
    "radius_lr",
    "radius_step",
    "scheduled_lr",
]


MIN_HYPER_STEPS = 10  # the default lets_lr treats a run with fewer hyper-steps as one with this many


def radius_lr(travel: float, max_steps: int, interval: int) -> float:
    """The default ``lets_lr``: ``ln(travel) / H`` with ``H = max(MIN_HYPER_STEPS, max_steps // interval)``.

    Signum (the default) moves ``log rho`` by exactly ``lets_lr`` per hyper-step, Adam by about that while the
    hypergradient keeps its sign (and by far less on noise, which its moments average out), so this lets a
    consistent signal change rho ``travel``-fold over the run, however long the run is: a short fine-tune and a long
    one get the same reach. The floor keeps a short run (a smoke test, a few-step probe) safe: a first step moves
    ``log rho`` by the full ``lets_lr`` whatever the hypergradient's size, and a run with one hyper-step would
    otherwise jump ``travel``-fold on one sample's sign; with the floor it moves at most ``travel^(1/10)`` (2.5x at
    the default 1e4) per hyper-step, and a run of ``H < 10`` hyper-steps at most ``travel^(H/10)`` in all.
    """
    return math.log(travel) / planned_hyper_steps(max_steps, interval)


def planned_hyper_steps(max_steps: int, interval: int) -> int:
    """``H = max(MIN_HYPER_STEPS, max_steps // interval)``: the hyper-steps `radius_lr` spreads the reach over."""
    return max(MIN_HYPER_STEPS, max_steps // interval)


LR_SCHEDULES = ("constant", "linear")


def scheduled_lr(lr: float, k: int, hyper_steps: int, schedule: str) -> float:
    """The radius learning rate at hyper-step ``k`` (0-based) of ``H = hyper_steps`` (``lets_lr_schedule``).

    - ``constant``: ``lr`` throughout.
    - ``linear``: ``lr * 2 (H - k) / (H + 1)``, from about ``2 lr`` at the start to 0 at the end (0 past it). The
      sum over the run is ``H lr``, the constant schedule's reach, but front-loaded: a consistent sign crosses two
      decades in about 30% of the run instead of all of it, which is where a bad start costs (results-log.md section
      7: from 0.1 on full MRPC signum at a constant rate spent the first half of the run above 0.01), and the
      radius settles at the end instead of stepping around its optimum by ``lr`` (signum never moves less).
    """
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * 2 * max(hyper_steps - k, 0) / (hyper_steps + 1)
    raise ValueError(f"Unknown lets_lr_schedule {schedule!r}: use one of {LR_SCHEDULES}.")


@dataclass
class RadiusState:
    """The radius and its optimizer state; everything a checkpoint needs (plain floats, JSON-serialisable).

    Attributes:
        log_rho: ``s = log rho`` (``-inf`` for a fixed radius of 0); ``rho`` is ``exp(log_rho)``.
        exp_avg, exp_avg_sq: Adam's first and second moments of ``dF/ds`` (signum keeps its momentum in ``exp_avg``).
        steps: hyper-steps taken.
        recent: ``|dF/ds|`` of the latest `CLIP_WINDOW` hyper-steps, before clipping: ``lets_clip``'s scale.
    """

    log_rho: float
    exp_avg: float = 0.0
    exp_avg_sq: float = 0.0
    steps: int = 0
    recent: list[float] = field(default_factory=list)

    @property
    def rho(self) -> float:
        return math.exp(self.log_rho)

    def to_dict(self) -> dict:
        return asdict(self)


CLIP_WINDOW = 10  # lets_clip's scale is the median |dF/ds| of this many latest hyper-steps


def clip_to_recent(grad: float, recent: list[float], clip: float) -> float:
    """``dF/ds`` clipped to ``[-c, c]``, ``c = clip * median(recent)``: the radius step against the heavy tail.

    The full-data hypergradient has single values 7-135x its median size (docs/results-log.md section 7); one of them
    outweighs the momentum of every value before it and turns rho for many hyper-steps (STS-B seed 2 with signum:
    0.026 -> 0.215 after two). Clipped to a few times the recent median, a value counts as a few ordinary ones:
    its sign still votes, its size cannot outvote the rest. The median of the latest values (not a mean) is the
    scale because a mean is what one outlier drags; it follows the hypergradient's fall over a run. Nothing is
    clipped while ``recent`` is empty (the first hyper-step) or ``clip`` is 0 (``lets_clip`` off). `radius_step`
    keeps exact zeros out of ``recent``: a hyper-step whose look-ahead is 0 (the first one of a run with warm-up,
    whose step 0 has learning rate 0) carries no size, and a median of 0 would clip the next value to nothing.

    Args:
        grad: ``dF/ds`` of this hyper-step.
        recent: ``|dF/ds|`` of the hyper-steps before it (`RadiusState.recent`).
        clip: the multiple of the median (``lets_clip``); 0 turns clipping off.
    """
    if clip == 0 or not recent:
        return grad
    bound = clip * statistics.median(recent)
    return min(max(grad, -bound), bound)


def radius_step(
    state: RadiusState,
    dF_drho: float,
    *,
    lr: float,
    optimizer: str,
    rho_min: float,
    rho_max: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    allow_increase: bool = True,
    clip: float = 0.0,
) -> RadiusState:
    """One descent step on ``s = log rho`` with ``dF/ds = rho * dF/drho``, then ``rho`` clamped to its bounds.

    Args:
        state: the current radius and optimizer state (not modified).
        dF_drho: the hypergradient ``dF/drho``.
        lr: the radius learning rate (``lets_lr``).
        optimizer: ``adam`` moves ``s`` by at most about ``lr`` per step whatever the gradient's scale, and by
            about ``lr`` times the hypergradient's mean/sd when it is noisy; ``signum`` (Bernstein et al., ICML 2018)
            by exactly ``lr`` per step in the sign of the momentum ``m`` (betas[0]), so a weak but consistent signal
            moves rho as far as a strong one; ``sgd`` by ``lr * dF/ds``.
        rho_min, rho_max: the bounds ``rho`` is clamped to.
        betas, eps: Adam's constants.
        allow_increase: False while the loss guard is tripped: ``rho`` may only shrink.
        clip: ``lets_clip``: ``dF/ds`` is clipped to this multiple of its recent median size before the
            optimizer sees it (`clip_to_recent`); 0: not clipped.
    Returns:
        The new `RadiusState`.
    """
    raw = state.rho * dF_drho
    grad = clip_to_recent(raw, state.recent, clip)
    steps = state.steps + 1
    m, v = state.exp_avg, state.exp_avg_sq
    if optimizer == "adam":
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        m_hat, v_hat = m / (1 - betas[0] ** steps), v / (1 - betas[1] ** steps)
        log_rho = state.log_rho - lr * m_hat / (math.sqrt(v_hat) + eps)
    elif optimizer == "signum":
        m = betas[0] * m + (1 - betas[0]) * grad
        log_rho = (state.log_rho - lr * math.copysign(1.0, m)) if m != 0 else state.log_rho
    elif optimizer == "sgd":
        log_rho = state.log_rho - lr * grad
    else:
        raise ValueError(f"Unknown lets_optimizer {optimizer!r}: use 'adam', 'signum' or 'sgd'.")
    if not allow_increase:
        log_rho = min(log_rho, state.log_rho)
    log_rho = min(max(log_rho, math.log(rho_min)), math.log(rho_max))
    recent = [*state.recent, abs(raw)][-CLIP_WINDOW:] if raw != 0 else state.recent
    return RadiusState(log_rho=log_rho, exp_avg=m, exp_avg_sq=v, steps=steps, recent=recent)


STALL_SHRINK = 10.0  # a stall sends rho this factor below min(rho, sam_rho): a radius the model does not learn under
PRIOR_MARGIN = 0.05  # a loss within this share below the label prior's counts as "at the prior" (see LossGuard)


def constant_predictor_loss(labels: Tensor, regression: bool) -> float:
    """The loss of the best model that ignores its input: what a model that has learned nothing but the labels'
    distribution scores, and where the training loss sits when the model is not learning (the guard's stall).

    Classification (cross-entropy): the entropy of the label frequencies; labels below 0 (the ignore index -100)
    are left out. Regression (mean squared error): the labels' variance, the error of predicting their mean.

    Args:
        labels: the training labels, one per example.
        regression: the model's loss is the mean squared error (``num_labels == 1``), not cross-entropy.
    """
    y = labels.reshape(-1).double()
    if regression:
        return float(y.var(unbiased=False))
    counts = torch.bincount(y[y >= 0].long()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


@dataclass
class LossGuard:
    """Watches the training loss seen at hyper-steps; trips when the model gets worse *or is not learning*.

    Two failure modes of a mobile radius: a radius so large that the training loss rises (the collapse the prototype
    measured on STS-B), and one under which the model never learns while the loss sits still and the hypergradient,
    which then carries no signal, drifts rho upwards (CoLA with the squared gap: rho 0.05 -> 0.28, MCC 0; SST-2
    with 20% noisy labels and the default objective from rho 0.1: rho -> 0.28, a one-class model; results-log.md
    sections 3 and 6). The guard keeps an EMA of the training loss and trips when

    - *risen*: the EMA is more than ``tolerance`` (relative) above its best, or
    - *stalled*: the EMA has not fallen ``threshold`` (relative) below its best for ``patience`` hyper-steps *and*
      sits at the loss of a model that predicts only the label prior (``prior``, `constant_predictor_loss`; within
      `PRIOR_MARGIN` below it). A stall trips again after every further ``patience`` hyper-steps without progress.

    ``threshold`` is what makes a stall visible: a loss sitting at the class prior's entropy still sets a new lowest
    EMA now and then by a hair (that is how the guard without it missed every recorded case), never by 1%.
    ``prior`` is what tells *not learning* from *learned, and on a plateau*: within an epoch a fine-tune's training
    loss also stops falling once the model has learned what one pass teaches (full CoLA, third epoch: 0.44 for 100
    steps, the prior's loss 0.61), and a cut of rho there would override a radius that was working. Without a
    ``prior`` (labels or loss unknown) any plateau counts.

    The trainer acts on a trip with `guarded_log_rho`. While tripped rho may not grow; progress (or, after a rise,
    a return within the tolerance) releases it.

    Attributes:
        tolerance: the relative rise of the EMA over its best that trips the guard (``lets_guard_tolerance``).
        patience: hyper-steps without progress that count as a stall (``lets_guard_patience``; None: never).
        threshold: the relative fall below the best that counts as progress (``lets_guard_threshold``).
        prior: the training loss of a constant predictor of the labels (`constant_predictor_loss`), or None.
        beta: the EMA's decay per hyper-step.
        ema, best: the current EMA of the training loss and its best (last progress) so far.
        since_best: hyper-steps since the last progress (or the last stall trip).
        reason: why the guard is tripped now (``"risen"``, ``"stalled"``), or None; trips: how often it tripped.
    """

    tolerance: float
    patience: int | None = None
    threshold: float = 0.0
    prior: float | None = None
    beta: float = 0.9
    ema: float | None = None
    best: float = math.inf
    since_best: int = 0
    reason: str | None = None
    trips: int = 0

    def update(self, train_loss: float) -> str | None:
        """Feed one training loss; return ``"risen"`` or ``"stalled"`` when the guard trips *now*, else None."""
        self.ema = train_loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * train_loss
        progress = self.ema < self.best * (1 - self.threshold)
        if progress:
            self.best, self.since_best = self.ema, 0
        else:
            self.since_best += 1
        trip = None
        if self.risen:
            trip = None if self.reason == "risen" else "risen"
        elif self.patience is not None and self.since_best >= self.patience and self.at_prior:
            trip, self.since_best = "stalled", 0
        elif progress or self.reason == "risen":
            self.reason = None
        if trip:
            self.reason, self.trips = trip, self.trips + 1
        return trip

    @property
    def tripped(self) -> bool:
        return self.reason is not None

    @property
    def risen(self) -> bool:
        """The EMA lies more than ``tolerance`` above its best."""
        return self.ema is not None and self.ema > self.best * (1 + self.tolerance)

    @property
    def at_prior(self) -> bool:
        """The EMA is no more than `PRIOR_MARGIN` below ``prior`` (always true without a ``prior``)."""
        return self.prior is None or (self.ema is not None and self.ema >= self.prior * (1 - PRIOR_MARGIN))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict) -> LossGuard:
        """From `to_dict`'s output, or from a checkpoint of a version that stored ``tripped`` instead of ``reason``."""
        state = dict(state)
        if "tripped" in state:
            state["reason"] = "stalled" if state.pop("tripped") else None
        return cls(**state)


def guarded_radius(
    guard: LossGuard, radius: RadiusState, train_loss: float, sam_rho: float, rho_min: float
) -> tuple[RadiusState, str | None]:
    """Feed one training loss to ``guard``; on a trip, the radius it sends rho to and a message that says why.

    Returns ``(radius, None)`` when the guard does not trip now. On a trip the new radius is `guarded_log_rho`'s,
    with Adam's moments reset (the direction they carried is void).
    """
    trip = guard.update(train_loss)
    if trip is None:
        return radius, None
    new = RadiusState(log_rho=guarded_log_rho(radius.log_rho, trip, sam_rho, rho_min))
    if trip == "risen":
        why = f"rose more than {100 * guard.tolerance:.0f}% above its best"
    else:
        why = f"has not fallen {100 * guard.threshold:g}% below its best for {guard.patience} hyper-steps"
        why += "" if guard.prior is None else f" at the label prior's loss ({guard.prior:.4f})"
    message = (
        f"the training loss (EMA {guard.ema:.4f}, best {guard.best:.4f}) {why}; rho {radius.rho:.4g} -> "
        f"{new.rho:.4g}, and it may not grow until the loss improves."
    )
    return new, message


def guarded_radius_step(
    state: RadiusState, guard: LossGuard | None, dF_drho: float, train_loss: float, *, sam_rho: float, **step: Any
) -> tuple[RadiusState, str | None]:
    """One hyper-step of the radius under the loss guard: ``guard`` sees ``train_loss`` first (`guarded_radius`: a
    trip sends rho down), then `radius_step` moves ``log rho`` on ``dF_drho``, only down while the guard is tripped.

    Args:
        state: the radius before the hyper-step.
        guard: the `LossGuard` (updated in place), or None: `radius_step` alone.
        dF_drho: the hypergradient.
        train_loss: ``l(theta; B')`` of this hyper-step.
        sam_rho: the run's initial radius (where a rise sends rho back to).
        step: `radius_step`'s keyword arguments (``lr``, ``optimizer``, ``clip``, ``rho_min``, ``rho_max``).
    Returns:
        The new `RadiusState` and the guard's message when it tripped now (None otherwise).
    """
    message = None
    if guard is not None:
        state, message = guarded_radius(guard, state, train_loss, sam_rho, step["rho_min"])
    return radius_step(state, dF_drho, allow_increase=not (guard and guard.tripped), **step), message


def guarded_log_rho(log_rho: float, trip: str, sam_rho: float, rho_min: float) -> float:
    """Where a trip of the `LossGuard` sends ``log rho``.

    A rise: back to at most ``sam_rho``, the radius the run started from, under which the model had been learning.
    A stall: `STALL_SHRINK` times below at most ``sam_rho``, never below ``rho_min``: the model is not learning
    under this radius and the start may itself be the cause (a start 10x too large), so going back there would
    not help; one decade per trip, until the model learns or rho reaches its lower bound (near plain training).

    Args:
        log_rho: ``log rho`` when the guard trips.
        trip: what `LossGuard.update` returned: ``"risen"`` or ``"stalled"``.
        sam_rho: the run's initial radius (``sam_rho``).
        rho_min: the lower bound (``lets_rho_min``).
    Returns:
        The new ``log rho``.
    """
    ceiling = min(log_rho, math.log(sam_rho))
    if trip == "stalled":
        ceiling -= math.log(STALL_SHRINK)
    return max(ceiling, math.log(rho_min))
