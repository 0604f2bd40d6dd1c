"""Dropout and the SAM passes (``sam_same_dropout``). The secant ``u = (G - g) / rho`` is the curvature ``H d`` only
when ``G`` and ``g`` are gradients of the same function; with dropout, two passes with independent masks are two
functions, and their difference, divided by rho, swamps ``H d`` at the radii fine-tuning uses."""

import pytest
import torch
from toy import rule_data, tiny_bert

from lets_hf import LETSTrainer, LETSTrainingArguments
from lets_hf.hypergradient import hessian_vector_product, secant_curvature_


def dropout_masks(base_args, same: bool) -> list[torch.Tensor]:
    """The embedding dropout's keep-mask of every forward pass of a 3-step SAM run (two passes per step)."""
    model = tiny_bert(dropout=0.3)
    masks = []
    hook = model.bert.embeddings.dropout.register_forward_hook(
        lambda module, inputs, output: masks.append((output != 0).flatten().clone())
    )
    args = LETSTrainingArguments(
        **base_args, max_steps=3, per_device_train_batch_size=8, sam_rho=0.05, lets=False, sam_same_dropout=same
    )
    LETSTrainer(model=model, args=args, train_dataset=rule_data(64)).train()
    hook.remove()
    assert len(masks) == 6  # ascent and descent of each step, nothing else
    return masks


def test_the_descent_pass_draws_the_ascent_passs_dropout_masks(base_args):
    same = dropout_masks(base_args, same=True)
    assert all(torch.equal(same[i], same[i + 1]) for i in range(0, 6, 2))  # each step: one mask, twice
    assert not torch.equal(same[0], same[2]) and not torch.equal(same[2], same[4])  # new masks every step
    other = dropout_masks(base_args, same=False)  # the default: each pass draws its own
    assert not any(torch.equal(other[i], other[i + 1]) for i in range(0, 6, 2))


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
