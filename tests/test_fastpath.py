"""The fast training path computes the same model and loss: forward, gradients, likelihood, dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pcnn.config import CONDITIONING_VARIANTS
from pcnn.core.likelihood import dmol_nll, dmol_nll_fused
from pcnn.fast import convgrad
from pcnn.fast.fastpath import FastForward, _ConcatElu, _dropout_scale, _expm1_of_negative, concat_elu
from tests.conftest import grid_images, tiny_model
from tests.test_likelihood import random_params

# Compares computations that round differently on other CPUs: run again under AVX2 kernels (Makefile).
pytestmark = pytest.mark.isa_sensitive


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("conditioning", CONDITIONING_VARIANTS)
def test_fast_forward_matches_the_model(
    conditioning: str, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convgrad, "MIN_PIXELS", 0)  # the tiny layers take the CPU weight gradient too
    monkeypatch.setattr(convgrad, "MIN_CHANNELS", 0)
    model = tiny_model(conditioning, image_size=8, nr_resnet=2)
    fast = FastForward(model, channels_last=channels_last).eval()
    x, labels = grid_images(3, 8), torch.tensor([0, 2, 3])
    expected, got = model(x, labels), fast(x, labels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    params = list(model.parameters())
    want = torch.autograd.grad(expected.square().sum(), params, allow_unused=True)
    have = torch.autograd.grad(got.square().sum(), params, allow_unused=True)
    for a, b in zip(want, have):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_likelihood_equals_dmol_nll(channels_last: bool) -> None:
    x = grid_images(3, 6)
    params = random_params(3, 5, 6)
    if channels_last:
        params = params.contiguous(memory_format=torch.channels_last)
    a, b = params.clone().requires_grad_(), params.clone().requires_grad_()
    nll, fused = dmol_nll(x, a), dmol_nll_fused(x, b)
    assert torch.equal(nll, fused)  # the same operations in the same order: identical values
    weights = torch.tensor([1.0, -2.0, 0.5])
    (grad_a,) = torch.autograd.grad((nll * weights).sum(), a)
    (grad_b,) = torch.autograd.grad((fused * weights).sum(), b)
    torch.testing.assert_close(grad_b, grad_a, rtol=1e-5, atol=1e-4 * grad_a.abs().max().item())
    with pytest.raises(ValueError, match="no gradient for x"):
        dmol_nll_fused(x.requires_grad_(), b)


def test_concat_elu_and_its_gradient_equal_elu_of_both_signs() -> None:
    """The compiled step's concat_elu (one exp per element, a hand-written gradient): within two float32 ulps
    of F.elu(cat(x, -x)) in values and derivatives, also near zero (where exp(y) - 1 would cancel), at
    exactly zero (where elu's slope is 1) and far out."""
    tiny = torch.tensor([1e-7, -1e-7, 3e-4, -3e-4, 0.4999, -0.4999, 0.5, -0.5, 0.0, -30.0, 30.0])
    x = torch.cat([torch.randn(120), tiny])
    x = x[None, :, None, None].repeat(2, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    fast_in, plain_in = x.clone().requires_grad_(), x.double().requires_grad_()
    fast, plain = _ConcatElu.apply(fast_in), F.elu(torch.cat([plain_in, -plain_in], dim=1))
    two_ulps = 2 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(fast.double(), plain, rtol=two_ulps, atol=0)
    weights = torch.randn_like(plain)
    (fast * weights.float()).sum().backward()
    (plain * weights).sum().backward()
    # the gradient is a float32 difference of two weighted terms: its rounding scales with the weights
    atol = two_ulps * weights.abs().max().item()
    torch.testing.assert_close(fast_in.grad.double(), plain_in.grad, rtol=two_ulps, atol=atol)
    point = torch.randn(2, 3, 4, 4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(_ConcatElu.apply, (point,))
    with torch.no_grad():
        torch.testing.assert_close(concat_elu(x), F.elu(torch.cat([x, -x], dim=1)), rtol=0, atol=0)


def test_expm1_of_negative_is_float32_accurate() -> None:
    """expm1 from one exp: its Taylor series below 1/2, exp - 1 above (torch's expm1 costs twice its exp on
    a CPU). Checked densely against float64 over the range where it differs from -1."""
    a = torch.linspace(0, 20, 400_001)
    e = _expm1_of_negative(a)
    exact = a.double().neg().expm1()
    assert ((e.double() - exact).abs() / exact.abs())[1:].max() < torch.finfo(torch.float32).eps
    assert e[0] == 0


@pytest.mark.parametrize("p", [0.5, 0.1, 0.3])
def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean(p: float) -> None:
    like = torch.empty(4, 16, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    scale = _dropout_scale(like, p)
    assert scale.shape == like.shape and scale.is_contiguous(memory_format=torch.channels_last)
    values = scale.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
    dropped = (scale == 0).float().mean().item()
    sigma = (p * (1 - p) / scale.numel()) ** 0.5
    assert abs(dropped - p) < 5 * sigma and abs(scale.mean().item() - 1.0) < 5 * sigma / (1 - p)
    torch.manual_seed(0)
    assert torch.equal(_dropout_scale(like, p), scale)  # seeded by torch's generator, like F.dropout
    # neighbouring elements are independent: pairs agree with probability p^2 + (1-p)^2
    flat = scale.permute(0, 2, 3, 1).flatten()
    agree = (flat[1:] == flat[:-1]).float().mean().item()
    assert abs(agree - (p**2 + (1 - p) ** 2)) < 0.02


def test_fast_forward_dropout_is_active_only_in_training() -> None:
    model = tiny_model(image_size=8, dropout=0.5).train()
    fast = FastForward(model)
    x, labels = grid_images(2, 8), torch.tensor([1, 2])
    torch.manual_seed(1)
    a = fast(x, labels)
    torch.manual_seed(2)
    assert not torch.allclose(a, fast(x, labels))
    model.eval()
    torch.testing.assert_close(fast(x, labels), model(x, labels), rtol=1e-5, atol=1e-6)
