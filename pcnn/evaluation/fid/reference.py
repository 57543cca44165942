"""Real images for the protocols: a deterministic choice per class, resized as the training data is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

TRAIN_RESIZE = 32  # the training transform's image size (docs/design.md#data)


def _train_resize(img: torch.Tensor) -> torch.Tensor:
    """The training transform's resize: antialiased, on the uint8 image (docs/design.md#data)."""
    from torchvision.transforms.v2 import functional as TF

    if img.shape[-2:] == (TRAIN_RESIZE, TRAIN_RESIZE):
        return img
    return TF.resize(img, [TRAIN_RESIZE, TRAIN_RESIZE], antialias=True)


def select_real_reference(
    data_root: str | Path,
    n_per_class: int = 250,
    seed: int = 0,
    exclude: Iterable[str] | None = None,
    split: str = "train",
) -> list[tuple[str, int]]:
    """Choose `n_per_class` labelled images per class from `split`, deterministically by `seed`.

    Per class, the relative paths (minus `exclude`) are sorted and permuted by
    ``numpy.random.default_rng(seed)``; the first `n_per_class` are taken. Returned class by class.
    """
    from pcnn.datasets import read_split_csv

    excluded = {str(p) for p in exclude} if exclude is not None else set()
    rows = [(str(rel), int(label)) for rel, label in read_split_csv(data_root, split)]
    by_class: dict[int, list[str]] = {}
    for rel, label in rows:
        if label < 0:
            raise ValueError(f"{split} split of {data_root} has unlabelled rows")
        if rel not in excluded:
            by_class.setdefault(label, []).append(rel)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, int]] = []
    for label in sorted(by_class):
        pool = sorted(by_class[label])
        if len(pool) < n_per_class:
            raise ValueError(
                f"class {label} of the {split} split of {data_root} has only {len(pool)} images left,"
                f" need {n_per_class} (fewer per class, or the real data: --data-dir or $PCNN_DATA_DIR)"
            )
        order = rng.permutation(len(pool))[:n_per_class]
        chosen.extend((pool[i], label) for i in order)
    return chosen


def load_resized(
    data_root: str | Path, rows: Sequence[tuple[str, int]], progress: bool = False
) -> torch.Tensor:
    """Decode, replicate grey to RGB (pcnn.datasets) and apply the training resize: uint8 (N, 3, 32, 32)."""
    from pcnn.datasets import load_image_uint8

    root = Path(data_root)
    images = [
        _train_resize(load_image_uint8(root / rel))
        for rel, _ in tqdm(rows, desc="loading real images", unit="img", disable=not progress, leave=False)
    ]
    return torch.stack(images).to(torch.uint8)
