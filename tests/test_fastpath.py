"""The fast training path computes the same model and loss: forward, gradients, likelihood, dropout."""

from __future__ import annotations

import pytest
import torch

from pcnn.config import CONDITIONING_VARIANTS
from pcnn.fastpath import FastForward, _half_dropout_scale
from pcnn.likelihood import dmol_nll, dmol_nll_fused
from tests.conftest import grid_images, tiny_model
from tests.test_likelihood import random_params


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("conditioning", CONDITIONING_VARIANTS)
def test_fast_forward_matches_the_model(conditioning: str, channels_last: bool) -> None:
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


def test_half_dropout_draws_fair_zero_or_two() -> None:
    like = torch.empty(4, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    scale = _half_dropout_scale(like)
    assert scale.shape == like.shape and scale.is_contiguous(memory_format=torch.channels_last)
    assert set(scale.unique().tolist()) == {0.0, 2.0}
    assert abs(scale.mean().item() - 1.0) < 0.05
    torch.manual_seed(0)
    assert torch.equal(_half_dropout_scale(like), scale)  # seeded by torch's generator, like F.dropout
    # neighbouring elements are independent: pairs agree about half the time
    flat = scale.permute(0, 2, 3, 1).flatten()
    assert abs((flat[1:] == flat[:-1]).float().mean().item() - 0.5) < 0.05


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
