"""Analyses beyond the headline numbers: sample class consistency, memorisation, and TTA/prior effects.

- `class_consistency`: how often an independent classifier (e.g. the discriminative baseline of
  `pcnn.evaluation.baseline`) recognises the class a sample was generated for; FID says nothing about this.
- `nearest_neighbours` / `nearest_neighbour_figure`: each sample beside its closest training images in
  pixel space, the direct check that samples are not copies of training images.
- `tta_and_prior_effects`: what horizontal-flip averaging and a prior matched to the training class
  frequencies each change in the Bayes classifier, from log-likelihoods already computed.

Accuracy against the fraction of the image seen lives in `pcnn.evaluation.partial`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pcnn.core.classify import posterior
from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation.metrics import accuracy, bootstrap_accuracy_ci, confusion_matrix, macro_f1
from pcnn.reporting.plots import image_grid_figure, save_figure, to_uint8_hwc


def _as_numpy(values: Any) -> np.ndarray:
    return np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)


# ------------------------------------------------------------------------------------ class consistency


def class_consistency(
    classifier_predict: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Sequence[int] | Tensor,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict[str, Any]:
    """Share of generated images that `classifier_predict` assigns to the class they were generated for.

    `labels` are the classes the samples were conditioned on. Returns the overall share with its
    bootstrap 95% interval, the share per class (None for a class without samples) and the confusion
    matrix (rows: conditioning class, columns: predicted class), JSON-ready.
    """
    labels = _as_numpy(labels).astype(np.int64)
    predictions = _as_numpy(classifier_predict(images)).astype(np.int64)
    if predictions.shape != labels.shape:
        raise ValueError(f"the classifier returned {predictions.shape} predictions for {labels.shape} labels")
    k = len(class_names)
    per_class: dict[str, float | None] = {}
    for cls, name in enumerate(class_names):
        members = labels == cls
        per_class[name] = float((predictions[members] == cls).mean()) if members.any() else None
    low, high = bootstrap_accuracy_ci(labels, predictions)
    return {
        "n": int(labels.size),
        "overall": accuracy(labels, predictions),
        "overall_ci95": [low, high],
        "per_class": per_class,
        "per_class_n": {name: int((labels == cls).sum()) for cls, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(labels, predictions, k).tolist(),
    }


# ---------------------------------------------------------------------------------- nearest neighbours


def _flat64(images: Any) -> Tensor:
    return torch.as_tensor(_as_numpy(images)).reshape(len(images), -1).double()


def nearest_neighbours(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    k: int = 1,
    chunk: int = 256,
    reference_chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (N, k) into `reference` of each sample's k nearest images and their L2 distances (N, k).

    Distances are in pixel space on [-1, 1] images, closest first. The ranking uses batched matrix
    products in float64 over `chunk` x `reference_chunk` blocks (memory stays bounded for any sizes);
    the k distances reported are then recomputed from the pixel differences, so a duplicate is at 0.
    """
    s, r = _flat64(samples), _flat64(reference)
    if s.shape[1] != r.shape[1]:
        raise ValueError(
            f"samples and reference differ in shape: {tuple(samples.shape[1:])} vs "
            f"{tuple(reference.shape[1:])}"
        )
    if not 1 <= k <= len(r):
        raise ValueError(f"k must lie in 1..{len(r)} (the reference size), got {k}")
    indices = torch.empty(len(s), k, dtype=torch.long)
    distances = torch.empty(len(s), k, dtype=torch.float64)
    for i in range(0, len(s), chunk):
        block = s[i : i + chunk]
        best_d = block.new_full((len(block), 0), 0.0)
        best_i = torch.empty(len(block), 0, dtype=torch.long)
        for j in range(0, len(r), reference_chunk):
            d = torch.cdist(block, r[j : j + reference_chunk], compute_mode="use_mm_for_euclid_dist")
            cand_d = torch.cat([best_d, d], dim=1)
            cand_i = torch.cat([best_i, torch.arange(j, j + d.shape[1]).expand(len(block), -1)], dim=1)
            best_d, pos = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False)
            best_i = cand_i.gather(1, pos)
        exact = (block[:, None, :] - r[best_i]).norm(dim=2)
        exact, order = exact.sort(dim=1, stable=True)
        indices[i : i + chunk] = best_i.gather(1, order)
        distances[i : i + chunk] = exact
    return indices.numpy(), distances.numpy()


