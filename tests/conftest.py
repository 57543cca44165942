"""Shared fixtures: tiny models and the optional real data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pcnn.config import ModelConfig
from pcnn.core.model import build_model

# The tests exercise the hand-written CPU kernel wherever it can run, also on AVX-512 CPUs, where it is
# off by default (`pcnn.fast.native.wanted`); its default policy is tested with the capability mocked.
os.environ.setdefault("PCNN_NATIVE", "1")

# One intra-op thread per test process: `make test` runs pytest with two workers (pytest-xdist), and
# oversubscribed OpenMP threads on a 2-core machine slow tiny-model tests by 50x or more.
torch.set_num_threads(1)


def randomize_(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised paths (biases, label terms, FiLM) are exercised too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


def tiny_model(conditioning: str = "gated-bias", image_size: int = 8, **overrides) -> torch.nn.Module:
    config = ModelConfig(
        nr_resnet=overrides.pop("nr_resnet", 1),
        nr_filters=overrides.pop("nr_filters", 8),
        nr_logistic_mix=overrides.pop("nr_logistic_mix", 3),
        conditioning=conditioning,
        dropout=overrides.pop("dropout", 0.0),
        image_size=image_size,
        **overrides,
    )
    torch.manual_seed(0)
    return randomize_(build_model(config)).eval()


def grid_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random images on the 256-level grid of [-1, 1], including the extreme values."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 256, (batch, 3, size, size), generator=gen)
    k[0, :, 0, 0] = 0
    k[-1, :, -1, -1] = 255
    return k.float() / 127.5 - 1


@pytest.fixture
def real_data_dir() -> Path:
    root = os.environ.get("PCNN_DATA_DIR")
    if not root or not (Path(root) / "train.csv").is_file():
        pytest.skip("real CPEN455 data not available: set PCNN_DATA_DIR to a course-layout data root")
    return Path(root)
