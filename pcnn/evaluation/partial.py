"""Classification from part of an image: accuracy against the fraction seen (docs/design.md#partial-images).

For an autoregressive model the log-likelihood of the first t pixels in raster order is exactly the sum
of their per-pixel log-probabilities, so one forward pass per (image, class) pair gives the Bayes
posterior after every prefix at once (`pcnn.core.classify.prefix_log_likelihood_curves`); no masking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from pcnn.core.classify import posterior, prefix_log_likelihood_curves
from pcnn.core.model import PixelCNNPP, inference
from pcnn.datasets import CPEN455Dataset, evenly_spaced_indices
from pcnn.evaluation.metrics import bootstrap_accuracy_ci


def prefix_predictions(
    model: PixelCNNPP,
    dataset: CPEN455Dataset,
    *,
    subset: int = 0,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    prior: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MAP class after every prefix length t = 0..H*W: predictions (N, H*W+1) and labels (N,).

    `subset` picks a fixed, evenly spaced subset of the split, as `pcnn.evaluation.evaluate.score_split`
    does. At t = 0 the posterior is the prior, so a uniform prior predicts class 0 (argmax of a tie).
    """
    indices = evenly_spaced_indices(len(dataset), subset)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    predictions, labels = [], []
    with inference(model):
        for x, y in loader:
            curves = prefix_log_likelihood_curves(model, x.to(device)).double()  # (B, K, T+1)
            b, k, t = curves.shape
            flat = curves.permute(0, 2, 1).reshape(b * t, k)
            post = posterior(flat, prior).reshape(b, t, k)
            predictions.append(post.argmax(dim=2).cpu().numpy())
            labels.append(np.asarray(y))
    return np.concatenate(predictions), np.concatenate(labels)


def accuracy_vs_fraction(
    model: PixelCNNPP,
    dataset: CPEN455Dataset,
    *,
    subset: int = 0,
    points: int = 33,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    prior: torch.Tensor | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Accuracy with bootstrap 95% intervals at `points` evenly spaced fractions of the image (0 to 1).

    JSON-ready: fractions, pixels (the prefix lengths), accuracy, ci_low, ci_high and n (images).
    """
    predictions, labels = prefix_predictions(
        model, dataset, subset=subset, batch_size=batch_size, device=device, prior=prior
    )
    total = predictions.shape[1] - 1
    pixels = np.unique(np.linspace(0, total, points).round().astype(int))
    accuracy, low, high = [], [], []
    for t in pixels:
        accuracy.append(float((predictions[:, t] == labels).mean()))
        lo, hi = bootstrap_accuracy_ci(labels, predictions[:, t], n_boot=n_boot)
        low.append(lo)
        high.append(hi)
    return {
        "fractions": (pixels / total).tolist(),
        "pixels": pixels.tolist(),
        "accuracy": accuracy,
        "ci_low": low,
        "ci_high": high,
        "n": int(labels.size),
    }
