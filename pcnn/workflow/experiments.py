"""Experiment steps that several notebooks (and the ablation runner) share.

Each function does one measurement end to end and returns JSON-ready numbers, so that the notebooks
stay thin and the report's numbers are computed in exactly one place.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcnn.core.model import PixelCNNPP
from pcnn.datasets import SYNTHETIC_MARKER

# The evaluation entry point and its summary, where the notebooks have imported them from
from pcnn.evaluation.evaluate import evaluate_model as evaluate_model
from pcnn.evaluation.evaluate import summarize_scores as summarize_scores
from pcnn.evaluation.fid import (
    FidWeightsUnavailable,
    course_metrics,
    ensure_inception_weights,
    save_course_samples,
    summarize_over_seeds,
)
from pcnn.sampling.guided import guided_sample
from pcnn.sampling.sample import sample


def is_synthetic(root: str | Path) -> bool:
    """Whether a data root is the generated synthetic set (then no number in the report is meaningful)."""
    return (Path(root) / SYNTHETIC_MARKER).is_file()


def data_source(root: str | Path) -> str:
    """`synthetic` or `course`, as the report states where its numbers come from."""
    return "synthetic" if is_synthetic(root) else "course"


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, for the hyperparameter table."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def draw_class_samples(
    model: PixelCNNPP,
    per_class: int,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 0,
    method: str = "cached",
    progress: bool = False,
    temperature: float = 1.0,
    guidance: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """`per_class` samples of every class (class-major order) from one seeded generator, on the CPU.

    The unconditional variant ignores labels; its samples are still labelled by position so that the
    course file layout (`Class{k}_image_{nn}.jpg`) stays balanced. `guidance` > 0 draws with the model's
    own classifier as guide (`pcnn.sampling.guided`; cached method only, conditional models only).
    """
    config = model.config
    labels = torch.arange(config.num_classes).repeat_interleave(per_class)
    batch = batch_size or len(labels)
    generator = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for start in range(0, len(labels), batch):
        chunk = labels[start : start + batch].to(device)
        common = dict(
            generator=generator, temperature=temperature, image_size=config.image_size, progress=progress
        )
        if guidance:
            images = guided_sample(model, chunk, guidance=guidance, **common).images
        else:
            images = sample(
                model, chunk if model.conditional else None, method=method, batch_size=len(chunk), **common
            )
        parts.append(images.cpu())
    return torch.cat(parts), labels


def inception_status(download_timeout_s: float = 10.0) -> tuple[bool, str]:
    """Whether FID can be measured here, and a plain sentence saying why not when it cannot."""
    try:
        path = ensure_inception_weights(download_timeout_s=download_timeout_s)
    except FidWeightsUnavailable as exc:
        return False, f"not measured (no Inception weights): {exc}"
    return True, f"Inception weights: {path}"


def course_fid_over_seeds(
    model: PixelCNNPP,
    data_root: str | Path,
    per_class: int,
    seeds: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    dims: int = 192,
    batch_size: int = 0,
    keep_first: bool = True,
    progress: bool = False,
    temperature: float = 1.0,
) -> tuple[dict[str, Any], Tensor | None, Tensor | None]:
    """Course-protocol FID and KID (samples saved as the course's JPEGs, against the test folder) per seed.

    Returns the summary over seeds (mean, std, values, KID) and, with `keep_first`, the first seed's
    images and labels, which the notebooks reuse for the sample grid instead of sampling again.
    """
    reference = Path(data_root) / "test"
    fids, kids, first_images, first_labels = [], [], None, None
    for seed in seeds:
        images, labels = draw_class_samples(
            model,
            per_class,
            seed=seed,
            device=device,
            batch_size=batch_size,
            progress=progress,
            temperature=temperature,
        )
        if keep_first and first_images is None:
            first_images, first_labels = images, labels
        with tempfile.TemporaryDirectory(prefix="pcnn_fid_") as tmp:
            save_course_samples(images, labels, tmp)
            result = course_metrics(tmp, reference, dims, device=device, progress=progress)
        fids.append(result["fid"])
        kids.append(result["kid_mean"])
    summary = summarize_over_seeds(fids)
    measured_kids = [k for k in kids if k is not None]
    summary.update(
        kid_mean=float(np.mean(measured_kids)) if measured_kids else None,
        kid_values=kids,
        seeds=list(seeds),
        n_samples=per_class * model.config.num_classes,
        dims=dims,
        reference=str(reference),
        temperature=temperature,
    )
    return summary, first_images, first_labels


def sampler_speed(
    model: PixelCNNPP,
    batches: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    naive: str = "full",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Seconds per image of the cached and the naive sampler at each batch size.

    `naive="full"` times the naive sampler itself and checks that it returns the cached sampler's images;
    `naive="estimate"` times one full forward pass and multiplies by the number of pixels (the naive
    sampler is exactly one pass per pixel), which keeps small profiles fast.
    """
    config = model.config
    size = config.image_size
    rows: list[dict[str, Any]] = []
    for batch in batches:
        labels = torch.arange(batch, device=device) % config.num_classes
        cond = labels if model.conditional else None
        _sync(device)
        start = time.perf_counter()
        cached = sample(
            model,
            cond,
            generator=torch.Generator(device=device).manual_seed(seed),
            method="cached",
            image_size=size,
            batch_size=batch,
        )
        _sync(device)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "method": "cached",
                "batch": batch,
                "seconds": seconds,
                "seconds_per_image": seconds / batch,
                "measured": "timed",
            }
        )
        if naive == "full":
            start = time.perf_counter()
            slow = sample(
                model,
                cond,
                generator=torch.Generator(device=device).manual_seed(seed),
                method="naive",
                image_size=size,
                batch_size=batch,
            )
            _sync(device)
            seconds = time.perf_counter() - start
            identical = bool(torch.equal(slow, cached))
            measured = "timed"
        else:
            x = cached.clone()
            with torch.no_grad():
                model(x, cond)  # warm-up
                _sync(device)
                start = time.perf_counter()
                model(x, cond)
                _sync(device)
            seconds = (time.perf_counter() - start) * size * size
            identical = None
            measured = "estimated: one forward pass x pixels"
        rows.append(
            {
                "method": "naive",
                "batch": batch,
                "seconds": seconds,
                "seconds_per_image": seconds / batch,
                "measured": measured,
                "identical_to_cached": identical,
            }
        )
    return rows


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
