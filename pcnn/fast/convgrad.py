"""A stride-1 convolution on a padded input with faster CPU gradients than oneDNN's backward kernels.

oneDNN's weight-gradient kernel was the slowest part of the CPU training step: for the model's 2x3 and
2x2 convolutions it ran at about half the speed of its forward kernel. The weight gradient of a valid
(already padded) stride-1 convolution is, for each kernel tap (i, j),

    dW[:, :, i, j] = sum over output pixels p of  grad_out[p] (outer) input[p + (i, j)].

With the padded input and the output gradient both stored channels-last and the gradient zero-padded to
the input's width and height, "p + (i, j)" is one constant offset `i * padded_width + j` in the flattened
pixel order, so each tap is a single matrix product of two contiguous row ranges (no im2col copy): the
positions that wrap into the next row or image meet zeros of the padded gradient. `pcnn.fast.native` computes
all taps in one pass of a hand-written AVX2 kernel that copies each block of the input once for every tap;
where it cannot run (`pcnn.fast.native.available()`), each tap is a torch matrix product. On the project's
2-core CPU (`python benchmarks/conv_weight_grad.py`, one thread) the products took 0.82-0.86 of oneDNN's
time at the `cpu` profile's 32x32 layers (batch 16) and 0.67-0.68 at the 256-channel 32x32 layers of the
`seed` width (batch 32), but more than oneDNN at smaller layers (`MIN_PIXELS`) and at the 4-channel input
layers (`MIN_CHANNELS`), which then keep oneDNN's backward; the native kernel is faster than both at every
layer it takes (docs/performance.md#convolution-gradients).

The input gradient, when the caller says which zero border it padded (`padding`), is computed for the
interior only, as a forward convolution of the output gradient with the flipped weight: oneDNN's forward
kernel is faster than its backward-data kernel at these shapes, and the border's gradient is dropped by
F.pad's backward anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcnn.fast import native
from pcnn.fast.native import CHANNEL_MULTIPLE

_PARTS = 2  # the pixel sum is split in two halves, one batched product: MKL spreads it better over threads
# Below this many output pixels (batch x height x width) the torch products were slower than oneDNN's
# kernel (1.09x and 1.21x its time at the `cpu` profile's 16x16 and 8x8 layers, batch 16), so such layers
# keep oneDNN's backward unless the native kernel runs, which is faster at every size.
MIN_PIXELS = 8192
# Nor do the products pay with few input channels: at the model's input layers (3 colours and a channel of
# ones) they took 4-10x oneDNN's time (1.1-3.1 ms against 0.19-0.32 ms, batch 8, 32x32, one thread), so those
# keep oneDNN's backward too; every other layer has at least 2 x nr_filters input channels.
MIN_CHANNELS = 16


@torch.library.custom_op("pcnn::padded_conv_weight_grad", mutates_args=())
def _weight_grad(padded_input: Tensor, padded_grad: Tensor, kernel_h: int, kernel_w: int) -> Tensor:
    """The weight gradient from the output gradient already zero-padded to the input's size."""
    c, o = padded_input.shape[1], padded_grad.shape[1]
    wp = padded_input.shape[-1]
    x = padded_input.permute(0, 2, 3, 1).contiguous().view(-1, c)  # views when already channels-last
    g = padded_grad.permute(0, 2, 3, 1).contiguous().view(-1, o)
    length = x.shape[0] - (kernel_h - 1) * wp - (kernel_w - 1)  # rows past this are zero in g
    offsets = [i * wp + j for i in range(kernel_h) for j in range(kernel_w)]
    taps = native.conv_weight_grad if _takes_native(x) else _tap_products
    grad = taps(x, g, offsets, length).view(kernel_h, kernel_w, o, c)
    return grad.permute(2, 3, 0, 1).contiguous()


def _takes_native(x: Tensor) -> bool:
    """Whether pcnn.fast.native's kernel runs here and takes x's dtype and channels (dim 1)."""
    return x.dtype == torch.float32 and x.shape[1] % CHANNEL_MULTIPLE == 0 and native.available()


