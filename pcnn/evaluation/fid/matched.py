"""The matched protocol: 1000 samples against 1000 resized real training images, with its real-data floor."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcnn.evaluation.fid.distances import feature_metrics, per_class_fid
from pcnn.evaluation.fid.features import image_features, standard_model
from pcnn.evaluation.fid.reference import load_resized, select_real_reference
from pcnn.evaluation.fid.samples import to_uint8


def matched_real_reference(
    data_root: str | Path,
    n_per_class: int = 250,
    seed: int = 0,
    exclude: Iterable[str] | None = None,
) -> torch.Tensor:
    """`n_per_class` real training images per class, resized to 32x32 by the training resize (uint8).

    The selection is :func:`select_real_reference` (deterministic in `seed`; `exclude` holds relative
    paths to leave out, so that the floor can pick a disjoint second set).
    """
    rows = select_real_reference(data_root, n_per_class, seed, exclude)
    return load_resized(data_root, rows)


def _kid_subset(n: int) -> int:
    """Default KID subset size: half the set (at most 1000), so that subsets differ from the whole set."""
    return max(2, min(1000, n // 2))


def _floor_rows(
    data_root: str | Path, n_per_class: int, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Real sets A (`select_real_reference(seed)`) and B (`seed + 1`, disjoint from A) of the floor."""
    rows_a = select_real_reference(data_root, n_per_class, seed)
    rows_b = select_real_reference(data_root, n_per_class, seed + 1, exclude=[r for r, _ in rows_a])
    return rows_a, rows_b


def matched_fid(
    samples_uint8: torch.Tensor,
    reference_uint8: torch.Tensor,
    dims: int = 2048,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The matched protocol: FID and KID of samples against an equally large set of real images.

    Both sets are uint8 tensors (N, 3, 32, 32), given to the network identically. KID subsets default
    to half the set size (at most 1000): subsets as large as the whole set would all be the same set
    and make the KID std meaningless. Returns ``dict(fid, kid_mean, kid_std, ...)``.
    """
    samples_uint8 = to_uint8(samples_uint8)
    reference_uint8 = to_uint8(reference_uint8)
    if samples_uint8.shape[0] != reference_uint8.shape[0]:
        raise ValueError(
            f"the matched protocol needs equal counts, got {samples_uint8.shape[0]} samples and "
            f"{reference_uint8.shape[0]} reference images"
        )
    if model is None:
        model = standard_model(dims, device)
    n = samples_uint8.shape[0]
    subset = kid_subset_size if kid_subset_size is not None else _kid_subset(n)
    f_s = image_features(
        samples_uint8,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="Inception samples",
    )
    f_r = image_features(
        reference_uint8,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="Inception reference",
    )
    result = feature_metrics(f_s, f_r, kid_subset_size=subset, kid_subsets=kid_subsets, seed=seed)
    result["kid_subset_size"] = min(subset, n)
    return result


def matched_floor(
    data_root: str | Path,
    n_per_class: int = 250,
    dims: int = 2048,
    *,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Real-data floor of the matched protocol: two disjoint sets of real training images.

    Set A is ``select_real_reference(seed)``, set B ``select_real_reference(seed + 1, exclude=A)``; a
    perfect model would score about this FID (it is not 0: FID is biased upward at 1000 samples).
    """
    rows_a, rows_b = _floor_rows(data_root, n_per_class, seed)
    a = load_resized(data_root, rows_a, progress)
    b = load_resized(data_root, rows_b, progress)
    return matched_fid(
        a, b, dims, batch_size=batch_size, device=device, model=model, seed=seed, progress=progress
    )


def matched_protocol(
    samples: torch.Tensor,
    sample_labels: Sequence[int] | torch.Tensor,
    data_root: str | Path,
    n_per_class: int = 250,
    dims: int = 2048,
    *,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
    real_features: dict[tuple, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The matched protocol for a model, its real-data floor and both per class, from one feature pass.

    Real set A is `matched_real_reference(seed)` (what `matched_fid` compares samples with), set B the
    disjoint set of `matched_floor`. Returns `model` and `floor` (as `matched_fid` returns them) and
    `per_class`: {class index: {"model": FID of its samples vs its A images, "floor": B vs A}}.
    `real_features`, a dict the caller keeps across calls, holds the real sets' features: a sweep of
    several settings then runs Inception on its 2000 real images once instead of once per setting.
    """
    samples = to_uint8(samples)
    sample_labels = np.asarray(torch.as_tensor(sample_labels).cpu())
    rows_a, rows_b = _floor_rows(data_root, n_per_class, seed)
    if samples.shape[0] != len(rows_a):
        raise ValueError(
            f"the matched protocol needs equal counts, got {samples.shape[0]} samples and "
            f"{len(rows_a)} reference images"
        )
    if model is None:
        model = standard_model(dims, device)
    store = {} if real_features is None else real_features
    run = functools.partial(
        image_features, model=model, batch_size=batch_size, device=device, progress=progress
    )
    features = {"samples": run(samples, desc="Inception samples")}
    for name, rows in (("a", rows_a), ("b", rows_b)):
        key = (name, str(Path(data_root).resolve()), n_per_class, dims, seed)
        if key not in store:
            store[key] = run(load_resized(data_root, rows, progress), desc=f"Inception {name}")
        features[name] = store[key]
    n = samples.shape[0]
    subset = _kid_subset(n)
    labels_a = [label for _, label in rows_a]
    labels_b = [label for _, label in rows_b]
    result: dict[str, Any] = {
        "model": feature_metrics(features["samples"], features["a"], kid_subset_size=subset, seed=seed),
        "floor": feature_metrics(features["b"], features["a"], kid_subset_size=subset, seed=seed),
    }
    for key in ("model", "floor"):
        result[key]["kid_subset_size"] = min(subset, n)
    model_per_class = per_class_fid(features["samples"], sample_labels, features["a"], labels_a)
    floor_per_class = per_class_fid(features["b"], labels_b, features["a"], labels_a)
    result["per_class"] = {
        cls: {"model": model_per_class.get(cls), "floor": floor_per_class.get(cls)}
        for cls in sorted(set(model_per_class) | set(floor_per_class))
    }
    return result
