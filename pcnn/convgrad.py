"""A stride-1 convolution whose weight gradient is computed as a few large matrix products (CPU).

oneDNN's weight-gradient kernel was the slowest part of the CPU training step: for the model's 2x3 and
2x2 convolutions it ran at about half the speed of its forward kernel. The weight gradient of a valid
(already padded) stride-1 convolution is, for each kernel tap (i, j),

    dW[:, :, i, j] = sum over output pixels p of  grad_out[p] (outer) input[p + (i, j)].

With the padded input and the output gradient both stored channels-last and the gradient zero-padded to
the input's width and height, "p + (i, j)" is one constant offset `i * padded_width + j` in the flattened
pixel order, so each tap is a single matrix product of two contiguous row ranges (no im2col copy): the
positions that wrap into the next row or image meet zeros of the padded gradient. On the project's 2-core
CPU (`python benchmarks/conv_weight_grad.py --reps 40`, one run) this took 0.82-0.86 of oneDNN's time at
the `cpu` profile's 32x32 layers (batch 16) and 0.67-0.68 at the 256-channel 32x32 layers of the `seed`
width (batch 32); small layers stay with oneDNN (`MIN_PIXELS`). The forward and the input gradient stay
with oneDNN, which is as fast or faster at those.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_PARTS = 2  # the pixel sum is split in two halves, one batched product: MKL spreads it better over threads
# Below this many output pixels (batch x height x width) the products were slower than oneDNN's kernel:
# 1.09x and 1.21x its time at the `cpu` profile's 16x16 and 8x8 layers (batch 16), in the run above.
MIN_PIXELS = 8192


@torch.library.custom_op("pcnn::padded_conv_weight_grad", mutates_args=())
def _weight_grad(padded_input: Tensor, padded_grad: Tensor, kernel_h: int, kernel_w: int) -> Tensor:
    """The weight gradient from the output gradient already zero-padded to the input's size."""
    c, o = padded_input.shape[1], padded_grad.shape[1]
    wp = padded_input.shape[-1]
    x = padded_input.permute(0, 2, 3, 1).contiguous().view(-1, c)  # views when already channels-last
    g = padded_grad.permute(0, 2, 3, 1).contiguous().view(-1, o)
    length = x.shape[0] - (kernel_h - 1) * wp - (kernel_w - 1)  # rows past this are zero in g
    even = length // _PARTS * _PARTS
    halves = g[:even].view(_PARTS, even // _PARTS, o).transpose(1, 2)
    grad = x.new_empty(kernel_h, kernel_w, o, c)
    partial = x.new_empty(_PARTS, o, c)
    for i in range(kernel_h):
        for j in range(kernel_w):
            offset = i * wp + j
            torch.bmm(halves, x[offset : offset + even].view(_PARTS, even // _PARTS, c), out=partial)
            torch.sum(partial, 0, out=grad[i, j])
            if even < length:
                grad[i, j].addmm_(g[even:length].t(), x[offset + even : offset + length])
    return grad.permute(2, 3, 0, 1).contiguous()


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
    def forward(ctx, padded_input: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(padded_input, weight)
        return F.conv2d(padded_input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        padded_input, weight = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad_output, padded_input, weight, None,
                (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (True, False, False),
            )[0]  # fmt: skip
        kernel_h, kernel_w = weight.shape[-2:]
        grad_weight = padded_conv_weight_grad(padded_input, grad_output, kernel_h, kernel_w)
        return grad_input, grad_weight, grad_output.sum((0, 2, 3))


def padded_conv2d(padded_input: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """`F.conv2d(padded_input, weight, bias)` (stride 1, input already padded), same values and gradients;
    on a CPU, for layers of at least `MIN_PIXELS` output pixels, its weight gradient is this module's.

    Under CPU autocast it is plain `F.conv2d`: autocast casts inside the forward but not the backward, so the
    saved float32 input would meet a bf16 gradient there."""
    b, _, hp, wp = padded_input.shape
    pixels = b * (hp - weight.shape[2] + 1) * (wp - weight.shape[3] + 1)
    cpu = padded_input.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    if not cpu or pixels < MIN_PIXELS:
        return F.conv2d(padded_input, weight, bias)
    return _PaddedConv.apply(padded_input, weight, bias)
