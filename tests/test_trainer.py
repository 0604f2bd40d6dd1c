"""LETSTrainer against hand references and the stock Trainer: the SAM step, plain-training equivalence, cost,
accumulation, compute_loss overrides, frozen parameters, bf16, resume, logging, refused backends."""

import logging
import math

import pytest
import torch
from toy import LinearRegressor, params_of, regression_data, sam_sgd_step, tiny_bert, token_data
from transformers import Trainer, TrainerCallback, TrainingArguments

from lets_hf import LETSTrainer, LETSTrainingArguments, register_perturbation


def sgd_args(base_args, **kw):
    return dict(
        base_args,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0,
        **kw,
    )


def one_step(base_args, variant, n_accum, batch, **kw):
    data = regression_data(16)
    model = LinearRegressor()
    theta0 = model.linear.weight.detach().clone(), model.linear.bias.detach().clone()
    args = LETSTrainingArguments(
        **sgd_args(
            base_args,
            sam_variant=variant,
            sam_rho=0.05,
            lets=False,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=n_accum,
        ),
        **kw,
    )
    LETSTrainer(model=model, args=args, train_dataset=data).train()
    label = {tuple(d["x"].tolist()): d["labels"] for d in data}
    micro = [(x, torch.stack([label[tuple(r.tolist())] for r in x])) for x in model.seen[::2]]
    return model, theta0, micro


@pytest.mark.parametrize("variant", ["sam", "asam"])
@pytest.mark.parametrize("n_accum,batch", [(1, 8), (2, 4)])
def test_sam_step_equals_hand_reference(base_args, variant, n_accum, batch):
    model, theta0, micro = one_step(base_args, variant, n_accum, batch)
    assert len(micro) == n_accum  # ascent and descent per micro-batch: 2 forwards each
    w1, b1 = sam_sgd_step(*theta0, micro, 0.05, variant)
    torch.testing.assert_close(model.linear.weight.detach(), w1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.linear.bias.detach(), b1, rtol=1e-12, atol=1e-12)


def test_accumulation_is_per_micro_batch_not_one_big_batch(base_args):
    """2 x b perturbs each micro-batch with its own direction: it differs from one batch of 2b."""
    model, theta0, micro = one_step(base_args, "sam", 2, 4)
    merged = [(torch.cat([x for x, _ in micro]), torch.cat([y for _, y in micro]))]
    w_big, _ = sam_sgd_step(*theta0, merged, 0.05, "sam")
    assert not torch.allclose(model.linear.weight.detach(), w_big, atol=1e-9)


def test_registered_variant_is_used(base_args):
    @register_perturbation("fisher_sam_test")
    def fisher_sam(params, grads, *, eta):
        """Fisher-SAM-like: d = F^-1 g / sqrt(g^T F^-1 g) with the diagonal Fisher F = 1 + eta g^2."""
        inv = [1.0 / (1.0 + eta * g * g) for g in grads]
        norm = torch.sqrt(sum((i * g * g).sum() for i, g in zip(inv, grads)))
        return [i * g / norm for i, g in zip(inv, grads)]

    model, theta0, micro = one_step(base_args, "fisher_sam_test", 1, 8, asam_eta=0.5)
    w1, b1 = sam_sgd_step(*theta0, micro, 0.05, "fisher_sam_test", eta=0.5)
    torch.testing.assert_close(model.linear.weight.detach(), w1, rtol=1e-12, atol=1e-12)
    w_sam, _ = sam_sgd_step(*theta0, micro, 0.05, "sam")
    assert not torch.allclose(w1, w_sam)


# ---- equivalence with the stock Trainer ---------------------------------------------------------------------------
def train_bert(trainer_cls, args_cls, base_args, n_accum=1, **kw):
    model = tiny_bert()
    args = args_cls(
        **base_args,
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=n_accum,
        learning_rate=1e-3,
        **kw,
    )
    trainer = trainer_cls(model=model, args=args, train_dataset=token_data(32))
    if trainer_cls is Trainer:
        trainer.model_accepts_loss_kwargs = False  # transformers #47688, fixed the way LETSTrainer fixes it
    trainer.train()
    return params_of(model)


