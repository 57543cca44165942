"""The padded convolution's hand-written weight gradient is the convolution's exact gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pcnn.fast import convgrad
from pcnn.fast.convgrad import padded_conv2d, padded_conv_weight_grad

# Compares computations that round differently on other CPUs: run again under AVX2 kernels (Makefile).
pytestmark = pytest.mark.isa_sensitive

# (kernel, padding (left, right, top, bottom)) of the model's stride-1 convolutions
SHIFTED = [((2, 3), (1, 1, 1, 0)), ((2, 2), (1, 0, 1, 0)), ((1, 3), (1, 1, 0, 0)), ((2, 1), (0, 0, 1, 0))]


@pytest.fixture
def every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test layers take the matrix-product weight gradient too (not only layers of MIN_PIXELS pixels
    and MIN_CHANNELS channels)."""
    monkeypatch.setattr(convgrad, "MIN_PIXELS", 0)
    monkeypatch.setattr(convgrad, "MIN_CHANNELS", 0)


@pytest.mark.usefixtures("every_layer")
@pytest.mark.parametrize("padding_known", [True, False], ids=["interior-input-grad", "full-input-grad"])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("kernel", "padding"), SHIFTED)
def test_gradients_match_conv2d_and_pass_gradcheck(kernel, padding, channels_last, padding_known) -> None:
    torch.manual_seed(0)
    # batch 3 of 5x5 images: an odd number of pixel rows, so the unpaired last row is exercised too
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(6, 4, *kernel, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(3, 6, 5, 5, dtype=torch.float64)
    want_y = F.conv2d(F.pad(x, padding), weight, bias)
    known = padding if padding_known else None
    got_y = padded_conv2d(F.pad(x, padding), weight, bias, known)
    assert type(got_y.grad_fn).__name__ == "_PaddedConvBackward"
    assert torch.equal(got_y, want_y)
    want = torch.autograd.grad(want_y, (x, weight, bias), grad_out)
    got = torch.autograd.grad(got_y, (x, weight, bias), grad_out)
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda *t: padded_conv2d(F.pad(t[0], padding), t[1], t[2], known), (x, weight, bias)
    )


def test_weight_gradient_of_a_real_sized_float32_layer() -> None:
    """A 32x32 layer in float32: the matrix-product sums agree with oneDNN's kernel to float rounding."""
    torch.manual_seed(1)
    xp = F.pad(torch.randn(4, 16, 32, 32), (1, 1, 1, 0)).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(4, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8, 16, 2, 3)
    want = torch.ops.aten.convolution_backward(
        grad_out, xp, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (False, True, False)
    )[1]
    got = padded_conv_weight_grad(xp, grad_out, 2, 3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


def test_without_the_kernel_only_large_layers_take_the_products(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pcnn.fast.native cannot run, layers of fewer than MIN_PIXELS pixels or MIN_CHANNELS input
    channels keep oneDNN's backward (the products lose there)."""
    monkeypatch.setattr(convgrad.native, "available", lambda: False)
    side = int((convgrad.MIN_PIXELS / 2) ** 0.5) + 1  # two images just past the threshold
    c = convgrad.MIN_CHANNELS

    def takes_products(channels: int, height: int, width: int) -> bool:
        weight, bias = torch.randn(4, channels, 2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
        y = padded_conv2d(torch.randn(2, channels, height, width), weight, bias)
        return type(y.grad_fn).__name__ == "_PaddedConvBackward"

    assert takes_products(c, side + 1, side + 2)
    assert not takes_products(c, 5, 6)
    assert not takes_products(c - 1, side + 1, side + 2)


@pytest.mark.usefixtures("every_layer")
def test_only_the_weight_and_bias_get_gradients_when_the_input_needs_none() -> None:
    xp = torch.randn(2, 3, 5, 6)
    weight = torch.randn(4, 3, 2, 3, requires_grad=True)
    bias = torch.zeros(4, requires_grad=True)
    padded_conv2d(xp, weight, bias).sum().backward()
    assert xp.grad is None and weight.grad is not None
    torch.testing.assert_close(bias.grad, torch.full((4,), 2.0 * 4 * 4))


@pytest.mark.usefixtures("every_layer")
def test_cpu_autocast_falls_back_to_conv2d() -> None:
    """bf16 autocast casts inside the forward only; the layer then trains through F.conv2d itself."""
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight, bias = torch.randn(4, 3, 2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = padded_conv2d(x, weight, bias)
    assert y.dtype == torch.bfloat16 and type(y.grad_fn).__name__ != "_PaddedConvBackward"
    y.float().sum().backward()
    assert weight.grad is not None and x.grad is not None


@pytest.mark.usefixtures("every_layer")
def test_with_the_padding_known_only_the_interior_gets_an_input_gradient() -> None:
    """The border's gradient is never used (F.pad's backward drops it), so it is returned as zero."""
    padded = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight, bias = torch.randn(4, 3, 2, 3), torch.zeros(4)
    padded_conv2d(padded, weight, bias, (1, 1, 1, 0)).sum().backward()
    assert padded.grad[:, :, 0].abs().sum() == 0 and padded.grad[:, :, :, [0, -1]].abs().sum() == 0
    want = torch.autograd.grad(F.conv2d(padded, weight, bias).sum(), padded)[0]
    torch.testing.assert_close(padded.grad[:, :, 1:, 1:-1], want[:, :, 1:, 1:-1])
