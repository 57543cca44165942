"""Bayes-rule classification with the generative model (docs/design.md#classification).

log p(y|x) = log p(x|y) + log p(y) - logsumexp_y'(log p(x|y') + log p(y')). The class log-likelihoods come
from batched forward passes over (image, class) pairs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pcnn.core.likelihood import dmol_log_prob_per_pixel
from pcnn.core.model import PixelCNNPP, unwrap


def _require_conditional(model: PixelCNNPP) -> None:
    inner = unwrap(model)
    if inner.config.conditioning == "none":
        raise ValueError("the unconditional variant 'none' has no classifier (report n/a)")


def class_log_prob_per_pixel(model: PixelCNNPP, x: Tensor, chunk: int = 256) -> Tensor:
    """log p(x_ij | x_<ij, y) for every class: (B, K, H, W), over (image, class) pairs, `chunk` at a time."""
    _require_conditional(model)
    inner = unwrap(model)
    k = inner.config.num_classes
    b = x.shape[0]
    images = x.repeat_interleave(k, dim=0)  # pair index = image * K + class
    labels = torch.arange(k, device=x.device).repeat(b)
    parts = [
        dmol_log_prob_per_pixel(images[i : i + chunk], model(images[i : i + chunk], labels[i : i + chunk]))
        for i in range(0, b * k, chunk)
    ]
    return torch.cat(parts).reshape(b, k, *x.shape[-2:])


def class_log_likelihoods(model: PixelCNNPP, x: Tensor, chunk: int = 256) -> Tensor:
    """log p(x | y) in nats for every class y: (B, K)."""
    return class_log_prob_per_pixel(model, x, chunk).flatten(2).sum(dim=2)


def prefix_class_log_likelihoods(model: PixelCNNPP, x: Tensor, t: int, chunk: int = 256) -> Tensor:
    """log p(first t pixels in raster order | y): (B, K). Exact by causality, with no masking of the input."""
    h, w = x.shape[-2:]
    if not 0 <= t <= h * w:
        raise ValueError(f"t must lie in 0..{h * w}, got {t}")
    return class_log_prob_per_pixel(model, x, chunk).flatten(2)[:, :, :t].sum(dim=2)


def prefix_log_likelihood_curves(model: PixelCNNPP, x: Tensor, chunk: int = 256) -> Tensor:
    """Cumulative class log-likelihoods after each raster-order pixel: (B, K, H*W + 1), entry t = t pixels."""
    per_pixel = class_log_prob_per_pixel(model, x, chunk).flatten(2)
    zeros = per_pixel.new_zeros(*per_pixel.shape[:2], 1)
    return torch.cat([zeros, per_pixel.cumsum(dim=2)], dim=2)


def log_prior(num_classes: int, prior: Tensor | None = None, device: torch.device | None = None) -> Tensor:
    """Log of the class prior: uniform when `prior` is None, else the given probabilities (normalised)."""
    if prior is None:
        return torch.full((num_classes,), -math.log(num_classes), device=device)
    prior = torch.as_tensor(prior, dtype=torch.float32, device=device)
    if prior.shape != (num_classes,) or (prior < 0).any() or prior.sum() <= 0:
        raise ValueError(f"prior must be {num_classes} non-negative numbers with a positive sum")
    return torch.log(prior / prior.sum())


def posterior(log_likelihoods: Tensor, prior: Tensor | None = None) -> Tensor:
    """Log posterior log p(y|x): (B, K). Uniform prior unless `prior` (class probabilities) is given.

    Computed in float64: log-likelihoods of whole images are hundreds of nats, where float32 round-off in
    the normaliser alone is about 1e-4.
    """
    ll = log_likelihoods.double()
    joint = ll + log_prior(ll.shape[1], prior, ll.device).double()
    return (joint - torch.logsumexp(joint, dim=1, keepdim=True)).to(log_likelihoods.dtype)


@torch.no_grad()
def predict(model: PixelCNNPP, x: Tensor, prior: Tensor | None = None, tta: bool = False) -> Tensor:
    """The maximum-a-posteriori class of each image: (B,). `tta` averages over horizontal flips."""
    scores = class_log_likelihoods(model, x)
    if tta:
        scores = 0.5 * (scores + class_log_likelihoods(model, x.flip(-1)))
    return posterior(scores, prior).argmax(dim=1)
