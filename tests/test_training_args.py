"""LETSTrainingArguments: validation messages name the field and the fix; every field is a documented CLI flag."""

import argparse
import dataclasses

import pytest
from transformers import HfArgumentParser, TrainingArguments

from lets_hf import LETSTrainingArguments


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(sam_rho=-0.1), r"sam_rho=-0.1 must be >= 0"),
        (dict(sam_variant="adasam"), r"sam_variant='adasam' is unknown.*register_perturbation"),
        (dict(lets_rho_min=0.2, lets_rho_max=0.1), r"lets_rho_min=0.2 > lets_rho_max=0.1"),
        (dict(lets_rho_min=0.0), r"lets_rho_min=0.0 must be > 0"),
        (dict(sam_rho=1.0), r"sam_rho=1.0 lies outside"),
        (dict(lets_heldout_fraction=1.0), r"lets_heldout_fraction=1.0 must lie in \(0, 1\)"),
        (dict(lets_heldout_fraction=0.0), r"lets_heldout_fraction=0.0 must lie in \(0, 1\)"),
        (dict(lets_interval=0), r"lets_interval=0 must be >= 1"),
        (dict(lets_lr=0.0), r"lets_lr=0.0 must be > 0"),
        (dict(lets_hvp="newton"), r"lets_hvp='newton' must be one of"),
        (dict(lets_optimizer="lion"), r"lets_optimizer='lion' must be one of"),
        (dict(sam_rho=0.0), r"lets=True learns log\(rho\), so it needs sam_rho > 0"),
        (dict(lets_guard_tolerance=-1.0), r"lets_guard_tolerance=-1.0 must be > 0"),
        (dict(lets_guard_patience=0), r"lets_guard_patience=0 must be >= 1"),
        (dict(lets_guard_threshold=1.0), r"lets_guard_threshold=1.0 must lie in \[0, 1\)"),
        (dict(lets_objective="metric"), r"lets_objective='metric' must be one of \('gap', 'heldout'\)"),
        (dict(lets_travel=1.0), r"lets_travel=1.0 must be > 1"),
        (dict(lets_clip=-1.0), r"lets_clip=-1.0 must be >= 0"),
        (dict(sam_every=0), r"sam_every=0 must be >= 1"),
        (dict(lets_lr_schedule="cosine"), r"lets_lr_schedule='cosine' must be one of \('constant', 'linear'\)"),
        (dict(sam_reuse="gsam"), r"sam_reuse='gsam' must be one of \('none', 'looksam'\)"),
        (dict(looksam_alpha=-0.1), r"looksam_alpha=-0.1 must be >= 0"),
        (dict(sam_every=3), r"lets_interval=10 must be a multiple of sam_every=3.*lets_interval=9"),
        (dict(sam_every=2, lets_horizon="trace"), r"lets_horizon='trace' with sam_every > 1 is not supported"),
    ],
)
def test_invalid_settings_are_refused_with_the_fix(tmp_path, kw, match):
    kw = {"lets_rho_min": 0.01, "lets_rho_max": 0.2, **kw} if "sam_rho" in kw and kw["sam_rho"] == 1.0 else kw
    with pytest.raises(ValueError, match=match):
        LETSTrainingArguments(output_dir=str(tmp_path), **kw)


def test_defaults_let_the_radius_travel(tmp_path):
    args = LETSTrainingArguments(output_dir=str(tmp_path), sam_rho=0.1, per_device_train_batch_size=16)
    assert args.rho_bounds == pytest.approx((0.001, 1.0))  # two decades down, one up
    # from a small start the radius can still climb to SAM's usual range (0.05-0.5): the reach is at least 0.5
    small = LETSTrainingArguments(output_dir=str(tmp_path), sam_rho=0.002)
    assert small.rho_bounds == pytest.approx((2e-5, 0.5))
    assert LETSTrainingArguments(output_dir=str(tmp_path)).rho_bounds == pytest.approx((1e-4, 0.5))
    assert args.lets_same_dropout and not args.sam_same_dropout  # a clean curvature; SAM alone keeps fresh masks
    assert args.heldout_batch_size == 16 and args.lets and args.lets_interval == 10
    assert args.lets_lr is None and args.lets_travel == 1e4  # lets_lr follows the run's length (radius_lr)
    # the estimator results-log.md section 7 chose: the interval look-ahead, a sign step, the tail clipped
    assert (args.lets_horizon, args.lets_optimizer, args.lets_clip) == ("interval", "signum", 3.0)
    assert args.lets_objective == "heldout" and args.lets_guard_patience == 10
    assert not LETSTrainingArguments(output_dir=str(tmp_path), sam_variant="none").lets
    assert LETSTrainingArguments(output_dir=str(tmp_path), sam_rho=0.0, lets=False).sam_rho == 0.0


def test_every_field_is_a_cli_flag_with_help(tmp_path):
    ours = [
        f
        for f in dataclasses.fields(LETSTrainingArguments)
        if f.name not in {g.name for g in dataclasses.fields(TrainingArguments)}
    ]
    assert len(ours) == 28
    assert all(len(f.metadata.get("help", "")) > 20 for f in ours), [
        f.name for f in ours if not f.metadata.get("help")
    ]
    (args,) = HfArgumentParser(LETSTrainingArguments).parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--sam_variant",
            "asam",
            "--sam_rho",
            "0.5",
            "--lets_interval",
            "3",
            "--sam_sync_perturbation",
            "false",
            "--lets_hvp",
            "fisher",
            "--lets_rho_max",
            "1.0",
            "--lets_objective",
            "gap",
            "--lets_lr",
            "0.05",
        ]
    )
    assert (args.lets_objective, args.lets_lr) == ("gap", 0.05)
    assert (args.sam_variant, args.sam_rho, args.lets_interval, args.sam_sync_perturbation, args.lets_hvp) == (
        "asam",
        0.5,
        3,
        False,
        "fisher",
    )
    assert args.rho_bounds == (0.005, 1.0)


def _argument_dataclasses():
    from glue_runs.run_glue import DataArguments, ModelArguments

    return [LETSTrainingArguments, ModelArguments, DataArguments]


@pytest.mark.parametrize("cls", _argument_dataclasses(), ids=lambda c: c.__name__)
def test_every_help_string_survives_argparse_formatting(cls):
    """argparse %-formats each help string (``help % vars(action)``, argparse's ``_expand_help``); a bare ``%`` in
    a help text makes ``--help`` crash for every script that parses these dataclasses."""
    parser = HfArgumentParser(cls)
    broken = []
    for action in parser._actions:
        if not action.help:
            continue
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        try:
            action.help % dict(params, prog=parser.prog)
        except (ValueError, TypeError, KeyError) as e:
            broken.append(f"{action.dest}: {e}")
    assert not broken, broken
    assert "--" in parser.format_help()