def _tap_products(x: Tensor, g: Tensor, offsets: list[int], length: int) -> Tensor:
    """The taps' sums as torch matrix products (the kernel's fallback): (taps, O, C)."""
    o, c = g.shape[1], x.shape[1]
    even = length // _PARTS * _PARTS
    halves = g[:even].view(_PARTS, even // _PARTS, o).transpose(1, 2)
    grad = x.new_empty(len(offsets), o, c)
    partial = x.new_empty(_PARTS, o, c)
    for tap, offset in enumerate(offsets):
        torch.bmm(halves, x[offset : offset + even].view(_PARTS, even // _PARTS, c), out=partial)
        torch.sum(partial, 0, out=grad[tap])
        if even < length:
            grad[tap].addmm_(g[even:length].t(), x[offset + even : offset + length])
    return grad


@_weight_grad.register_fake
def _(padded_input: Tensor, padded_grad: Tensor, kernel_h: int, kernel_w: int) -> Tensor:
    return padded_input.new_empty(padded_grad.shape[1], padded_input.shape[1], kernel_h, kernel_w)


def _pad_to_input(grad_output: Tensor, padded_input: Tensor) -> Tensor:
    """The output gradient zero-padded at the bottom and right to the input's size, channels-last.

    Done outside the custom op so that, compiled, it is one fused pass that also writes the zeros (inside,
    a fill and a copy per layer took about 2% of the step)."""
    hp, wp = padded_input.shape[-2:]
    h, w = grad_output.shape[-2:]
    padded = F.pad(grad_output, (0, wp - w, 0, hp - h))
    return padded.contiguous(memory_format=torch.channels_last)


def padded_conv_weight_grad(
    padded_input: Tensor, grad_output: Tensor, kernel_h: int, kernel_w: int
) -> Tensor:
    """The weight gradient of `conv2d(padded_input, weight)` (stride 1, no padding), shaped like weight."""
    return _weight_grad(padded_input, _pad_to_input(grad_output, padded_input), kernel_h, kernel_w)


class _PaddedConv(torch.autograd.Function):
    """conv2d(padded_input, weight, bias) at stride 1, with the weight gradient above."""

    @staticmethod
    def forward(
        ctx, padded_input: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int, int, int] | None
    ) -> Tensor:
        ctx.save_for_backward(padded_input, weight)
        ctx.padding = padding
        return F.conv2d(padded_input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, Tensor, Tensor, None]:
        padded_input, weight = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = _input_grad(grad_output, padded_input, weight, ctx.padding)
        kernel_h, kernel_w = weight.shape[-2:]
        grad_weight = padded_conv_weight_grad(padded_input, grad_output, kernel_h, kernel_w)
        return grad_input, grad_weight, grad_output.sum((0, 2, 3)), None


def _input_grad(
    grad_output: Tensor, padded_input: Tensor, weight: Tensor, padding: tuple[int, int, int, int] | None
) -> Tensor:
    """The gradient of the padded input; with `padding` known, only its interior (zeros on the border).

    The interior's gradient is a forward convolution of the output gradient, padded by the kernel size
    less `padding`, with the flipped and transposed weight: oneDNN's forward kernel ran it faster than its
    backward-data kernel computed the whole padded grid (1.02-1.12x on the `cpu` profile's layers)."""
    kh, kw = weight.shape[-2:]
    if padding is not None:
        left, right, top, bottom = padding
        full = (kw - 1 - left, kw - 1 - right, kh - 1 - top, kh - 1 - bottom)
        if min(full) >= 0:
            interior = F.conv2d(F.pad(grad_output, full), weight.flip(2, 3).transpose(0, 1))
            return F.pad(interior, padding)
    return torch.ops.aten.convolution_backward(
        grad_output, padded_input, weight, None,
        (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, False, False),
    )[0]  # fmt: skip


def padded_conv2d(
    padded_input: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int, int, int] | None = None
) -> Tensor:
    """`F.conv2d(padded_input, weight, bias)` (stride 1, input already padded), same values and gradients;
    on a CPU its weight gradient is this module's (where pcnn.fast.native's kernel does not run, only for
    layers of at least `MIN_PIXELS` output pixels and `MIN_CHANNELS` input channels). `padding` (left,
    right, top, bottom), when given, is the zero border that F.pad added to make `padded_input`: its
    gradient, which F.pad's backward drops, is then returned as zero and not computed.

    Under CPU autocast it is plain `F.conv2d`: autocast casts inside the forward but not the backward, so the
    saved float32 input would meet a bf16 gradient there."""
    b, c, hp, wp = padded_input.shape
    pixels = b * (hp - weight.shape[2] + 1) * (wp - weight.shape[3] + 1)
    cpu = padded_input.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    products_pay = pixels >= MIN_PIXELS and c >= MIN_CHANNELS
    if not cpu or not (products_pay or _takes_native(padded_input)):
        return F.conv2d(padded_input, weight, bias)
    return _PaddedConv.apply(padded_input, weight, bias, padding)
