"""Dropout and the SAM passes (``sam_same_dropout``). The secant ``u = (G - g) / rho`` is the curvature ``H d`` only
when ``G`` and ``g`` are gradients of the same function; with dropout, two passes with independent masks are two
functions, and their difference, divided by rho, swamps ``H d`` at the radii fine-tuning uses."""

import pytest
import torch
from toy import rule_data, tiny_bert

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.hypergradient import hessian_vector_product, secant_curvature_


def dropout_masks(base_args, same: bool = False, steps: int = 3, **lets) -> list[torch.Tensor]:
    """The embedding dropout's keep-mask of every training forward pass of a SAM run (two per step); held-out
    passes (batches of 4, not 8) are left out."""
    model = tiny_bert(dropout=0.3)
    masks = []
    hook = model.bert.embeddings.dropout.register_forward_hook(
        lambda module, inputs, output: masks.append((output != 0).flatten().clone()) if len(output) == 8 else None
    )
    args = LETSTrainingArguments(
        **{"lets": False, **base_args, **lets},
        max_steps=steps,
        per_device_train_batch_size=8,
        lets_batch_size=4,
        sam_rho=0.05,
        sam_same_dropout=same,
    )
    LETSTrainer(model=model, args=args, train_dataset=rule_data(64)).train()
    hook.remove()
    assert len(masks) == 2 * steps  # ascent and descent of each step, nothing else
    return masks


def shared(masks: list[torch.Tensor]) -> list[bool]:
    """Per step: did the descent pass draw the ascent pass's masks?"""
    return [torch.equal(masks[i], masks[i + 1]) for i in range(0, len(masks), 2)]


def test_the_descent_pass_draws_the_ascent_passs_dropout_masks(base_args):
    same = dropout_masks(base_args, same=True)
    assert all(torch.equal(same[i], same[i + 1]) for i in range(0, 6, 2))  # each step: one mask, twice
    assert not torch.equal(same[0], same[2]) and not torch.equal(same[2], same[4])  # new masks every step
    other = dropout_masks(base_args, same=False)  # the default: each pass draws its own
    assert not any(torch.equal(other[i], other[i + 1]) for i in range(0, 6, 2))


def test_lets_same_dropout_shares_the_masks_on_the_steps_whose_curvature_lets_reads_only(base_args):
    """With the one-step look-ahead, one step in lets_interval feeds the curvature (steps 0, 2, 4 at interval 2):
    those share their masks, SAM's other steps draw afresh. With the interval look-ahead every step feeds; without
    LETS no step does."""
    lets = {"lets": True, "lets_same_dropout": True, "lets_interval": 2, "lets_heldout_fraction": 0.25}
    assert shared(dropout_masks(base_args, steps=5, lets_horizon="step", **lets)) == [True, False, True, False, True]
    assert shared(dropout_masks(base_args, steps=5, lets_horizon="interval", **lets)) == [True] * 5
    off = {**lets, "lets": False}
    assert shared(dropout_masks(base_args, steps=5, lets_horizon="step", **off)) == [False] * 5


def test_with_the_same_masks_the_secant_is_the_curvature_and_without_it_is_noise_over_rho():
    """On a tiny BERT with dropout 0.1, in training mode: ``(G - g) / rho`` against ``H(theta + rho d) d`` (double
    backward, the same masks). With the masks shared the secant is the curvature to O(rho); drawn afresh, its error
    is the difference of two dropout draws over rho: larger than the curvature itself and ten times larger at a
    radius ten times smaller."""
    model = tiny_bert(dropout=0.1, attn_implementation="eager").train()
    batch = {k: torch.stack([row[k] for row in rule_data(32)]) for k in ("input_ids", "attention_mask", "labels")}
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_at(state):
        torch.set_rng_state(state)
        return model(**batch).loss

    def grads(state):
        return torch.autograd.grad(loss_at(state), params)

    state = torch.get_rng_state()
    g = grads(state)
    norm = torch.sqrt(sum((x * x).sum() for x in g))
    d = [x / norm for x in g]
    theta = [p.detach().clone() for p in params]
    errors = {}
    for rho in (1e-2, 1e-3):
        with torch.no_grad():
            torch._foreach_add_(params, d, alpha=rho)
        hv = hessian_vector_product(loss_at(state), params, d)  # H(theta + rho d) d, with the masks of g
        same = grads(state)
        fresh = grads(torch.get_rng_state())  # the RNG state has moved on: new masks
        size = torch.sqrt(sum((x * x).sum() for x in hv))
        for name, G in (("same", same), ("fresh", fresh)):
            u = secant_curvature_([x.clone() for x in g], list(G), rho)
            errors[name, rho] = float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(u, hv))) / size)
        with torch.no_grad():
            torch._foreach_copy_(params, theta)
    assert errors["same", 1e-2] < 0.05 and errors["same", 1e-3] < 0.01
    assert errors["fresh", 1e-2] > 1.0 and errors["fresh", 1e-3] == pytest.approx(10 * errors["fresh", 1e-2], rel=0.2)