def nearest_neighbour_grid(
    samples: Tensor | np.ndarray, reference: Tensor | np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """uint8 grid (N, 1 + k, H, W, 3): each sample, then its k nearest reference images in order."""
    indices = np.asarray(indices).reshape(len(samples), -1)
    pictures = to_uint8_hwc(samples)
    neighbours = to_uint8_hwc(_as_numpy(reference)[indices.reshape(-1)])
    neighbours = neighbours.reshape(*indices.shape, *neighbours.shape[1:])
    return np.concatenate([pictures[:, None], neighbours], axis=1)


def nearest_neighbour_grid_figure(
    grid: np.ndarray,
    labels: Sequence[int] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Samples and their nearest training images (L2, pixel space)",
) -> Any:
    """The figure of a `nearest_neighbour_grid`; rows named by the sample's class (else its index)."""
    if labels is not None:
        row_labels = [class_names[int(label)] for label in labels]
    else:
        row_labels = [f"#{i}" for i in range(len(grid))]
    col_labels = ["sample"] + [f"NN {j + 1}" for j in range(grid.shape[1] - 1)]
    return image_grid_figure(grid, row_labels, title, col_labels=col_labels)


def nearest_neighbour_figure(
    samples: Tensor | np.ndarray,
    reference: Tensor | np.ndarray,
    indices: np.ndarray,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
) -> list[Path]:
    """One row per sample: the sample, then its nearest reference images; saved as `<path>.pdf/.png`."""
    grid = nearest_neighbour_grid(samples, reference, indices)
    fig = nearest_neighbour_grid_figure(grid, labels, class_names if class_names is not None else CLASS_NAMES)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------- TTA and the prior


def tta_and_prior_effects(
    scores_plain: np.ndarray,
    scores_flip: np.ndarray,
    labels: np.ndarray,
    train_prior: np.ndarray | Sequence[float],
) -> list[dict[str, Any]]:
    """Bayes-classifier accuracy and macro F1 under plain / TTA / training prior / both, one row each.

    `scores_plain` and `scores_flip` are class log-likelihoods (N, K): of the images as given and averaged
    over the image and its horizontal flip (as `pcnn.evaluation.evaluate.score_split(tta=True)` returns).
    `train_prior` holds the training class frequencies (counts or probabilities). Each row carries the
    accuracy's bootstrap 95% interval and how many predictions differ from the plain setting.
    """
    labels = np.asarray(labels)
    prior = torch.as_tensor(np.asarray(train_prior, dtype=np.float64), dtype=torch.float32)
    settings = [
        ("plain", False, None),
        ("tta", True, None),
        ("train prior", False, prior),
        ("tta + train prior", True, prior),
    ]
    rows: list[dict[str, Any]] = []
    plain_predictions: np.ndarray | None = None
    for name, tta, setting_prior in settings:
        ll = torch.as_tensor(np.asarray(scores_flip if tta else scores_plain, dtype=np.float64))
        predictions = posterior(ll, setting_prior).argmax(dim=1).numpy()
        if plain_predictions is None:
            plain_predictions = predictions
        low, high = bootstrap_accuracy_ci(labels, predictions)
        rows.append(
            {
                "setting": name,
                "tta": tta,
                "prior": "uniform" if setting_prior is None else "training frequencies",
                "n": int(labels.size),
                "accuracy": accuracy(labels, predictions),
                "accuracy_ci95": [low, high],
                "macro_f1": macro_f1(labels, predictions, ll.shape[1]),
                "changed_vs_plain": int((predictions != plain_predictions).sum()),
            }
        )
    return rows
