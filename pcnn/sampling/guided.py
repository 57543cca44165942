"""Self-guided sampling: the model's own Bayes classifier steers its sampler (docs/design.md#guided-sampling).

The conditional model gives, at every sub-pixel, p(v | earlier, k) for every class k. Accumulating the
chosen values' log-probabilities gives each class's exact prefix log-likelihood log p(x_<i | k), hence
the Bayes posterior p(k | x_<i) (uniform prior) and the class-free distribution
p(v | x_<i) = sum_k p(k | x_<i) p(v | x_<i, k). With guidance w the sampler draws each sub-pixel of an
image of class c from

    q(v) ∝ p(v | x_<i, c)^(1 + w) / p(v | x_<i)^w = p(v | x_<i, c) * [p(c | x_<i, v) / p(c | x_<i)]^w,

the autoregressive form of classifier guidance (Dhariwal & Nichol 2021; Ho & Salimans 2022) with the
generative classifier itself as the guide: values that make the image more recognisably of class c under
the model gain weight. w = 0 is the model's own distribution; w > 0 is *not*, and records say so.

Each sub-pixel is drawn as a categorical over its 256 levels. Within a pixel the channels stay exact: the
mixture weights of G are the components' posterior after R (and of B after R and G), as in the joint
likelihood. Cost: one cached network over K copies of the batch (K classes) plus 256-level
log-probabilities per sub-pixel, 14 to 21 times the plain cached sampler on a
2-core CPU (docs/runs.md#sampling-levers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pcnn.core.likelihood import HALF_BIN, split_params
from pcnn.core.model import inference, unwrap
from pcnn.sampling.sample import _CachedNet, _known_rows, _uniform

LEVELS = 256


@dataclass(frozen=True)
class GuidedSamples:
    """Images (B, 3, S, S) and every class's exact log-likelihood (B, K) of them under the model, in nats."""

    images: Tensor
    log_likelihoods: Tensor

    def own_predictions(self) -> Tensor:
        """The model's own Bayes classification of its samples (uniform prior): (B,) class indices."""
        return self.log_likelihoods.argmax(dim=1)