@pytest.mark.parametrize("n_accum", [1, 2])
@pytest.mark.parametrize("setting", [dict(sam_variant="none"), dict(sam_variant="sam", sam_rho=0.0, lets=False)])
def test_plain_settings_equal_the_stock_trainer(base_args, setting, n_accum):
    base = {k: v for k, v in base_args.items() if k != "lets_guard_tolerance"}
    stock = train_bert(Trainer, TrainingArguments, base, n_accum)
    ours = train_bert(LETSTrainer, LETSTrainingArguments, base_args, n_accum, **setting)
    for name in stock:
        torch.testing.assert_close(ours[name], stock[name], rtol=0, atol=1e-7, msg=name)
    assert any(not torch.equal(stock[n], v) for n, v in params_of(tiny_bert()).items())  # training moved them


def count_forwards(model):
    counter = {"n": 0}
    model.register_forward_pre_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return counter


@pytest.mark.parametrize(
    "setting,per_step,extra",
    [
        (dict(sam_variant="none"), 1, 0),
        (dict(sam_variant="sam", lets=False), 2, 0),
        (dict(sam_variant="sam", lets=True, lets_interval=1), 2, 1),  # + one held-out pass per hyper-step
        (dict(sam_variant="sam", lets=True, lets_interval=2), 2, 1),
    ],
)
def test_forward_passes_per_step(base_args, setting, per_step, extra):
    model = tiny_bert()
    counter = count_forwards(model)
    args = LETSTrainingArguments(**base_args, max_steps=5, per_device_train_batch_size=4, **setting)
    LETSTrainer(model=model, args=args, train_dataset=token_data(40)).train()
    hyper_steps = len(range(1, 5, setting.get("lets_interval", 1))) if setting.get("lets") else 0
    assert counter["n"] == 5 * per_step + extra * hyper_steps


# ---- user code: compute_loss overrides, frozen layers, bf16 -------------------------------------------------------
class WeightedLossTrainer(LETSTrainer):
    """Class-weighted cross-entropy, the usual reason to override compute_loss; counts its calls."""

    calls = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        type(self).calls += 1
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=torch.tensor([1.0, 3.0]))
        return (loss, outputs) if return_outputs else loss


def test_compute_loss_override_is_used_in_every_pass(base_args):
    WeightedLossTrainer.calls = 0
    model = tiny_bert()
    counter = count_forwards(model)
    args = LETSTrainingArguments(**base_args, max_steps=3, per_device_train_batch_size=4, lets_interval=1)
    WeightedLossTrainer(model=model, args=args, train_dataset=token_data(40)).train()
    assert WeightedLossTrainer.calls == counter["n"] == 3 * 2 + 2  # ascent + descent per step, 2 held-out passes


def test_frozen_parameters_never_move(base_args):
    model = tiny_bert()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    before = params_of(model)
    args = LETSTrainingArguments(
        **base_args,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        sam_variant="asam",
        sam_rho=0.5,
        lets_interval=1,
    )
    LETSTrainer(model=model, args=args, train_dataset=token_data(40)).train()
    after = params_of(model)
    for name in before:
        if name.startswith("bert.embeddings"):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_bf16_on_cpu_trains(base_args):
    model = tiny_bert()
    args = LETSTrainingArguments(**base_args, max_steps=3, per_device_train_batch_size=4, bf16=True, lets_interval=1)
    trainer = LETSTrainer(model=model, args=args, train_dataset=token_data(40))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert all(math.isfinite(e["loss"]) for e in logs) and "lets_hypergrad" in logs[-1]
    assert math.isfinite(trainer.rho) and trainer.rho != args.sam_rho


# ---- held-out split, logging, resume ------------------------------------------------------------------------------
def test_heldout_split_is_disjoint_and_stratified(base_args):
    data = token_data(200)
    args = LETSTrainingArguments(**base_args, lets_heldout_fraction=0.25)
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=data)
    train, held = set(trainer.lets_split["train_indices"]), set(trainer.lets_split["heldout_indices"])
    assert not train & held and train | held == set(range(200))
    assert len(trainer.train_dataset) == len(train) and len(trainer.lets_dataset) == len(held) == 50
    for label in (0, 1):
        n = sum(int(d["labels"]) == label for d in data)
        assert sum(int(data[i]["labels"]) == label for i in held) == round(0.25 * n)
    again = LETSTrainer(model=tiny_bert(), args=args, train_dataset=data)
    assert again.lets_split == trainer.lets_split  # reproducible from the seed


