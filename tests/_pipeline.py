"""The notebook pipeline on a smoke profile shrunk further, run once per test session.

Both tests/test_notebooks.py and tests/test_report.py use the same build; the result is memoised here
(one module, imported once) so the notebooks execute only once however many tests need them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pcnn.datasets import make_synthetic
from pcnn.workflow.pipeline import run_pipeline

# Every stage at its smallest: a few optimiser steps, a handful of images, two samples per class.
TINY_SIZES: dict[str, Any] = {
    "train_overrides": [
        "train.max_steps=4",
        "train.epochs=1",
        "train.max_train_images=64",
        "train.eval_subset=8",
    ],
    "eval_subset": 8,
    "prefix_images": 8,
    "prefix_points": 9,
    "data_examples_per_class": 2,
    "stats_images": 40,
    "grid_per_class": 2,
    "course_per_class": 2,
    "fid_seeds": [0],
    "course_floor_seeds": 1,
    "matched_per_class": 2,
    "speed_batches": [1],
    "naive_speed": "estimate",
    "finetune_budget": {"max_steps": 2},
    "ablation_budget": {"max_steps": 2},
    "ablation_eval_subset": 8,
    "ablation_fid_per_class": 0,  # the same FID code runs in 04_sampling_and_fid
    "ablation_fid_seeds": [],
    "reference_per_class": 2,
    "baseline_epochs": 1,
    "baseline_train_images": 20,
    "nn_per_class": 1,
}
TINY_COUNTS = {"train": 20, "validation": 6, "test": 6}

_BUILD: dict[str, Any] = {}


def tiny_pipeline(tmp_root: Path) -> dict[str, Any]:
    """Run all six notebooks (no report) into `tmp_root` once per session; returns the pipeline summary."""
    if not _BUILD:
        data = make_synthetic(tmp_root / "data", counts=TINY_COUNTS)
        started = time.time()
        summary = run_pipeline(
            "smoke",
            data_dir=str(data),
            build_dir=tmp_root / "build",
            sizes=TINY_SIZES,
            device="cpu",
            report=False,
        )
        _BUILD.update(summary, started_at=started, data=str(data))
    return _BUILD
