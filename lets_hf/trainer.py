"""LETSTrainer: the HF Trainer with a SAM perturbation in every micro-batch and a learned radius.

The algorithm lives in `perturbation.py` (directions) and `hypergradient.py` (u, w, dF/drho, the radius step);
this file is plumbing: the passes, setting accumulated gradients aside, DDP and GradScaler details, the held-out
loader, logging and the radius state in checkpoints. The step, in docs/algorithm.md's notation, per micro-batch ``i``:

    ascent:   g_i = grad l(theta; B_i)            (rank-averaged when sam_sync_perturbation)
    descent:  G  += grad l(theta + rho d_i; B_i) / n_accum,   then theta restored from a saved copy

and around the optimizer step ``t``: at its start, the ``u`` step ``t-1`` left becomes ``w = -lr c P u`` and joins
the look-ahead ``Z`` (``lets_horizon``: summed over the interval, or the one step); on a hyper-step one held-out
pass gives ``h_V^T Z``, the ascents of step ``t`` give ``g'^T Z`` and ``l(theta; B')``, and at its end the radius
takes one step on ``dF/drho``. On feeding steps ``u`` is formed at the end, for the next step. With
``sam_every = k`` only every k-th step is perturbed (and feeds); the others are one pass at ``theta``, plus LookSAM's
reused ``g_v`` when ``sam_reuse="looksam"`` (docs/algorithm.md, "Cheaper SAM").

Why one file of this size: every method below reads or writes the state of the optimizer step in flight (the saved
``theta``, the look-ahead ``Z``, the pending ``u``, the hyper-step's sums), and the Trainer's hooks it overrides
(``training_step``, ``log``, checkpoints, the trial hook, the model card) are where that state enters and leaves;
split across modules it would be passed around as a bag. No formula lives here.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.utils import logging

from .checkpoint import LETS_STATE_NAME, load_lets_state, save_lets_state
from .heldout import HeldoutStream, carve_heldout, label_prior_loss
from .history import plot_history, write_history_csv
from .hub import radius_card
from .hypergradient import (
    clip_coefficient,
    fisher_curvature,
    hessian_vector_product,
    hypergradient,
    lookahead_add_,
    optimizer_kind,
    secant_curvature_,
)
from .perturbation import budget_radius, get_perturbation, looksam_gradient_, orthogonal_part_
from .radius import LossGuard, RadiusState, guarded_radius_step, planned_hyper_steps, radius_lr, scheduled_lr
from .tensor_lists import accumulate_, all_finite, all_reduce_mean_, copy_into, dot, grads_of, zeros_into
from .training_args import _BACKEND_MESSAGE, LETSTrainingArguments

logger = logging.get_logger(__name__)

__all__ = ["LETSTrainer"]


@dataclass
class _Pending:
    """What a feeding step leaves for the next step: ``u`` (later turned into ``w``), ``lr`` and ``c`` (1 where
    ``u`` already carries it: the secant folds it in)."""

    u: list[torch.Tensor]
    lrs: list[float]  # per optimizer param group, as used by the step
    clip_coef: float | torch.Tensor
    rho: float | None = None  # the radius the step used (None: a checkpoint from before it was kept)


class LETSTrainer(Trainer):
    """`transformers.Trainer` with sharpness-aware minimisation and the LETS learned radius.

    Also a mixin: ``class S(LETSTrainer, Seq2SeqTrainer)`` adds SAM and LETS to another Trainer subclass (ready-made:
    `lets_hf.LETSSeq2SeqTrainer`, `lets_hf.sft.LETSSFTTrainer`). The carve happens after the host trainer's
    ``__init__`` has prepared ``train_dataset`` (TRL tokenizes and truncates there), so the held-out examples are in
    the form its collator takes.

    Args:
        args: a `LETSTrainingArguments` (or a dataclass that combines it with the host's arguments).
        lets_dataset: held-out examples for the radius, in the form ``train_dataset`` has when the Trainer's loader
            sees it (a map-style dataset: a stream cannot be replayed on resume). When None and ``args.lets``, a
            stratified ``args.lets_heldout_fraction`` of ``train_dataset`` is carved off (and never trained on);
            the indices are in ``self.lets_split``.
        Every other argument is the host trainer's.

    Attributes:
        rho: the current radius (float).
        lets_history: one dict per hyper-step: step, rho, gap, hypergradient, train and held-out loss.
        lets_extra_pass: True during a pass that plain training would not run (SAM's perturbed pass, the held-out
            pass): a host whose ``compute_loss`` counts tokens or metrics can skip it (`lets_hf.sft`).
    """

    _tag_names = ["lets_hf", "sam"]

    def __init__(
        self,
        model: nn.Module | None = None,
        args: LETSTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        *,
        lets_dataset: Any = None,
        **kwargs: Any,
    ):
        if args is None:
            args = LETSTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, LETSTrainingArguments):
            raise TypeError(
                f"LETSTrainer needs LETSTrainingArguments, got {type(args).__name__}: build the arguments with "
                "lets_hf.LETSTrainingArguments(...) (it accepts every TrainingArguments field)."
            )
        if lets_dataset is not None and not hasattr(lets_dataset, "__len__"):
            raise ValueError(
                f"lets_dataset is a stream ({type(lets_dataset).__name__}): LETS draws its held-out batches in seeded "
                "permutations and replays them on resume, which needs a map-style dataset. Take a finite sample, "
                "e.g. lets_dataset=datasets.Dataset.from_list(list(stream.take(1000)))."
            )
        self.lets_split: dict[str, list[int]] | None = None
        self.lets_extra_pass = False
        super().__init__(model, args, data_collator, train_dataset, eval_dataset, **kwargs)
        for backend, enabled in (("DeepSpeed", self.is_deepspeed_enabled), ("FSDP", self.is_fsdp_enabled)):
            if enabled:
                raise NotImplementedError(_BACKEND_MESSAGE.format(backend=backend))
        if args.lets and lets_dataset is None and self.train_dataset is not None:  # as the host prepared it
            self.train_dataset, lets_dataset, self.lets_split = carve_heldout(
                self.train_dataset, args.lets_heldout_fraction, args.seed
            )
        elif lets_dataset is not None and not args.lets:
            logger.warning("lets_dataset is ignored: lets=False keeps the radius fixed.")
        elif lets_dataset is not None:  # given by the user: in the form the host prepares its data
            lets_dataset = self._prepare_lets_dataset(lets_dataset)
        if hasattr(self.model, "add_model_tags"):  # as TRL's trainers tag theirs: the Hub shows how it was trained
            self.model.add_model_tags(self._tag_names)
        # Every pass computes a per-micro-batch mean loss, divided by the accumulation steps here; BERT/RoBERTa
        # heads accept **kwargs but ignore num_items_in_batch (transformers #47688), so we never pass it.
        self.model_accepts_loss_kwargs = False
        self.lets_dataset = lets_dataset
        self.direction = None if args.sam_variant == "none" else get_perturbation(args.sam_variant)
        self._label_prior = self._constant_predictor_loss() if args.lets and args.lets_guard_tolerance else None
        self._reset_lets_state()

    def _prepare_lets_dataset(self, dataset: Any) -> Any:
        """A ``lets_dataset`` the user passed, brought to the form of the prepared ``train_dataset``: as given here; a
        host trainer that prepares its data in ``__init__`` (TRL's) overrides this to prepare it the same way."""
        return dataset

    def _constant_predictor_loss(self) -> float | None:
        """The guard's *not learning* level (`label_prior_loss`); None where the loss is the user's own."""
        custom_loss = type(self).compute_loss is not Trainer.compute_loss or getattr(self, "compute_loss_func", None)
        if custom_loss or self.args.label_smoothing_factor:
            return None
        return label_prior_loss(getattr(self.model, "config", None), self.train_dataset)

    def _reset_lets_state(self) -> None:
        """The radius back to ``sam_rho`` and no hyper-step in flight: a new ``train()`` starts afresh (a resume
        then loads the checkpoint's state on top)."""
        args = self.args
        self._params: list[torch.Tensor] | None = None  # model_init may bring a new model to each train()
        self._theta: list[torch.Tensor] | None = None  # the saved copy the weights are restored from
        start = args.lets_start  # with a loss budget, log_rho holds log sigma
        self.radius = RadiusState(log_rho=math.log(start) if start > 0 else -math.inf)
        self._budget_rho: torch.Tensor | None = None  # the loss budget's radius at the latest perturbed micro-batch
        self._budget_free: torch.Tensor | None = None  # 1 while no micro-batch of this step hit the ceiling
        self.guard = None
        if args.lets_guard_tolerance:
            self.guard = LossGuard(
                args.lets_guard_tolerance,
                patience=args.lets_guard_patience,
                threshold=args.lets_guard_threshold,
                prior=self._label_prior,
            )
        self.lets_history: list[dict[str, float]] = []
        self._micro_step = 0
        self._perturb = True  # this optimizer step is perturbed (every sam_every-th; the others are plain)
        self._look: list[torch.Tensor] | None = None  # LookSAM: the plain gradient, then g_v (sam_reuse='looksam')
        self._pending: _Pending | None = None  # fed by step t-1, consumed by step t
        self._lookahead: list[torch.Tensor] | None = None  # Z, d theta / d rho summed over the window so far
        self._w: list[torch.Tensor] | None = None  # the Z of the hyper-step in progress
        self._feeding = False  # this step's curvature u feeds the look-ahead
        self._u_spare: list[torch.Tensor] | None = None  # a free buffer for u (the last u once added into Z, or Z)
        self._u_acc: list[torch.Tensor] | None = None  # this step's curvature, accumulated over micro-batches
        self._sums: torch.Tensor | None = None  # [l_V, h_V.w, l_B', g'.w] of the hyper-step in progress
        self._heldout: HeldoutStream | None = None
        self._heldout_resume: dict | None = None

    def train(self, *args: Any, **kwargs: Any):
        """`Trainer.train`, starting the radius afresh (or from the checkpoint when resuming)."""
        self._reset_lets_state()
        return super().train(*args, **kwargs)

    def _hp_search_setup(self, trial: Any) -> None:
        """`Trainer._hp_search_setup` sets a trial's values on ``self.args`` after `train` reset the radius: check
        them as at construction, and start this trial's radius, bounds, direction and guard from them."""
        super()._hp_search_setup(trial)
        if trial is None or self.hp_search_backend is None:
            return
        self.args.validate_sam_and_lets()
        self.direction = None if self.args.sam_variant == "none" else get_perturbation(self.args.sam_variant)
        lets_guarded = self.args.lets and self.args.lets_guard_tolerance
        self._label_prior = self._constant_predictor_loss() if lets_guarded else None
        self._reset_lets_state()

    @property
    def rho(self) -> float:
        """The current perturbation radius (with ``sam_budget``: the latest perturbed step's, NaN before one)."""
        if self.args.sam_budget is None:
            return self.radius.rho
        return math.nan if self._budget_rho is None else float(self._budget_rho)

    @property
    def sigma(self) -> float | None:
        """The loss budget (``sam_budget``, learned when ``lets``); None for a radius."""
        return self.radius.rho if self.args.sam_budget is not None else None

    @property
    def radius_lr(self) -> float:
        """``lets_lr`` (by default ``ln(lets_travel) / H``, `radius_lr`) at this hyper-step of ``lets_lr_schedule``."""
        args, max_steps = self.args, self.state.max_steps
        lr = args.lets_lr if args.lets_lr is not None else radius_lr(args.lets_travel, max_steps, args.lets_interval)
        k = max(self.state.global_step - 1, 0) // args.lets_interval  # hyper-steps fall on steps 1, 1 + I, ...
        return scheduled_lr(lr, k, planned_hyper_steps(max_steps, args.lets_interval), args.lets_lr_schedule)

    # ------------------------------------------------------------------------------------------------------------
    # The step
    # ------------------------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """One micro-batch: ascent, perturbation, descent, restore on a perturbed step (every ``sam_every``-th),
        the stock one-pass step on the others; radius bookkeeping around optimizer steps.

        ``num_items_in_batch`` is not used: every pass's loss is the micro-batch mean (see docs/algorithm.md).
        """
        if self.direction is None:
            return super().training_step(model, inputs, None)
        model.train()
        if callable(getattr(self.optimizer, "train", None)):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        params = self._trainable_params()
        n_accum = self.current_gradient_accumulation_steps
        if self._micro_step == 0:
            self._perturb = self.state.global_step % self.args.sam_every == 0
            self._begin_optimizer_step(model, params)
        if self._perturb:
            loss = self._sam_micro_batch(model, inputs, params, n_accum)
        else:  # the stock step: one pass at theta
            loss = self._descent(model, inputs, n_accum)
            if self._sums is not None:  # l(theta; B') of the hyper-step in progress (g'^T w: at the step's end)
                self._sums[2] += loss.double() / n_accum

        self._micro_step += 1
        if self.accelerator.sync_gradients:
            self._end_optimizer_step(params)
            self._micro_step = 0
        return loss / n_accum

    def _sam_micro_batch(self, model, inputs, params, n_accum: int) -> torch.Tensor:
        """Ascent, perturbation, descent, restore; the LETS sums and curvature of this micro-batch; its loss."""
        accumulated = [p.grad for p in params]  # set aside what earlier micro-batches accumulated
        for p in params:
            p.grad = None
        with self._rewound_rng():
            loss, grads, finite = self._ascent(model, inputs, params)
        if self._w is not None:  # g'^T w and l(theta; B') for the hyper-step in progress
            self._sums[2:] += torch.stack([loss.double(), dot(grads, self._w)]) / n_accum
        d = self.direction(params, grads, eta=self.args.asam_eta) if finite else None
        if self.args.sam_budget is not None and d is not None:  # d becomes eps = rho_i d, on the device (no sync)
            self._budget_rho, free = budget_radius(grads, d, self.sigma, self.args.sam_rho)
            torch._foreach_mul_(d, self._budget_rho.to(d[0].dtype))
            self._budget_free = free if self._budget_free is None else self._budget_free * free
            step_size = 1.0
        else:
            step_size = self.radius.rho  # self.rho would read a budget's radius back to the host
        if self._look is not None and finite:
            torch._foreach_add_(self._look, grads, alpha=1.0 / n_accum)
        if self._feeding and finite and self.args.lets_hvp != "exact":  # exact: its own pass, `_accumulate_hvp`
            secant = self.args.lets_hvp == "secant"
            self._accumulate_curvature(grads if secant else fisher_curvature(grads, d), n_accum)
        del grads
        for p, a in zip(params, accumulated):
            p.grad = a
        with torch.no_grad():
            if d is not None:
                torch._foreach_add_(params, d, alpha=step_size)
        with self._extra_pass():
            if self._feeding and self.args.lets_hvp == "exact" and finite:
                with self._rewound_rng():
                    self._accumulate_hvp(model, inputs, params, d, n_accum)
            del d
            self._descent(model, inputs, n_accum)
        copy_into(params, self._theta)  # restore theta
        return loss.detach()

    @contextlib.contextmanager
    def _extra_pass(self):
        """Marks a pass plain training would not run (``lets_extra_pass``)."""
        self.lets_extra_pass = True
        try:
            yield
        finally:
            self.lets_extra_pass = False

    def _rewound_rng(self) -> contextlib.AbstractContextManager:
        """With ``sam_same_dropout`` (or ``lets_same_dropout`` on a step that feeds the curvature), a context after
        which the random state is back where it was (CPU and this device), so the next pass draws the same dropout
        masks; otherwise a no-op."""
        if not (self.args.sam_same_dropout or (self.args.lets_same_dropout and self._feeding)):
            return contextlib.nullcontext()
        device = self.args.device
        if device.type == "cpu":
            return torch.random.fork_rng(devices=[])
        return torch.random.fork_rng(devices=[device], device_type=device.type)

    def _gradient(self, model, inputs, params) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``l(theta; batch)`` and its gradient on this rank (no DDP sync; as scaled by fp16's GradScaler), with
        ``p.grad`` left empty."""
        with self.accelerator.no_sync(model):
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, dict(inputs))
            self.accelerator.backward(loss)
        grads = grads_of(params)
        for p in params:
            p.grad = None
        return loss, grads

    def _ascent(self, model, inputs, params) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
        """``l(theta; B)`` and its gradient ``g`` (unscaled; averaged over ranks when the perturbation is global)."""
        loss, grads = self._gradient(model, inputs, params)
        if self.args.sam_sync_perturbation:
            all_reduce_mean_(grads, self.accelerator.num_processes)
        finite = True
        if self.accelerator.scaler is not None:  # fp16: unscale; an overflow skips the perturbation
            torch._foreach_mul_(grads, self._inv_scale())
            finite = all_finite(grads)  # a host sync, fp16 only
        return loss, grads, finite

    def _descent(self, model, inputs, n_accum: int) -> torch.Tensor:
        """Backward of ``l(theta + eps; B) / n_accum`` into the accumulated gradients (DDP syncs on the last one);
        ``l``. On a plain step ``eps = 0``: the stock step."""
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, dict(inputs))
        self.accelerator.backward(loss / n_accum)
        return loss.detach()

    # ------------------------------------------------------------------------------------------------------------
    # LETS bookkeeping
    # ------------------------------------------------------------------------------------------------------------
    def _begin_optimizer_step(self, model, params) -> None:
        """Save theta; turn the pending u into w and add it to the look-ahead Z; on a hyper-step (the step after a
        multiple of lets_interval) run the held-out pass on Z; open a curvature buffer if this step feeds."""
        if self._perturb:
            self._theta = copy_into(self._theta, params)
            if self.args.sam_reuse == "looksam" and self.args.sam_every > 1:
                self._look = zeros_into(self._look, params)
        pending, self._pending = self._pending, None
        trace = self.args.lets_horizon == "trace"  # Z is d theta / d log rho, kept across hyper-steps
        if pending is not None and not self.accelerator.optimizer_step_was_skipped:
            optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
            if optimizer_kind(optimizer) == "other":
                name = type(optimizer).__name__
                logger.warning_once(f"LETS: {name} has no known preconditioner; the hypergradient assumes P = 1.")
            lrs = {id(g): lr for g, lr in zip(optimizer.param_groups, pending.lrs)}
            rho_k = self.rho if pending.rho is None else pending.rho
            scale, decay = (rho_k, 1 - 1 / self.args.lets_trace_steps) if trace else (1.0, 1.0)
            self._lookahead = lookahead_add_(
                self._lookahead, pending.u, params, optimizer, lrs, pending.clip_coef, scale=scale, decay=decay
            )
            self._u_spare = pending.u if self._lookahead is not pending.u else self._u_spare  # in Z: free for u
        step, interval = self.state.global_step, self.args.lets_interval
        if self._lookahead is not None and (step - 1) % interval == 0:
            # trace: _w aliases Z; this step's dots read it before the next step adds into it
            self._w, self._lookahead = self._lookahead, self._lookahead if trace else None
            self._sums = torch.zeros(4, dtype=torch.float64, device=params[0].device)
            self._sums[:2] = self._heldout_pass(model, params, self._w)
        self._feeding = self.args.lets and self._perturb and (self.args.lets_horizon != "step" or step % interval == 0)

    def _heldout_pass(self, model, params, w) -> torch.Tensor:
        """``[l(theta; V), h_V^T w]`` on one held-out batch, local to this rank (averaged with the other sums)."""
        with self._extra_pass():
            loss, grads = self._gradient(model, self._prepare_inputs(self._heldout_stream().next()), params)
        return torch.stack([loss.detach().double(), dot(grads, w) * self._inv_scale()])

    def _accumulate_hvp(self, model, inputs, params, d, n_accum: int) -> None:
        """``exact``: ``H(theta + eps) d`` by double backward, in an extra pass on the unwrapped model."""
        unwrapped = self.accelerator.unwrap_model(model, keep_fp32_wrapper=True)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(unwrapped, dict(inputs))
        self._accumulate_curvature(hessian_vector_product(loss, params, d), n_accum)

    def _accumulate_curvature(self, share, n_accum: int) -> None:
        """Add this micro-batch's share to the curvature buffer: ``g`` (secant), ``g*g*d`` (fisher) or ``H d``
        (exact); the step's first share is copied into the spare buffer (`accumulate_`), which is then taken."""
        self._u_acc = accumulate_(self._u_acc, share, 1.0 / n_accum, self._u_spare)
        self._u_spare = None if self._u_acc is self._u_spare else self._u_spare

    def _end_optimizer_step(self, params) -> None:
        """After the last micro-batch: the radius step of the hyper-step in progress, then u for the next one."""
        rho = self.rho if self.args.sam_budget is None else 1.0  # a budget's u is d G / d log sigma: no division
        if self._w is not None:
            if not self._perturb:  # a plain step's g'^T w: its own gradient, before a LookSAM term joins it
                self._sums[3] = dot(grads_of(params), self._w) * self._inv_scale()
            self._radius_step()
            if self.args.lets_horizon != "trace":  # Z is spent: the next u goes into it (no buffer is mapped anew)
                self._u_spare = self._w
            self._w = self._sums = None
        if self._u_acc is not None:  # None: not a feeding step, or every ascent overflowed (fp16)
            self._pending = self._form_curvature(params, rho)
            self._u_acc = None
        self._budget_free = None
        if self._look is not None:
            self._reuse_look(params)

    def _reuse_look(self, params) -> None:
        """LookSAM: a perturbed step turns its plain gradient into ``g_v`` (identical on every rank); a plain step
        adds ``alpha ||g|| / ||g_v|| g_v`` to its gradient before clipping and the optimizer step."""
        grads = grads_of(params)
        if not self._perturb:
            looksam_gradient_(grads, self._look, self.args.looksam_alpha)
            return
        if not self.args.sam_sync_perturbation:  # per-rank ascents: average them, as G already is
            all_reduce_mean_(self._look, self.accelerator.num_processes)
        orthogonal_part_(self._look, grads)  # g_v in G's (loss-scaled) units: looksam_gradient_ reads its direction
        if self.accelerator.scaler is not None and not all_finite(self._look):
            self._look = None  # fp16 overflow: this step is skipped, nothing to reuse until the next perturbed one

    def _inv_scale(self) -> float:
        """``1 / loss scale`` of fp16's GradScaler (1 without one): the accumulated gradients carry the scale."""
        return 1.0 / self.accelerator.scaler.get_scale() if self.accelerator.scaler is not None else 1.0

    def _radius_step(self) -> None:
        sums = self._sums
        if self.accelerator.num_processes > 1:
            sums = self.accelerator.reduce(sums, reduction="mean")
        loss_v, s_v, loss_b, s_b = sums.tolist()  # a host sync, once per hyper-step
        if not all(map(math.isfinite, (loss_v, s_v, loss_b, s_b))):
            logger.warning("LETS: non-finite hyper-step at step %d skipped.", self.state.global_step)
            return
        gap = loss_v - loss_b
        args = self.args
        dF_drho = hypergradient(gap, s_v, s_b, args.lets_objective)
        if args.sam_budget is not None:  # the dots are dF/d log sigma: the radius step takes dF/dsigma
            dF_drho /= self.sigma
        elif args.lets_horizon == "trace":  # the dots are dF/ds, s a shift of log rho
            dF_drho /= self.rho
        self.radius, message = guarded_radius_step(
            self.radius,
            self.guard,
            dF_drho,
            loss_b,
            sam_rho=args.lets_start,
            lr=self.radius_lr,
            optimizer=args.lets_optimizer,
            clip=args.lets_clip,
            rho_min=args.rho_bounds[0],
            rho_max=args.rho_bounds[1],
        )
        if message:
            logger.warning("LETS loss guard at step %d: %s", self.state.global_step, message)
        record = {"step": self.state.global_step + 1, "rho": self.rho, "gap": gap, "hypergradient": dF_drho}
        if args.sam_budget is not None:
            record["sigma"] = self.sigma
        tripped = bool(self.guard and self.guard.tripped)
        self.lets_history.append({**record, "train_loss": loss_b, "heldout_loss": loss_v, "guard_tripped": tripped})

    def _form_curvature(self, params, rho: float) -> _Pending:
        """``u`` from the accumulated buffer and the final gradient ``G``, identical on every rank."""
        u = self._u_acc
        if not (self.args.lets_hvp == "secant" and self.args.sam_sync_perturbation):
            all_reduce_mean_(u, self.accelerator.num_processes)  # per-rank ascents or batches: average them
        inv_scale = self._inv_scale()
        grads = grads_of(params)
        clip_coef = clip_coefficient(grads, self.args.max_grad_norm, inv_scale)
        if self._budget_free is not None:  # d rho_i / d log sigma = 0 under the ceiling (rank-wide for the secant)
            free = self._budget_free
            if self.accelerator.num_processes > 1 and not self.args.sam_sync_perturbation:
                free = torch.floor(self.accelerator.reduce(free, reduction="mean"))
            clip_coef = free.float() * clip_coef
        if self.args.lets_hvp == "secant":  # grads carry fp16's loss scale; c joins u in the same pass
            secant_curvature_(u, grads, rho, descent_scale=inv_scale, factor=clip_coef)
            clip_coef = 1.0
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        return _Pending(u=u, lrs=[g["lr"] for g in optimizer.param_groups], clip_coef=clip_coef, rho=rho)

    def _trainable_params(self) -> list[torch.Tensor]:
        """Parameters SAM perturbs: those with ``requires_grad`` (frozen layers and PEFT bases stay put)."""
        if self._params is None:
            self._params = [p for p in self.model.parameters() if p.requires_grad]
            if not self._params:
                raise ValueError("The model has no trainable parameters (requires_grad=True): nothing to train.")
        return self._params

    def _heldout_stream(self) -> HeldoutStream:
        """The held-out batches, built on first use (after a resume, from the checkpoint's point)."""
        if self._heldout is None:
            batch_size = self.args.heldout_batch_size
            loader = functools.partial(self._get_dataloader, description="lets", batch_size=batch_size)
            self._heldout = HeldoutStream.from_dataset(loader, self.lets_dataset, self.args.seed, self._heldout_resume)
        return self._heldout

    # ------------------------------------------------------------------------------------------------------------
    # Logging and checkpoints
    # ------------------------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``rho`` (and, once LETS has stepped, ``lets_gap`` and ``lets_hypergrad``) to training logs."""
        if "loss" in logs and self.direction is not None:
            logs["rho"] = self.rho
            if self.args.sam_budget is not None:
                logs["sam_budget"] = self.sigma
            if self.lets_history:
                last = self.lets_history[-1]
                logs.update(lets_gap=last["gap"], lets_hypergrad=last["hypergradient"])
        super().log(logs, start_time)

    def save_lets_history(self, folder: str | None = None) -> None:
        """``lets_history.csv`` and ``lets_history.png`` (`plot_history`, needs matplotlib) in ``folder`` (default
        ``args.output_dir``), on the main process; nothing for a fixed radius."""
        if not (self.lets_history and self.is_world_process_zero()):
            return
        folder = folder or self.args.output_dir
        os.makedirs(folder, exist_ok=True)
        write_history_csv(self.lets_history, os.path.join(folder, "lets_history.csv"))
        title = f"{self.args.sam_variant.upper()} radius learned by LETS"
        start = self.args.sam_rho if self.args.sam_budget is None else None  # a budget's sam_rho is a ceiling
        plot_history(self.lets_history, os.path.join(folder, "lets_history.png"), title, start)

    def create_model_card(self, *args: Any, tags: str | list[str] | None = None, **kwargs: Any) -> None:
        """The host's model card (``README.md`` in ``output_dir``, what ``push_to_hub`` uploads), tagged
        ``lets_hf``/``sam``/``lets`` and followed by what the radius did (`radius_card`)."""
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        variant = self.args.sam_variant if self.direction is not None else None
        extra = [t for t in (*self._tag_names, variant, "lets" if variant and self.args.lets else None) if t]
        super().create_model_card(*args, tags=[*tags, *(t for t in extra if t not in tags)], **kwargs)
        path = os.path.join(self.args.output_dir, "README.md")
        if self.is_world_process_zero() and variant and os.path.isfile(path):
            with open(path, "a", encoding="utf-8") as f:
                f.write(radius_card(self.args, self.lets_history, self.rho))

    def _save_checkpoint(self, model, trial) -> None:
        """The LETS state first, then the Trainer's files: its last one, ``trainer_state.json``, marks the folder
        complete (`last_complete_checkpoint`), so a kill while saving never leaves a folder that looks whole."""
        if self.direction is not None and self.args.should_save:
            pending = self._pending
            state = {
                "radius": self.radius.to_dict(),
                "guard": self.guard.to_dict() if self.guard else None,
                "heldout": self._heldout.state_dict() if self._heldout else self._heldout_resume,
                "history": self.lets_history,
                "pending": pending and {"lrs": pending.lrs, "clip_coef": float(pending.clip_coef), "rho": pending.rho},
            }
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            save_lets_state(folder, state, {"u": pending and pending.u, "z": self._lookahead, "v": self._look})
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.direction is None or checkpoint is None:
            return
        loaded = load_lets_state(checkpoint, device=self.args.device)
        if loaded is None:
            logger.warning("%s has no %s: the radius restarts from sam_rho.", checkpoint, LETS_STATE_NAME)
            return
        state, buffers = loaded
        self.radius = RadiusState(**state["radius"])
        if self.guard is not None and state["guard"]:
            self.guard = LossGuard.from_dict({**state["guard"], "prior": self._label_prior})
        self._heldout_resume, self._heldout = state["heldout"], None
        self.lets_history = state["history"]
        if "u" in buffers:
            self._pending = _Pending(u=buffers["u"], **state["pending"])
        self._lookahead = buffers.get("z")
        self._look = buffers.get("v")
