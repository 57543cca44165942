"""The training data order: deterministic, resumable, shardable and optionally class-focused.

Everything random about the data is a pure function of (seed, epoch, position in the epoch), never of the
global random state, of the number of loader workers or of the number of processes:

- `epoch_order` gives the epoch's image indices: a permutation, or, with class focus, draws with
  replacement in which the chosen classes have a fixed share.
- `AugmentedView` seeds each sample's augmentation from its position, so resuming mid-epoch, changing
  `num_workers` or training on several processes replays exactly the same augmented images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1
_SUBSET_STREAM = 2
_HOLDOUT_STREAM = 3


def parse_classes(text: str, num_classes: int) -> list[int]:
    """Parse `"0,3"` into sorted unique class indices, checking the range; `""` gives `[]`."""
    classes = sorted({int(part) for part in text.replace(" ", "").split(",") if part})
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"focus classes {bad} are outside 0..{num_classes - 1}")
    return classes


def focus_weights(labels: Sequence[int], classes: Sequence[int], share: float) -> np.ndarray:
    """Per-image draw probabilities: images of `classes` together get `share`, the others `1 - share`.

    Within each group every image is equally likely. If one group is empty the other gets everything.
    """
    labels = np.asarray(labels)
    chosen = np.isin(labels, np.asarray(classes, dtype=labels.dtype))
    if not 0.0 < share <= 1.0:
        raise ValueError(f"focus share must lie in (0, 1], got {share}")
    n_in, n_out = int(chosen.sum()), int((~chosen).sum())
    if n_in == 0:
        raise ValueError(f"no training image belongs to the focus classes {list(classes)}")
    share_in = share if n_out else 1.0
    weights = np.where(chosen, share_in / n_in, (1.0 - share_in) / max(n_out, 1))
    return weights / weights.sum()


def epoch_order(n: int, epoch: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The positions 0..n-1 of one epoch's images: a permutation, or weighted draws with replacement."""
    rng = np.random.default_rng([seed, _ORDER_STREAM, epoch])
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights)


def rank_batches(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Split positions 0..n-1 of an epoch into full global batches; keep this process's equal share of each.

    Global batch k is positions `k*B .. (k+1)*B - 1` whatever the number of processes, so a run on W
    processes averages the same gradient as one process. The incomplete last batch is dropped.
    """
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
    per_rank = batch_size // world_size
    return [
        list(range(start + rank * per_rank, start + (rank + 1) * per_rank))
        for start in range(0, n - batch_size + 1, batch_size)
    ]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the image at `position` of `epoch` (a 63-bit integer)."""
    state = np.random.SeedSequence([seed, _AUGMENT_STREAM, epoch, position])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class BatchKeys:
    """The batch sampler of one training session: the keys `(image index, augmentation seed)` of every
    remaining batch of every remaining epoch, for one process of `world_size`.

    One DataLoader iterates it for the whole session, so loader workers start once and keep prefetching
    across epoch boundaries; `start_epoch` and `start_batch` resume in the middle of an epoch.
    """

    def __init__(
        self,
        indices: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        epochs: int,
        start_epoch: int = 0,
        start_batch: int = 0,
        weights: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.indices = np.asarray(indices)
        self.batch_size, self.seed, self.epochs = batch_size, seed, epochs
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.weights, self.rank, self.world_size = weights, rank, world_size
        self.batches_per_epoch = len(rank_batches(len(self.indices), batch_size, rank, world_size))

    def epoch_keys(self, epoch: int) -> list[list[tuple[int, int]]]:
        order = epoch_order(len(self.indices), epoch, self.seed, self.weights)
        return [
            [(int(self.indices[order[p]]), sample_seed(self.seed, epoch, p)) for p in batch]
            for batch in rank_batches(len(order), self.batch_size, self.rank, self.world_size)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.start_epoch, self.epochs):
            first = self.start_batch if epoch == self.start_epoch else 0
            yield from self.epoch_keys(epoch)[first:]


def passthrough(image: torch.Tensor) -> torch.Tensor:
    """The identity transform: a dataset built with it yields cached uint8 images for a view to transform."""
    return image


class AugmentedView(Dataset):
    """Items `(index, seed)` of a uint8 dataset, transformed under their own seeded torch random state.

    The transforms draw from torch's global CPU generator; this forks that generator around each item, so
    the caller's random state (which drives dropout) is left untouched.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.transform(image), label


class IndexedSplit(Dataset):
    """Some images of a uint8 dataset under a fixed transform, with the attributes `score_split` reads."""

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        transform: Callable[[torch.Tensor], torch.Tensor],
        split: str,
    ) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.split = split
        self.labels = [dataset.labels[i] for i in self.indices]
        self.ids = [dataset.ids[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[self.indices[position]]
        return self.transform(image), label


def subset_indices(labels: Sequence[int], limit: int, seed: int) -> np.ndarray:
    """A fixed random subset of at most `limit` images (all when `limit` is 0), in ascending order."""
    n = len(labels)
    if not limit or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, _SUBSET_STREAM])
    return np.sort(rng.choice(n, size=limit, replace=False))


def holdout_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of positions 0..n-1 into (train, holdout), `fraction` of each class held out.

    Each class keeps at least one training image, and holds out at least one image when `fraction` > 0.
    """
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1), got {fraction}")
    if fraction == 0.0:
        return np.arange(len(labels)), np.arange(0)
    rng = np.random.default_rng([seed, _HOLDOUT_STREAM])
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            continue
        count = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(rng.choice(members, size=count, replace=False))
    holdout = np.sort(np.concatenate(held)) if held else np.arange(0)
    return np.setdiff1d(np.arange(len(labels)), holdout), holdout
