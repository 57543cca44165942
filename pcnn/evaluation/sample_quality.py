"""How well samples show their class: one seeded draw judged three ways (docs/design.md#guided-sampling).

For a sampling setting (temperature, self-guidance weight) this draws `per_class` samples of every class
and measures (1) the share that the independent judge (the discriminative baseline CNN, trained on the
training split only) assigns to the class they were drawn for, (2) the share that the model's own Bayes
classifier assigns to it, and, when asked, (3) the matched-protocol FID and KID beside the real-data floor.
The temperature sweep and notebook 04 both measure with it, so a setting chosen by the sweep is measured
the same way in the build.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pcnn.core.classify import class_log_likelihoods
from pcnn.core.model import PixelCNNPP, inference
from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation import fid
from pcnn.evaluation.analysis import class_consistency
from pcnn.workflow.experiments import draw_class_samples


@dataclass(frozen=True)
class JudgedSamples:
    """The samples (class-major), their conditioning labels and the JSON-ready record of their judgement."""

    images: Tensor
    labels: Tensor
    record: dict[str, Any]


def _own_predictions(model: PixelCNNPP, images: Tensor, batch_size: int = 64) -> Tensor:
    """The model's Bayes classification (uniform prior) of images, in batches on the model's device.

    Without autograd: a graph kept per batch held 23 GB for 1000 images.
    """
    device = model.out.bias.device
    with inference(model):
        parts = [
            class_log_likelihoods(model, images[i : i + batch_size].to(device)).argmax(dim=1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    return torch.cat(parts)


def judge_samples(
    model: PixelCNNPP,
    judges: Sequence[Callable[[Tensor], Tensor]],
    per_class: int,
    *,
    seed: int,
    temperature: float = 1.0,
    guidance: float = 0.0,
    device: torch.device | str = "cpu",
    batch_size: int = 0,
    data_root: str | Path | None = None,
    fid_dims: int = 0,
    real_seed: int = 0,
    progress: bool = False,
    real_features: dict | None = None,
) -> JudgedSamples:
    """Draw `per_class` samples of every class at one setting and judge them (module docstring).

    `judges` are predict functions of judges trained alike with different seeds: the first one's verdict is
    `judge` (and, per sample, `judge_predictions`); with more, `judge_seeds` lists every judge's shares,
    because on samples that are mostly texture the verdict per class moves with the judge's seed far more
    than with the model.

    `fid_dims` > 0 with `data_root` also measures the matched-protocol FID/KID against the real images that
    `real_seed` chooses (`fid.matched_protocol`; it needs the Inception weights; a `real_features` dict kept
    across calls spares recomputing the real images' features). Guidance > 0 is not the
    model's own distribution (`pcnn.sampling.guided`); the record keeps the setting beside every number.
    """
    start = time.monotonic()
    images, labels = draw_class_samples(
        model,
        per_class,
        seed=seed,
        device=device,
        batch_size=batch_size,
        temperature=temperature,
        guidance=guidance,
        progress=progress,
    )
    seconds = time.monotonic() - start
    record: dict[str, Any] = {
        "temperature": temperature,
        "guidance": guidance,
        "samples_per_class": per_class,
        "seed": seed,
        "sampling_s": seconds,
    }
    predictions = [judge(images) for judge in judges]
    verdicts = [class_consistency(lambda _, p=p: p, images, labels) for p in predictions]
    record["judge"] = verdicts[0]
    # each sample's verdict, so that two sweeps of one seed compare in pairs (`pcnn.evaluation.paired`)
    record["judge_predictions"] = torch.as_tensor(predictions[0]).tolist()
    if len(verdicts) > 1:
        record["judge_seeds"] = {
            "overall": [v["overall"] for v in verdicts],
            "per_class": {
                name: [v["per_class"][name] for v in verdicts] for name in verdicts[0]["per_class"]
            },
        }
    if model.conditional:
        own = _own_predictions(model, images)
        record["own_classifier"] = class_consistency(lambda _: own, images, labels)
    if fid_dims and data_root is not None:
        matched = fid.matched_protocol(
            images,
            labels,
            data_root,
            per_class,
            fid_dims,
            seed=real_seed,
            device=device,
            progress=progress,
            real_features=real_features,
        )
        record["matched_fid"] = {
            "model": matched["model"]["fid"],
            "model_kid": matched["model"]["kid_mean"],
            "floor": matched["floor"]["fid"],
            "floor_kid": matched["floor"]["kid_mean"],
            "dims": fid_dims,
            "per_class": {CLASS_NAMES[k]: v for k, v in matched["per_class"].items()},
        }
    return JudgedSamples(images=images, labels=labels, record=record)
