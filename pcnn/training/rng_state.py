"""The global random states a checkpoint holds, so that a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python, in checkpoint-safe types."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(words), gauss_next],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global random states to what `capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, words, gauss_next = state["python"]
    random.setstate((version, tuple(words), gauss_next))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch: a run's initialisation and dropout start from `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
