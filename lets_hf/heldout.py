"""Where the held-out batches for the radius come from: a stratified carve of the training set and an endless,
resumable loader over it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, Subset

from .radius import constant_predictor_loss

__all__ = [
    "EpochPermutationSampler",
    "HeldoutStream",
    "carve_heldout",
    "label_prior_loss",
    "label_values",
    "split_heldout",
]

logger = logging.getLogger(__name__)

_REGRESSION_BINS = 5  # strata for a float target (STS-B): quantile bins


def split_heldout(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Carve a stratified held-out split off ``dataset``, reproducibly from ``seed``.

    Strata are the label classes (a ``labels`` or ``label`` column, or that key in dict examples); a float
    target is cut into quantile bins; without one label value per example (no labels, or sequence labels: token
    classification, a causal LM's or a seq2seq model's token ids) the split is uniform. Each stratum gives
    ``round(fraction * size)`` examples; where those roundings together miss ``round(fraction * n)`` by more than
    one example (many small strata, which would otherwise round the split away), the strata share that total in
    proportion to their sizes instead (`_apportion`). At least one example goes each way.

    Args:
        dataset: a `datasets.Dataset` or any sized dataset of examples.
        fraction: the share of each stratum to hold out, in (0, 1).
        seed: makes the split reproducible.
    Returns:
        ``(train, heldout, train_indices, heldout_indices)``; a `datasets.Dataset` is split with ``select``, any
        other dataset with `torch.utils.data.Subset`.
    """
    if not hasattr(dataset, "__len__"):
        raise ValueError("Cannot carve a held-out split off an iterable (unsized) training set: pass lets_dataset.")
    n = len(dataset)
    if n < 2:
        raise ValueError(f"Cannot carve a held-out split off a training set of {n} example(s); pass lets_dataset.")
    rng = np.random.default_rng(seed)
    strata = _strata(dataset)
    sizes, total = [len(stratum) for stratum in strata], int(round(fraction * n))
    counts = [int(round(fraction * size)) for size in sizes]
    if abs(sum(counts) - total) > 1:
        counts = _apportion(total, sizes)
    heldout = []
    for stratum, count in zip(strata, counts):
        heldout.extend(rng.permutation(stratum)[:count].tolist())
    heldout = np.array(sorted(heldout), dtype=np.int64)
    if len(heldout) == 0:
        heldout = np.array([int(rng.integers(n))])
    if len(heldout) == n:
        heldout = heldout[1:]
    train = np.setdiff1d(np.arange(n), heldout)
    return _select(dataset, train), _select(dataset, heldout), train, heldout


def carve_heldout(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any, dict[str, list[int]]]:
    """`split_heldout`, said once at warning level (a user must not lose data to the carve unawares).

    Returns ``(train, heldout, split)`` with ``split = {"train_indices": [...], "heldout_indices": [...]}``, the
    trainer's ``lets_split``."""
    train, heldout, train_idx, heldout_idx = split_heldout(dataset, fraction, seed)
    logger.warning(
        "LETS carved %d of the %d training examples off train_dataset (lets_heldout_fraction=%g) as held-out data for "
        "the radius: training runs on the other %d, and len(trainer.train_dataset) is %d. The indices are in "
        "trainer.lets_split; pass lets_dataset=... to train on the whole set.",
        len(heldout_idx), len(dataset), fraction, len(train_idx), len(train_idx),
    )  # fmt: skip
    return train, heldout, {"train_indices": train_idx.tolist(), "heldout_indices": heldout_idx.tolist()}


def _apportion(total: int, sizes: list[int]) -> list[int]:
    """``total`` shared among strata of ``sizes`` in proportion (Hamilton's largest remainders; ties to the earlier
    stratum): each gets ``floor(total * size / n)``, and the strata with the largest remainders one more."""
    n = sum(sizes)
    quotas = [total * size / n for size in sizes]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(sizes)), key=lambda k: counts[k] - quotas[k])  # largest remainder first
    for k in by_remainder[: total - sum(counts)]:
        counts[k] += 1
    return counts


