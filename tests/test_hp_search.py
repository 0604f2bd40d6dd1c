"""`Trainer.hyperparameter_search` (optuna) over SAM and LETS fields: each trial trains with its own values.

The Trainer sets a trial's values on ``args`` inside ``train()``, after `LETSTrainer.train` has reset the radius:
before the fix every trial started from the previous trial's ``sam_rho``, and the bounds resolved at construction
ignored the trial."""

import optuna
import pytest
from toy import rule_data, tiny_bert
from transformers import TrainerCallback

from lets_hf import LETSTrainer, LETSTrainingArguments, get_perturbation

ASKED = [0.02, 0.08, 0.2]


class FirstStep(TrainerCallback):
    """Records the radius and bounds each trial's first optimizer step trains with."""

    def __init__(self):
        self.trainer, self.seen = None, []

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            trainer = self.trainer
            self.seen.append((trainer.rho, args.rho_bounds, args.sam_rho, args.sam_variant, trainer.direction))


def search(base_args, space, grid, **kw):
    """Run one optuna trial per grid point; returns what each trial's first step used."""
    args = LETSTrainingArguments(
        **base_args, sam_rho=0.01, max_steps=3, lets_interval=1, per_device_train_batch_size=8, **kw
    )
    first = FirstStep()
    trainer = LETSTrainer(
        model_init=lambda trial=None: tiny_bert(),
        args=args,
        train_dataset=rule_data(48),
        eval_dataset=rule_data(8, seed=1),
        callbacks=[first],
    )
    first.trainer = trainer
    trainer.hyperparameter_search(
        hp_space=space,
        compute_objective=lambda metrics: metrics["eval_loss"],
        backend="optuna",
        n_trials=len(next(iter(grid.values()))),
        sampler=optuna.samplers.GridSampler(grid, seed=0),
    )
    return first.seen


@pytest.mark.parametrize("lets", [True, False], ids=["lets", "fixed-radius"])
def test_each_trial_trains_with_the_radius_it_asked_for(base_args, lets):
    seen = search(
        base_args,
        lambda trial: {"sam_rho": trial.suggest_categorical("sam_rho", ASKED)},
        {"sam_rho": ASKED},
        lets=lets,
    )
    assert len(seen) == 3
    for rho, bounds, asked, _, _ in seen:
        assert rho == pytest.approx(asked)  # before: the previous trial's (0.01, then the first trial's, ...)
        if lets:  # the default bounds follow the trial's start: [rho/100, max(10 rho, 0.5)]
            assert bounds == pytest.approx((asked / 100, max(asked * 10, 0.5)))
    assert sorted(asked for _, _, asked, _, _ in seen) == ASKED


def test_a_trial_outside_explicit_bounds_is_refused_with_the_fix(base_args):
    space = lambda trial: {"sam_rho": trial.suggest_categorical("sam_rho", [0.475])}  # noqa: E731
    with pytest.raises(
        ValueError, match=r"sam_rho=0.475 lies outside \[lets_rho_min, lets_rho_max\] = \[0.001, 0.1\]"
    ):
        search(base_args, space, {"sam_rho": [0.475]}, lets_rho_min=0.001, lets_rho_max=0.1)


def test_a_trial_with_an_invalid_value_is_refused(base_args):
    space = lambda trial: {"lets_interval": trial.suggest_categorical("lets_interval", [0])}  # noqa: E731
    with pytest.raises(ValueError, match=r"lets_interval=0 must be >= 1"):
        search(base_args, space, {"lets_interval": [0]})


def test_a_trial_may_switch_the_variant(base_args):
    space = lambda trial: {"sam_variant": trial.suggest_categorical("sam_variant", ["asam", "none"])}  # noqa: E731
    seen = search(base_args, space, {"sam_variant": ["asam", "none"]})
    directions = {variant: direction for _, _, _, variant, direction in seen}
    assert directions == {"asam": get_perturbation("asam"), "none": None}  # 'none': plain training, lets off
