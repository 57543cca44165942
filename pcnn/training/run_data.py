"""A run's data: the augmented training images (optionally class-focused), the holdout and validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcnn.config import RunConfig, TrainConfig
from pcnn.datasets import CPEN455Dataset, eval_transform, resolve_data_dir, train_transform
from pcnn.datasets.train_data import (
    AugmentedView,
    BatchKeys,
    IndexedSplit,
    focus_weights,
    holdout_split,
    parse_classes,
    passthrough,
    subset_indices,
)
from pcnn.training.distributed import DistInfo
from pcnn.training.policy import resolve_workers
from pcnn.training.state import Progress


@dataclass
class RunData:
    """The splits a run reads; `holdout` and `validation` exist on the main process only (it evaluates)."""

    root: Path
    train_view: AugmentedView
    train_indices: np.ndarray
    weights: np.ndarray | None  # focus weights of the training images (None: uniform)
    holdout: IndexedSplit | None
    validation: CPEN455Dataset | None

    def loader(
        self, train_config: TrainConfig, state: Progress, info: DistInfo, device: torch.device
    ) -> tuple[DataLoader, int]:
        """One loader for the whole session, starting at the resumed position, and the batches per epoch."""
        tc = train_config
        keys = BatchKeys(
            self.train_indices,
            batch_size=tc.batch_size,
            seed=tc.seed,
            epochs=tc.epochs,
            start_epoch=state.epoch,
            start_batch=state.batch,
            weights=self.weights,
            rank=info.rank,
            world_size=info.world_size,
        )
        workers = resolve_workers(tc, device)
        loader = DataLoader(
            self.train_view,
            batch_sampler=keys,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(tc.seed),
        )
        return loader, keys.batches_per_epoch


def load_run_data(config: RunConfig, data_dir: str | Path | None, *, main: bool) -> RunData:
    """The training subset (`max_train_images`) less its holdout (`holdout_fraction`), both chosen by
    `seed`; the evaluation splits are loaded only where `main` is true."""
    tc, size = config.train, config.model.image_size
    root = resolve_data_dir(data_dir)
    base = CPEN455Dataset(root, "train", transform=passthrough, image_size=size, cache=True)
    chosen = subset_indices(base.labels, tc.max_train_images, tc.seed)
    keep, held = holdout_split([base.labels[i] for i in chosen], tc.holdout_fraction, tc.seed)
    train_indices = chosen[keep]
    if len(train_indices) < tc.batch_size:
        raise ValueError(f"{len(train_indices)} training images cannot fill a batch of {tc.batch_size}")
    train_view = AugmentedView(base, train_transform(size, augment=tc.augment, finetune=tc.finetune_augment))
    labels = [base.labels[i] for i in train_indices]
    classes = parse_classes(tc.focus_classes, config.model.num_classes)
    weights = focus_weights(labels, classes, tc.focus_share) if classes else None
    holdout = validation = None
    if main:
        holdout = IndexedSplit(base, chosen[held], eval_transform(size), "holdout") if len(held) else None
        validation = CPEN455Dataset(root, "validation", image_size=size, cache=True)
    return RunData(root, train_view, train_indices, weights, holdout, validation)
