"""The course protocol: a folder of sample files against the course's test images, and its real-data floor."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcnn.evaluation.fid.distances import feature_metrics, frechet_distance, statistics, summarize_over_seeds
from pcnn.evaluation.fid.features import folder_features, image_features, standard_model
from pcnn.evaluation.fid.reference import load_resized
from pcnn.evaluation.fid.samples import save_course_samples


def course_metrics(
    sample_dir: str | Path,
    reference_dir: str | Path,
    dims: int = 192,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Course protocol FID and KID between the image files of two folders (see :func:`course_fid`)."""
    f_samples = folder_features(sample_dir, dims, model, batch_size, device, progress)
    f_ref = folder_features(reference_dir, dims, model, batch_size, device, progress)
    return feature_metrics(f_samples, f_ref)


def course_fid(
    sample_dir: str | Path,
    reference_dir: str | Path,
    dims: int = 192,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> float:
    """The course's FID: every image file of `sample_dir` against every image file of `reference_dir`.

    Reads exactly the files pytorch-fid's ``calculate_fid_given_paths`` reads (every image file at the
    top level, no recursion) with the same loading and features, but scores them with
    :func:`frechet_distance`.
    """
    f_samples = folder_features(sample_dir, dims, model, batch_size, device, progress)
    f_ref = folder_features(reference_dir, dims, model, batch_size, device, progress)
    mu1, s1 = statistics(f_samples)
    mu2, s2 = statistics(f_ref)
    return frechet_distance(mu1, s1, mu2, s2)


def course_floor(
    data_root: str | Path,
    dims: int = 192,
    *,
    n_per_class: int | None = 25,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    reference_dir: str | Path | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Real-data floor of the course protocol: validation images treated exactly like samples.

    Every validation image is resized to 32x32 by the training resize and written as a JPEG by
    :func:`save_course_samples` (PIL's default quality 75, what ``torchvision.utils.save_image`` and
    so the course's sample saving produce); the files are then read back like sample files and scored
    against the test folder (`reference_dir`, default ``<data_root>/test``). Because FID depends on the
    sample count, the floor uses `n_per_class` images per class (25: the course's 100 samples) per
    seed and reports mean and std over `seeds`; ``fid_all_validation`` uses all validation images.
    """
    from pcnn.datasets import read_split_csv

    rows = [(str(rel), int(label)) for rel, label in read_split_csv(data_root, "validation")]
    reference = Path(reference_dir) if reference_dir is not None else Path(data_root) / "test"
    images = load_resized(data_root, rows, progress)
    labels = [label for _, label in rows]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcnn_floor_")))
        else:
            out_dir = Path(workdir)
        written = save_course_samples(images, labels, out_dir)
        net = model if model is not None else standard_model(dims, device)
        f_val = image_features(
            written,
            net,
            batch_size=batch_size,
            device=device,
            progress=progress,
            desc="Inception validation JPEGs",
        )
    f_ref = folder_features(reference, dims, model, batch_size, device, progress)
    result: dict[str, Any] = {
        "fid_all_validation": feature_metrics(f_val, f_ref)["fid"],
        "n_reference": len(f_ref),
        "dims": dims,
        "jpeg_quality": 75,
    }
    if n_per_class is None:
        result.update(feature_metrics(f_val, f_ref))
        result.update(fid_std=0.0, fid_values=[result["fid"]], seeds=[])
        return result
    result.update(_floor_over_seeds(f_val, f_ref, labels, n_per_class, seeds))
    return result


def _floor_over_seeds(
    f_val: np.ndarray, f_ref: np.ndarray, labels: Sequence[int], n_per_class: int, seeds: Sequence[int]
) -> dict[str, Any]:
    """FID and KID of `n_per_class` validation images per class (drawn by each seed) against the
    reference: their mean and std over `seeds`, as the course's 100 samples would be scored."""
    label_arr = np.asarray(labels)
    fids, kids = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = []
        for label in sorted(set(labels)):
            members = np.flatnonzero(label_arr == label)
            if len(members) < n_per_class:
                raise ValueError(f"validation class {label} has {len(members)} images, need {n_per_class}")
            idx.extend(rng.permutation(members)[:n_per_class].tolist())
        m = feature_metrics(f_val[np.asarray(idx)], f_ref, seed=seed)
        fids.append(m["fid"])
        kids.append(m["kid_mean"])
    fid_summary = summarize_over_seeds(fids)
    kid_summary = summarize_over_seeds(kids)
    return {
        "fid": fid_summary["mean"],
        "fid_std": fid_summary["std"],
        "fid_values": fid_summary["values"],
        "kid_mean": kid_summary["mean"],
        "kid_std": kid_summary["std"],
        "n_samples": len(idx),
        "seeds": list(seeds),
    }