def level_log_probs(mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(level) of each logistic component for all 256 levels: (..., 256) from (...) parameters.

    The same arithmetic as `pcnn.core.likelihood.log_bin_probability` (the tails for the extreme levels,
    the stable difference elsewhere), computed once per bin edge: level j's upper edge is j+1's lower one.
    """
    edges = torch.linspace(-1.0 + HALF_BIN, 1.0 - HALF_BIN, LEVELS - 1, device=mean.device, dtype=mean.dtype)
    inv_scale = torch.exp(-log_scale).unsqueeze(-1)
    t = inv_scale * (edges - mean.unsqueeze(-1))  # (..., 255)
    log_below = F.logsigmoid(t)  # log CDF at each edge
    log_above = log_below - t  # log (1 - CDF) = log sigmoid(-t) = log sigmoid(t) - t, one transcendental less
    log_width = torch.log(-torch.expm1(-2.0 * HALF_BIN * inv_scale))  # (..., 1)
    middle = log_below[..., 1:] + log_above[..., :-1] + log_width
    return torch.cat([log_below[..., :1], middle, log_above[..., -1:]], dim=-1)


def _level_values(index: Tensor) -> Tensor:
    """Grid value k / 127.5 - 1 of level indices."""
    return index.to(torch.float32) / 127.5 - 1.0


def _value_index(value: Tensor) -> Tensor:
    """Level indices of values on the 256-level grid."""
    return torch.add(value, 1.0).mul(127.5).round().clamp(0, LEVELS - 1).long()


class _GuidedPixel:
    """Draws (or records) one pixel for B images given the K class-conditional parameter sets (B, K, 10M)."""

    def __init__(self, target: Tensor, num_classes: int, guidance: float, temperature: float) -> None:
        self.target = target.view(-1, 1, 1)  # (B, 1, 1) index into the class axis
        self.guidance = guidance
        self.log_temperature = math.log(temperature)
        self.temperature = temperature
        self.log_likelihood = torch.zeros(
            target.numel(), num_classes, device=target.device
        )  # log p(x_<i | k)

    def __call__(self, params: Tensor, generator: torch.Generator, known: Tensor | None) -> Tensor:
        """The pixel's value (B, 3); `known` (B, 3) records given values instead of drawing them."""
        b, k, _ = params.shape
        logits, means, log_scales, coeffs = (
            t.reshape(b, k, *t.shape[1:-2]) for t in split_params(params.float().reshape(b * k, -1, 1, 1))
        )  # logits (B, K, M); means, log-scales, coefficients (B, K, 3, M)
        m = logits.shape[-1]
        log_mix = F.log_softmax(logits / self.temperature, dim=-1)
        log_scales = log_scales + self.log_temperature
        value = means.new_zeros(b, 3)
        for ch in range(3):
            mean = means[:, :, ch]
            if ch >= 1:
                mean = mean + coeffs[:, :, ch - 1] * value[:, 0].view(b, 1, 1)  # c0 (R->G) or c1 (R->B)
            if ch == 2:
                mean = mean + coeffs[:, :, 2] * value[:, 1].view(b, 1, 1)  # c2 (G->B)
            component = level_log_probs(mean, log_scales[:, :, ch])  # (B, K, M, 256)
            per_class = torch.logsumexp(log_mix.unsqueeze(-1) + component, dim=2)  # (B, K, 256)
            if known is None:
                index = self._draw(per_class, generator)
            else:
                index = _value_index(known[:, ch])
            value[:, ch] = _level_values(index)
            at = index.view(b, 1, 1, 1).expand(b, k, m, 1)
            self.log_likelihood += per_class.gather(2, index.view(b, 1, 1).expand(b, k, 1))[..., 0]
            log_mix = F.log_softmax(
                log_mix + component.gather(3, at)[..., 0], dim=-1
            )  # components' posterior
        return value

    def _draw(self, per_class: Tensor, generator: torch.Generator) -> Tensor:
        """Level indices (B,) drawn from the guided categorical by the Gumbel-max rule."""
        b, k, _ = per_class.shape
        own = per_class.gather(1, self.target.expand(b, 1, LEVELS))[:, 0]  # (B, 256)
        scores = own
        if self.guidance:
            posterior = F.log_softmax(self.log_likelihood, dim=1).unsqueeze(-1)  # log p(k | x_<i)
            class_free = torch.logsumexp(posterior + per_class, dim=1)
            guided = (1.0 + self.guidance) * own - self.guidance * class_free
            scores = torch.where(torch.isneginf(own), own, guided)
        noise = _uniform((b, LEVELS), generator, scores)
        return (scores - torch.log(-torch.log(noise))).argmax(dim=1)


def guided_sample(
    model: nn.Module,
    labels: Tensor | Sequence[int],
    *,
    guidance: float,
    generator: torch.Generator,
    temperature: float = 1.0,
    image_size: int = 32,
    progress: bool = False,
    prefix: Tensor | None = None,
    prefix_rows: int = 0,
) -> GuidedSamples:
    """Draw one image per label with self-guidance `guidance` (>= 0; 0 samples the model's distribution).

    Returns the images and, for free, every class's exact log-likelihood of them (the model's own
    classification of its samples). `temperature` divides every class's mixture logits and multiplies
    its scales before guidance; `prefix`/`prefix_rows` complete given top rows as in `pcnn.sampling.sample`.
    """
    inner = unwrap(model)
    if not inner.conditional:
        raise ValueError("guided sampling needs a class-conditional model (its classes are the guide)")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    num_classes = inner.config.num_classes
    device = inner.out.bias.device
    labels = torch.as_tensor(labels, device=device).long().reshape(-1)
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.tolist()}")
    b = labels.numel()
    known = _known_rows(prefix, prefix_rows, b, image_size)
    every_class = torch.arange(num_classes, device=device).repeat(b)  # image-major: (B*K,)
    pixel = _GuidedPixel(labels, num_classes, guidance, temperature)
    rows = tqdm(range(image_size), desc="sampling (guided)", unit="row", disable=not progress, leave=False)
    with inference(model):
        net = _CachedNet(inner, every_class, b * num_classes, image_size)
        image = torch.zeros(b, 3, image_size, image_size, device=device)
        for r in rows:
            net.start_row(r)
            for c in range(image_size):
                params = net.params_at(c).unflatten(0, (b, num_classes))
                given = known[:, :, r, c].to(image) if r < prefix_rows else None
                value = pixel(params, generator, given)
                image[:, :, r, c] = value
                net.put_pixel(c, value.to(net.image).repeat_interleave(num_classes, dim=0))
    return GuidedSamples(images=image, log_likelihoods=pixel.log_likelihood)
