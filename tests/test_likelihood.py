"""The DMoL likelihood against an independent float64 implementation, and its normalisation."""

from __future__ import annotations

import math

import torch

from pcnn.core.likelihood import dmol_log_prob_per_pixel, dmol_nll
from tests.conftest import grid_images


def random_params(batch: int, m: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    params = torch.randn(batch, 10 * m, size, size, generator=gen)
    blocks = params[:, m:].view(batch, 3, 3, m, size, size)
    blocks[:, :, 0] = torch.tanh(blocks[:, :, 0])  # means inside [-1, 1]
    blocks[:, :, 1] = blocks[:, :, 1].clamp(-2, 2) * 1.5 - 2.5  # log-scales in [-5.5, 0.5]
    blocks[:, :, 1, 0] = -9.0  # a log-scale below the clamp at -7
    return params


def reference_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Straightforward float64 DMoL: loops over mixtures and channels, CDF differences taken directly."""
    x, params = x.double(), params.double()
    b, _, h, w = x.shape
    m = params.shape[1] // 10
    logits = params[:, :m]
    total = torch.zeros(b, m, h, w, dtype=torch.float64)
    for k in range(m):
        prob = torch.ones(b, h, w, dtype=torch.float64)
        for c in range(3):
            base = m + 3 * m * c
            mean = params[:, base + k].clone()
            log_scale = torch.clamp(params[:, base + m + k], min=-7.0)
            if c == 1:
                mean = mean + torch.tanh(params[:, m + 2 * m + k]) * x[:, 0]
            if c == 2:
                c1 = torch.tanh(params[:, m + 3 * m + 2 * m + k])
                c2 = torch.tanh(params[:, m + 6 * m + 2 * m + k])
                mean = mean + c1 * x[:, 0] + c2 * x[:, 1]
            s = torch.exp(log_scale)
            hi, lo = (x[:, c] - mean + 1 / 255) / s, (x[:, c] - mean - 1 / 255) / s
            # difference of CDFs, taken on the side of the mean where both terms are small (float64 is
            # exact there; 1 - 1e-30 would round to 1)
            mid = torch.where(
                lo > 0, torch.sigmoid(-lo) - torch.sigmoid(-hi), torch.sigmoid(hi) - torch.sigmoid(lo)
            )
            p = torch.where(
                x[:, c] < -0.999, torch.sigmoid(hi), torch.where(x[:, c] > 0.999, torch.sigmoid(-lo), mid)
            )
            prob = prob * p
        total[:, k] = torch.log(prob)
    return torch.logsumexp(total + torch.log_softmax(logits, dim=1), dim=1)


def test_matches_float64_reference() -> None:
    x = grid_images(4, 6)
    params = random_params(4, 5, 6)
    ours = dmol_log_prob_per_pixel(x, params)
    ref = reference_log_prob(x, params)
    assert torch.isfinite(ref).all(), "the float64 reference itself must be finite for this comparison"
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    nll = dmol_nll(x, params).double()
    torch.testing.assert_close(nll, -ref.flatten(1).sum(1), rtol=1e-5, atol=0)


def test_extreme_bins_take_the_tails() -> None:
    """At x = -1 the bin is (-inf, -1 + 1/255]; at x = 1 it is [1 - 1/255, inf)."""
    m = 1
    params = torch.zeros(1, 10 * m, 1, 1)  # means 0, log-scales 0, coefficients 0
    for value, expected in ((-1.0, 1 / (1 + math.exp(1 - 1 / 255))), (1.0, 1 / (1 + math.exp(1 - 1 / 255)))):
        x = torch.full((1, 3, 1, 1), value)
        log_p = dmol_log_prob_per_pixel(x, params).item()
        assert math.isclose(log_p, 3 * math.log(expected), rel_tol=1e-5)


def test_all_colours_sum_to_one() -> None:
    """For fixed parameters at one pixel, the 256^3 colour probabilities sum to 1 within 1e-4.

    The 256 x 256 (G, B) plane of each R value is one batch laid out as a 256x256 image that shares the
    pixel's parameters.
    """
    m = 2
    params = random_params(1, m, 1, seed=3).expand(1, -1, 256, 256)
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    gg, bb = torch.meshgrid(levels, levels, indexing="ij")
    total = 0.0
    for start in range(0, 256, 32):
        reds = levels[start : start + 32].view(-1, 1, 1).expand(-1, 256, 256)
        x = torch.stack([reds, gg.expand_as(reds), bb.expand_as(reds)], dim=1)
        lp = dmol_log_prob_per_pixel(x, params.expand(x.shape[0], -1, -1, -1))
        total += lp.double().exp().sum().item()
    assert abs(total - 1.0) < 1e-4


def test_float32_under_autocast() -> None:
    x = grid_images(2, 4)
    params = random_params(2, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dmol_log_prob_per_pixel(x, params.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, dmol_log_prob_per_pixel(x, params.bfloat16().float()))


def test_stable_for_sharp_logistics() -> None:
    """Tiny scales far from the data must give large finite NLLs, not inf or nan."""
    x = grid_images(1, 2)
    params = random_params(1, 2, 2)
    params[:, 2:] = params[:, 2:] * 0 + 5.0  # means at 5 (outside [-1, 1]), log-scales 5 -> clamp-free
    params[:, 2:].view(1, 3, 3, 2, 2, 2)[:, :, 1] = -7.0
    nll = dmol_nll(x, params)
    assert torch.isfinite(nll).all()