def label_values(dataset: Any) -> np.ndarray | None:
    """The ``labels`` (or ``label``) of every example as floats, from a `datasets.Dataset` column or that key of every
    dict example; None when the examples carry no labels there, or when a label is not one value (sequence labels,
    multi-label vectors): a class or target per example is what the carve stratifies on and the prior is made of."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None:  # datasets.Dataset: read the column, no decoding of the rest
        name = next((c for c in ("labels", "label") if c in columns), None)
        labels = dataset[name] if name else None
    else:
        first = dataset[0]
        name = next((c for c in ("labels", "label") if c in first), None) if isinstance(first, dict) else None
        labels = [dataset[i][name] for i in range(len(dataset))] if name else None
    if labels is None:
        return None
    values = [torch.as_tensor(v) for v in labels]
    if any(v.numel() != 1 for v in values):
        return None
    return np.asarray([float(v) for v in values])


def label_prior_loss(config: Any, dataset: Any) -> float | None:
    """The training loss of a model that predicts only the label prior (the loss guard's *not learning* level),
    from the training labels and the model's head (`constant_predictor_loss`); None where it is unknown: no config
    or labels, labels that are not one value per example (token classification, language modelling), a multi-label
    head, or an empty or unsized dataset. (A loss of the user's own or label smoothing
    also makes it unknown: the trainer checks those.)"""
    problem, num_labels = getattr(config, "problem_type", None), getattr(config, "num_labels", None)
    if num_labels is None or problem == "multi_label_classification" or not hasattr(dataset, "__len__"):
        return None
    labels = label_values(dataset) if len(dataset) else None
    if labels is None:
        return None
    return constant_predictor_loss(torch.from_numpy(labels), regression=problem == "regression" or num_labels == 1)


def _strata(dataset: Any) -> list[np.ndarray]:
    y = label_values(dataset)
    if y is None:
        return [np.arange(len(dataset))]
    if np.all(y == np.round(y)) and len(np.unique(y)) <= 100:
        keys = y
    else:  # regression target: quantile bins
        edges = np.quantile(y, np.linspace(0, 1, _REGRESSION_BINS + 1)[1:-1])
        keys = np.searchsorted(edges, y, side="right")
    return [np.flatnonzero(keys == k) for k in np.unique(keys)]


def _select(dataset: Any, indices: np.ndarray) -> Any:
    if hasattr(dataset, "select"):
        return dataset.select(indices.tolist())
    return Subset(dataset, indices.tolist())


class EpochPermutationSampler(Sampler[int]):
    """A fresh permutation every epoch, a pure function of ``(seed, epoch)``: identical on every rank, so that
    accelerate's batch sharding gives each rank its own disjoint held-out batches, and replayable on resume."""

    def __init__(self, data_source: Dataset, seed: int):
        self.size = len(data_source)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class HeldoutStream:
    """Cycles endlessly over a (prepared) held-out loader and knows where it stands: ``(epoch, position)``.

    ``position`` batches of epoch ``epoch`` have been drawn; :meth:`load_state_dict` replays to that point, so a
    resumed run draws the same held-out batches as an uninterrupted one.
    """

    def __init__(self, dataloader: Any, sampler: EpochPermutationSampler):
        self.dataloader = dataloader
        self.sampler = sampler
        self.epoch = 0
        self.position = 0
        self._iterator: Iterator | None = None

    def next(self) -> Any:
        if self._iterator is None:
            self._start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start()
            batch = next(self._iterator)
        self.position += 1
        return batch

    def _start(self) -> None:
        # Starting a DataLoader iterator draws a seed from the global torch RNG, and a resumed run starts this one at
        # another point than an uninterrupted run does: fork the RNG so the draw leaves no trace on dropout masks.
        with torch.random.fork_rng(devices=[]):
            # accelerate's prepared loaders set their sampler's epoch from a counter of their own at every iter(),
            # which restarts at 0 in a resumed process: set it too, or the replay follows epoch 0's permutation.
            set_epoch = getattr(self.dataloader, "set_epoch", self.sampler.set_epoch)
            set_epoch(self.epoch)
            self._iterator = iter(self.dataloader)
            for _ in range(self.position):  # replay after a resume; costs only data loading
                next(self._iterator)

    @classmethod
    def from_dataset(cls, make_loader: Callable[..., Any], dataset: Any, seed: int, resume: dict | None = None):
        """A stream over ``dataset`` in seeded per-epoch permutations, at ``resume``'s point when given.

        ``make_loader(dataset, sampler_fn=...)`` builds the prepared loader (the Trainer's ``_get_dataloader``, so
        collation, workers and device placement are the training loader's); the sampler is built here.
        """
        if dataset is None:
            raise ValueError(
                "lets=True needs held-out data: pass lets_dataset=... or a train_dataset to carve "
                "lets_heldout_fraction off."
            )
        samplers: list[EpochPermutationSampler] = []

        def sampler_fn(data: Any) -> EpochPermutationSampler:
            samplers.append(EpochPermutationSampler(data, seed=seed))
            return samplers[0]

        stream = cls(make_loader(dataset, sampler_fn=sampler_fn), samplers[0])
        if resume is not None:
            stream.load_state_dict(resume)
        return stream

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._iterator = None