def test_the_carve_is_announced_at_warning_level(base_args, caplog):
    """A user's usual logging setup hides INFO: losing 10% of the training set must be said as a warning."""
    args = LETSTrainingArguments(**base_args, lets_heldout_fraction=0.25)
    with caplog.at_level(logging.WARNING, logger="lets_hf"):
        LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(200))
    carve = [r.getMessage() for r in caplog.records if "carved" in r.getMessage()]
    assert len(carve) == 1 and all(r.levelno == logging.WARNING for r in caplog.records if "carved" in r.getMessage())
    for part in ("carved 50 of the 200", "lets_heldout_fraction=0.25", "other 150", "lets_split", "lets_dataset="):
        assert part in carve[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lets_hf"):
        LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(200), lets_dataset=token_data(20))
    assert not [r for r in caplog.records if "carved" in r.getMessage()]  # nothing carved, nothing said


def test_lets_without_heldout_data_names_the_fix(base_args):
    """A Trainer fed by its own loader has no train_dataset to carve from: without lets_dataset the first hyper-step
    stops with what to pass, not a stack trace from inside the data loader."""
    data = regression_data(16)

    class OwnLoader(LETSTrainer):
        def get_train_dataloader(self):
            return self.accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=8))

    args = LETSTrainingArguments(**sgd_args(base_args, sam_rho=0.05, max_steps=3, lets_interval=1))
    trainer = OwnLoader(model=LinearRegressor(), args=args)
    with pytest.raises(
        ValueError, match=r"lets=True needs held-out data: pass lets_dataset=\.\.\. or a train_dataset"
    ):
        trainer.train()
    assert trainer.state.global_step == 1  # the step that fed the look-ahead ran; the hyper-step after it stopped


def test_training_logs_carry_rho_gap_and_hypergradient(base_args):
    args = LETSTrainingArguments(**base_args, max_steps=4, per_device_train_batch_size=4, lets_interval=2)
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(40))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert all("rho" in e for e in logs)
    assert [e["step"] for e in logs if "lets_gap" in e] == [2, 3, 4]  # first hyper-step at step 2
    assert logs[-1]["rho"] == pytest.approx(trainer.rho)
    assert [h["step"] for h in trainer.lets_history] == [2, 4]
    assert logs[-1]["lets_hypergrad"] == pytest.approx(trainer.lets_history[-1]["hypergradient"])


@pytest.mark.parametrize(
    "interval,n_accum,horizon,extra",
    [(1, 1, "interval", {}), (2, 2, "interval", {}), (3, 1, "interval", {}), (2, 2, "step", {}),
     (2, 1, "trace", {}), (1, 1, "interval", {"lets_clip": 0.1}),
     (2, 2, "interval", {"sam_every": 2, "sam_reuse": "looksam"}), (2, 1, "step", {"sam_every": 2}),
     (2, 2, "interval", {"sam_same_dropout": True, "dropout": 0.1})],
)  # fmt: skip
def test_resume_equals_uninterrupted_run(tmp_path, base_args, interval, n_accum, horizon, extra):
    """checkpoint-3 falls inside a window at interval 2 and 3: the look-ahead Z summed so far must round-trip; at
    lets_clip 0.1 every hyper-step after the first is clipped by the recent sizes, which must round-trip too; with
    sam_every 2 step 3 is a plain step that reuses LookSAM's g_v of step 2, saved in the checkpoint; with dropout and
    sam_same_dropout the masks after the resume are the ones the uninterrupted run drew (the Trainer's RNG state)."""
    dropout = extra.pop("dropout", 0.0)

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 3  # after checkpoint-3 is written

    def run(out, max_steps, resume=None, callbacks=()):
        model = tiny_bert(dropout=dropout)
        settings = dict(base_args, output_dir=str(out), save_strategy="steps", lets_guard_tolerance=0.2)
        args = LETSTrainingArguments(
            **settings,
            save_steps=3,
            max_steps=max_steps,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            gradient_accumulation_steps=n_accum,
            lets_interval=interval,
            lets_horizon=horizon,
            lets_lr=0.2,
            lets_batch_size=3,
            **extra,
        )
        trainer = LETSTrainer(model=model, args=args, train_dataset=token_data(48), callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer, params_of(model)

    straight, p_straight = run(tmp_path / "a", 6)
    interrupted, _ = run(tmp_path / "b", 6, callbacks=[Interrupt()])
    assert interrupted.state.global_step == 3
    resumed, p_resumed = run(tmp_path / "b", 6, resume=str(tmp_path / "b" / "checkpoint-3"))
    assert straight.rho != straight.args.sam_rho
    assert resumed.rho == pytest.approx(straight.rho, rel=1e-7)  # float32 dot products: last bits only
    assert len(resumed.lets_history) == len(straight.lets_history) == len(range(1, 6, interval))
    for a, b in zip(resumed.lets_history, straight.lets_history):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-12)  # float32 dot products with cancellation: ~1e-6 apart
    for name in p_straight:
        torch.testing.assert_close(p_resumed[name], p_straight[name], rtol=0, atol=1e-6, msg=name)


