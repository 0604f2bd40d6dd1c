"""The loss guard on a real run-away: a hypergradient forced to say "larger" every hyper-step drives rho up until
SAM wrecks the model; the guard must trip, send rho back to sam_rho, and let the run recover."""

import statistics

import pytest
from toy import rule_data, tiny_bert

import lets_hf.trainer
from lets_hf import LETSTrainer, LETSTrainingArguments


def run_away(base_args, monkeypatch, guard_tolerance):
    monkeypatch.setattr(lets_hf.trainer, "hypergradient", lambda *args: -1.0)  # Adam: +lets_lr on log rho per step
    args = dict(base_args, lets_guard_tolerance=guard_tolerance, logging_steps=1000)
    args = LETSTrainingArguments(
        **args, max_steps=60, per_device_train_batch_size=16, learning_rate=1e-2, lr_scheduler_type="constant",
        sam_rho=0.01, lets_rho_max=50.0, lets_interval=1, lets_lr=0.15, lets_guard_patience=None,
    )  # fmt: skip
    trainer = LETSTrainer(model=tiny_bert(), args=args, train_dataset=rule_data(320), lets_dataset=rule_data(64, 1))
    trainer.train()
    return trainer, trainer.lets_history


def test_guard_trips_on_a_run_away_radius_and_the_run_recovers(base_args, monkeypatch, caplog):
    unguarded, free = run_away(base_args, monkeypatch, guard_tolerance=None)
    with caplog.at_level("WARNING", logger="lets_hf.trainer"):
        guarded, history = run_away(base_args, monkeypatch, guard_tolerance=0.2)
    assert "loss guard" in caplog.text and "rose more than 20% above its best" in caplog.text
    # Without the guard rho runs to its bound and the model is wrecked (it had learned: loss ~0.03 at step ~30).
    assert free[-1]["rho"] == pytest.approx(50.0) and min(h["train_loss"] for h in free) < 0.1
    assert statistics.fmean(h["train_loss"] for h in free[-10:]) > 0.5
    # With it: the first trip sends rho back to sam_rho, and the run ends as well trained as it ever was.
    first = next(i for i, h in enumerate(history) if h["guard_tripped"])
    assert history[first - 1]["rho"] > 1.0 and history[first]["rho"] <= 0.01 * 1.0001
    assert guarded.guard.trips >= 1 and history[first]["train_loss"] > 0.1
    assert statistics.fmean(h["train_loss"] for h in history[-10:]) < 0.05
