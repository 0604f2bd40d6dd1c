"""Tiny models and data shared by the tests (and the torchrun worker): everything builds offline in milliseconds."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification


class LinearRegressor(nn.Module):
    """Least squares ``1/2 mean((x^T w + b - y)^2)`` in float64: a quadratic loss, where LETS.md's estimators are
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


def tiny_bert(seed: int = 0, num_labels: int = 2, dtype=torch.float32) -> BertForSequenceClassification:
    """A 1-layer BERT with dropout off, so that runs are deterministic and comparable."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).to(dtype)


def token_data(n: int, seq_len: int = 8, num_labels: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (n, seq_len), generator=g)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": labels[i]}
            for i in range(n)]


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}
