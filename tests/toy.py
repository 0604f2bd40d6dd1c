"""Tiny models and data shared by the tests (and the torchrun worker): everything builds offline in milliseconds."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lets_hf import get_perturbation

LR = 0.1  # the plain-SGD learning rate of the hand references


class LinearRegressor(nn.Module):
    """Least squares ``1/2 mean((x^T w + b - y)^2)`` in float64: a quadratic loss, where the estimators are
    exact. Records the inputs of every forward pass, so tests can rebuild the batches the trainer used."""

    def __init__(self, dim: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(dim, 1).double()
        self.seen: list[torch.Tensor] = []

    def forward(self, x, labels=None):
        self.seen.append(x.detach().clone())
        pred = self.linear(x).squeeze(-1)
        return {"loss": 0.5 * ((pred - labels) ** 2).mean(), "logits": pred}


def regression_data(n: int, dim: int = 3, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    y = x @ w + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def tiny_bert(seed: int = 0, num_labels: int = 2, dtype=torch.float32, dropout: float = 0.0, **config_kw):
    """A 1-layer BERT, by default with dropout off, so that runs are deterministic and comparable."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        **config_kw,
    )
    return BertForSequenceClassification(config).to(dtype)


def token_data(n: int, seq_len: int = 8, num_labels: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, seq_len), generator=g)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": labels[i]}
        for i in range(n)
    ]


def rule_data(n: int, seq_len: int = 8, seed: int = 0) -> list[dict]:
    """Token data a tiny BERT learns in a few dozen steps: the label says whether the first token is above 32."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, seq_len), generator=g)
    labels = (ids[:, 0] > 32).long()
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": labels[i]}
        for i in range(n)
    ]


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def loss_fn(w, b, x, y):
    return 0.5 * ((x @ w.reshape(-1) + b - y) ** 2).mean()


def hand_direction(variant, w, b, gw, gb, eta=0.01):
    """The formulas, written out: SAM d = g/||g||; ASAM d = T^2 g/||T g||, T = |w| + eta on the matrix, 1 on b."""
    if variant == "sam":
        norm = torch.sqrt((gw**2).sum() + (gb**2).sum())
        return gw / norm, gb / norm
    if variant == "asam":
        tw = w.abs() + eta
        norm = torch.sqrt(((tw * gw) ** 2).sum() + (gb**2).sum())
        return tw * tw * gw / norm, gb / norm
    return tuple(get_perturbation(variant)([w, b], [gw, gb], eta=eta))  # a registered variant


def sam_sgd_step(w, b, micro_batches, rho, variant, eta=0.01, sigma=None):
    """theta' = theta - lr * mean_i grad l(theta + rho d_i; B_i): the per-micro-batch semantics by hand. With a loss
    budget ``sigma``, each micro-batch's radius is ``min(sigma / g_i^T d_i, rho)`` (``rho`` the ceiling)."""
    gw_acc, gb_acc = torch.zeros_like(w), torch.zeros_like(b)
    ceiling = rho
    for x, y in micro_batches:
        w0, b0 = w.clone().requires_grad_(), b.clone().requires_grad_()
        g = torch.autograd.grad(loss_fn(w0, b0, x, y), [w0, b0])
        dw, db = hand_direction(variant, w, b, *g, eta=eta)
        if sigma is not None:
            rho = min(sigma / ((g[0] * dw).sum() + (g[1] * db).sum()), ceiling)
        w1, b1 = (w + rho * dw).requires_grad_(), (b + rho * db).requires_grad_()
        gw, gb = torch.autograd.grad(loss_fn(w1, b1, x, y), [w1, b1])
        gw_acc += gw / len(micro_batches)
        gb_acc += gb / len(micro_batches)
    return w - LR * gw_acc, b - LR * gb_acc


def seen_batches(model, data):
    """The ``(x, y)`` batch of each forward pass ``model`` (a `LinearRegressor`) ran, labels looked up in ``data``."""
    label = {tuple(d["x"].tolist()): d["labels"] for d in data}
    return [(xs, torch.stack([label[tuple(r.tolist())] for r in xs])) for xs in model.seen]


def lookahead_finite_difference(model, data, n_accum, objective, step, at, h):
    """Central difference in ``x`` of F after a run's first step ``theta' = step(micro_batches, x)``: ``gap``
    1/2 (l(theta'; V) - l(theta'; B'))^2, ``heldout`` l(theta'; V), on the batches the run used (step 1: an (ascent,
    descent) pair per micro-batch; step 2: the held-out pass, then the pairs)."""
    seen = seen_batches(model, data)
    step1 = [seen[2 * i] for i in range(n_accum)]
    xv, yv = seen[2 * n_accum]
    step2 = [seen[2 * n_accum + 1 + 2 * i] for i in range(n_accum)]

    def F(x):
        w1, b1 = step(step1, x)
        train = sum(loss_fn(w1, b1, xb, yb) for xb, yb in step2) / n_accum
        heldout = loss_fn(w1, b1, xv, yv)
        return 0.5 * (heldout - train) ** 2 if objective == "gap" else heldout

    return ((F(at + h) - F(at - h)) / (2 * h)).item()