# ---- refused backends ---------------------------------------------------------------------------------------------
def test_deepspeed_and_fsdp_are_refused(tmp_path):
    with pytest.raises(NotImplementedError, match="DeepSpeed is not supported"):
        LETSTrainingArguments(output_dir=str(tmp_path), deepspeed={"train_batch_size": 8})
    with pytest.raises(NotImplementedError, match="FSDP is not supported"):
        LETSTrainingArguments(output_dir=str(tmp_path), fsdp="full_shard")


@pytest.mark.parametrize("flag, backend", [("is_deepspeed_enabled", "DeepSpeed"), ("is_fsdp_enabled", "FSDP")])
def test_backend_enabled_by_an_accelerate_config_is_refused(monkeypatch, base_args, flag, backend):
    """`accelerate launch --config_file` can turn DeepSpeed/FSDP on without any training argument saying so; the
    Trainer learns it when it builds its Accelerator. (DeepSpeed itself is not installed here, so the flag is set
    the way `Trainer.create_accelerator_and_postprocess` sets it.)"""
    build = Trainer.create_accelerator_and_postprocess

    def with_backend(self):
        build(self)
        setattr(self, flag, True)

    monkeypatch.setattr(Trainer, "create_accelerator_and_postprocess", with_backend)
    args = LETSTrainingArguments(**base_args)
    with pytest.raises(NotImplementedError, match=f"{backend} is not supported by LETSTrainer"):
        LETSTrainer(model=LinearRegressor(), args=args, train_dataset=regression_data(8))


def test_plain_training_arguments_are_refused(base_args):
    base = {k: v for k, v in base_args.items() if k != "lets_guard_tolerance"}
    with pytest.raises(TypeError, match="needs LETSTrainingArguments"):
        LETSTrainer(model=tiny_bert(), args=TrainingArguments(**base))


# ---- fp16 loss scaling: the GradScaler path, exercised on CPU with torch.amp.GradScaler("cpu") ------------------
def train_tiny_bert(base_args, trainer_cls=LETSTrainer, scaler=None, lets_dataset=None, **overrides):
    """A short tiny-BERT run (4 examples per micro-batch, accumulation 2, lr 1e-2); returns (trainer, params)."""
    model = tiny_bert()
    settings = dict(max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2, gradient_accumulation_steps=2)
    args = LETSTrainingArguments(**base_args, **(settings | overrides))
    trainer = trainer_cls(model=model, args=args, train_dataset=token_data(48), lets_dataset=lets_dataset)
    if scaler is not None:
        trainer.accelerator.scaler = scaler  # what Accelerate sets for fp16 on CUDA; the optimizer wrapper takes it
    trainer.train()
    return trainer, params_of(model)


def train_with_scaler(base_args, scaler, trainer_cls=LETSTrainer):
    """No clipping here: Accelerate unscales before clipping only when mixed_precision is fp16 (CUDA), so with a
    scaler set by hand the Trainer would clip scaled gradients; the optimizer's scaler.step unscales either way."""
    return train_tiny_bert(base_args, trainer_cls, scaler=scaler, lets_interval=1, lets_lr=0.2, max_grad_norm=0)


