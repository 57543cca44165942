"""The network: shapes, every conditioning variant, and causality (no pixel sees itself or a later pixel)."""

from __future__ import annotations

import pytest
import torch

from pcnn.config import CONDITIONING_VARIANTS, ModelConfig
from pcnn.core.model import inference
from tests.conftest import grid_images, tiny_model


@pytest.mark.parametrize("size", [8, 16, 12])
def test_output_shape(size: int) -> None:
    model = tiny_model(image_size=size)
    out = model(grid_images(2, size), torch.tensor([0, 3]))
    assert out.shape == (2, 30, size, size)


@pytest.mark.parametrize("conditioning", CONDITIONING_VARIANTS)
def test_causality(conditioning: str) -> None:
    """d params(i, j) / d x(p) is exactly zero for every sub-pixel p at or after (i, j) in raster order.

    One batch copy of the image per output position: copy n back-propagates only from position n, so a
    single backward pass yields every position's input gradient (batch items never interact).
    """
    size = 8
    n = size * size
    model = tiny_model(conditioning, image_size=size, nr_resnet=2).double()
    x = grid_images(1, size).double().expand(n, -1, -1, -1).clone().requires_grad_(True)
    out = model(x, torch.full((n,), 2))
    weights = torch.randn(out.shape[1], dtype=torch.float64)
    rows, cols = torch.arange(n) // size, torch.arange(n) % size
    (out[torch.arange(n), :, rows, cols] * weights).sum().backward()
    raster = torch.arange(n).reshape(size, size)
    for pos in range(n):
        grad = x.grad[pos]
        later = (raster >= pos).expand(3, size, size)
        assert torch.all(grad[later] == 0), f"{conditioning}: output {divmod(pos, size)} sees itself or later"
        if pos:
            assert grad[~later].abs().sum() > 0, (
                f"{conditioning}: output {divmod(pos, size)} sees no earlier pixel"
            )


@pytest.mark.parametrize("conditioning", [c for c in CONDITIONING_VARIANTS if c != "none"])
def test_label_changes_output(conditioning: str) -> None:
    model = tiny_model(conditioning)
    x = grid_images(1, 8)
    a, b = model(x, torch.tensor([0])), model(x, torch.tensor([1]))
    assert not torch.allclose(a[..., 1:, :], b[..., 1:, :])


def test_unconditional_ignores_labels() -> None:
    model = tiny_model("none")
    x = grid_images(1, 8)
    assert torch.equal(model(x, torch.tensor([0])), model(x, None))


def test_bad_inputs_rejected() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="labels"):
        model(grid_images(2, 8), None)
    with pytest.raises(ValueError, match="lie in"):
        model(grid_images(1, 8), torch.tensor([4]))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.zeros(1, 3, 10, 10), torch.tensor([0]))
    with pytest.raises(ValueError, match="unknown conditioning"):
        ModelConfig(conditioning="magic")


def test_inference_mode_restores_the_callers_mode_also_after_an_error() -> None:
    model = tiny_model().train()
    x = torch.zeros(1, 3, 8, 8)
    with inference(model):
        assert not model.training and not model(x, torch.tensor([0])).requires_grad
    assert model.training
    with pytest.raises(RuntimeError, match="inside"):
        with inference(model):
            raise RuntimeError("inside")
    assert model.training and torch.is_grad_enabled()