def test_loss_scaling_changes_nothing(base_args):
    """Every gradient LETS uses is unscaled: a power-of-two loss scale gives the same run as none."""
    plain, p_plain = train_with_scaler(base_args, None)
    scaled, p_scaled = train_with_scaler(base_args, torch.amp.GradScaler("cpu", init_scale=2.0**14))
    assert scaled.rho == pytest.approx(plain.rho, rel=1e-5) and plain.rho != plain.args.sam_rho
    # the values, not only their signs (signum's steps would hide a wrongly scaled u)
    hyper = [h["hypergradient"] for h in plain.lets_history]
    assert [h["hypergradient"] for h in scaled.lets_history] == pytest.approx(hyper, rel=1e-4) and all(hyper[1:])
    assert hyper[0] == 0  # the first hyper-step's look-ahead is Adam's first step, which adds nothing
    for name in p_plain:
        torch.testing.assert_close(p_scaled[name], p_plain[name], rtol=1e-5, atol=1e-6, msg=name)


class OverflowOnce(LETSTrainer):
    """The third compute_loss call (the ascent of the first micro-batch of step 2) overflows under the scale."""

    calls = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        type(self).calls += 1
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss * 3e38 if type(self).calls == 3 else loss


def test_overflowing_ascent_skips_the_perturbation(base_args):
    OverflowOnce.calls = 0
    trainer, params = train_with_scaler(base_args, torch.amp.GradScaler("cpu", init_scale=2.0**14), OverflowOnce)
    assert trainer.state.global_step == 4 and math.isfinite(trainer.rho)
    assert all(torch.isfinite(p).all() for p in params.values())


def test_a_second_train_starts_afresh(base_args):
    """No hyper-step, history or radius leaks from one train() into the next."""
    args = LETSTrainingArguments(**base_args, max_steps=3, per_device_train_batch_size=4, lets_interval=1, lets_lr=0.2)
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=token_data(40))
    trainer.train()
    first = [h["step"] for h in trainer.lets_history]
    trainer.train()
    assert [h["step"] for h in trainer.lets_history] == first == [2, 3]


def test_unsized_training_set_needs_a_lets_dataset():
    from lets_hf import split_heldout

    with pytest.raises(ValueError, match="iterable .* pass lets_dataset"):
        split_heldout(iter(token_data(8)), 0.1, seed=0)


def test_lets_with_a_pinned_radius_trains_exactly_like_fixed_sam(base_args):
    """The held-out passes and the bookkeeping must not touch training: with rho pinned (rho_min = rho_max =
    sam_rho), LETS-SAM on the same training data gives fixed SAM's parameters."""

    def run(**lets):
        held = token_data(12, seed=1) if lets.get("lets") else None
        return train_tiny_bert(base_args, lets_dataset=held, max_steps=5, max_grad_norm=1.0, sam_rho=0.05, **lets)

    fixed, p_fixed = run(lets=False)
    pinned, p_pinned = run(lets=True, lets_interval=1, lets_rho_min=0.05, lets_rho_max=0.05)
    assert len(pinned.lets_history) == 4 and pinned.rho == pytest.approx(0.05)
    for name in p_fixed:
        torch.testing.assert_close(p_pinned[name], p_fixed[name], rtol=0, atol=1e-7, msg=name)


class BufferWatch(LETSTrainer):
    """Holds every look-ahead and curvature buffer it sees (so no address is reused), to count them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list = []

    def _end_optimizer_step(self, params):
        super()._end_optimizer_step(params)
        for buffer in (self._lookahead, self._pending and self._pending.u, self._u_spare):
            if buffer is not None and all(b is not buffer[0] for b in self.seen):
                self.seen.append(buffer[0])


@pytest.mark.parametrize("horizon, buffers", [("interval", 2), ("step", 1)])
def test_the_look_ahead_and_curvature_buffers_are_reused_across_windows(base_args, horizon, buffers):
    """After a hyper-step its look-ahead Z is spent and takes the next u: a run of 5 windows keeps the same buffers
    (Z and u: 2; one u with lets_horizon='step'), where a freed Z and a fresh u every window made a CPU fault in a
    parameter-sized allocation anew (docs/algorithm.md, "The horizon")."""
    args = LETSTrainingArguments(
        **base_args, max_steps=11, per_device_train_batch_size=4, lets_interval=2, lets_horizon=horizon
    )
    trainer = BufferWatch(model=tiny_bert(), args=args, train_dataset=token_data(60), lets_dataset=token_data(8, 1))
    trainer.train()
    assert len(trainer.lets_history) == 5
    assert len(trainer.seen) == buffers
