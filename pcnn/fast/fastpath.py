"""A faster training forward for PixelCNN++G: the same function as `PixelCNNPP.forward`, restructured.

`FastForward(model)(x, labels)` reads the model's own parameters (so training it trains the model) and
returns the same DMoL parameters as `model(x, labels)` up to float rounding, with dropout drawn from the
same distribution (its rate rounded to a multiple of 2**-16). What it does differently, and why:

- The 1x1 "network in network" layers are plain (batched) matrix products, with no permute copies, in
  either activation layout; `channels_last=True` keeps activations NHWC, which tensor-core convolutions
  on GPUs prefer and oneDNN's CPU convolutions now run slightly faster in too.
- Each concat_elu is computed once per tensor and shared: a `u` output feeds both the next `u` layer and
  the `ul` layer's skip input, and the up-pass outputs are reused as down-pass skips.
- The down pass's skip `concat_elu(cat(u, ul_skip))` is never built: its 1x1 layer is split into one
  matrix product per part, each added to the convolution output inside the product (`addmm`), with the
  two biases folded into the convolution's.
- concat_elu takes one exp per element (not two expm1s) and a hand-written gradient that needs no more
  (`_ConcatElu`): on a CPU, exps were most of the time of the step's element-wise kernels.
- Dropout on a CPU splits each random 64-bit word into several mask draws (64 for p = 0.5, 4 otherwise)
  instead of one generator call per element (the element-wise Bernoulli sampler dominated the step). It
  is applied to the next convolution's padded input, where inductor vectorises the mask's loads.
  GPUs use `F.dropout`, which is cheap there and which torch.compile fuses.
- The gate `x + a * sigmoid(b)` is one fused multiply-add.
- On a CPU the stride-1 convolutions take their gradients from `pcnn.fast.convgrad`: the weight gradient from
  a hand-written kernel (`pcnn.fast.native`; a few large matrix products where it cannot run) and the input
  gradient of the unpadded interior only, through oneDNN's forward kernel; both are faster there than
  oneDNN's backward kernels.

The model's module names and state dict are untouched: checkpoints, the cached sampler and evaluation
keep using `PixelCNNPP` itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcnn.config import ModelConfig
from pcnn.core.layers import NIN, GatedResnet, LabelContext, ShiftedConv2d, ShiftedDeconv2d
from pcnn.core.layers import concat_elu as plain_concat_elu
from pcnn.core.model import NUM_SCALES, PixelCNNPP
from pcnn.fast.convgrad import padded_conv2d

_BITS = 64


def _random_words(draws: int, per_word: int, device: torch.device) -> Tensor:
    """Enough uniformly random 64-bit words for `draws` draws taking `per_word` draws from each word."""
    count = (draws + per_word - 1) // per_word
    return torch.randint(-(2**63), 2**63 - 1, (count,), dtype=torch.int64, device=device)


def _drop_threshold(p: float) -> int:
    """The rate p in steps of 2**-16: a 16-bit slice whose unsigned value is below this is dropped."""
    return round(p * 2**16)


def _dropout_scale(like: Tensor, p: float) -> Tensor:
    """Dropout as a multiplier shaped like `like`: 0 with probability p, else 1/(1-p), in `like`'s dtype.

    torch's element-wise Bernoulli sampler calls the generator once per element, which dominated the CPU
    step; this draws random 64-bit words and splits each into several draws. For p = 0.5 every bit is one
    fair draw (64 per word, through a 256-entry table of byte patterns). Any other p compares 16-bit
    slices with a threshold (4 per word), so the rate is p rounded to a multiple of 2**-16 and the kept
    units are scaled by that rate's 1/(1-p), keeping the mean exactly 1. Mixed-dtype element-wise
    operations are many times slower than same-dtype ones on a CPU, so the multiplier is built in `like`'s
    dtype directly.
    """
    n = like.numel()
    device = like.device
    if p == 0.5:
        words = _random_words(n, _BITS, device)
        patterns = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
        table = patterns.to(like.dtype) * 2.0
        scale = table.index_select(0, words.view(torch.uint8).long()).flatten()[:n]
    else:
        threshold = _drop_threshold(p)
        kept = _random_words(n, 4, device).view(torch.int16)[:n] >= threshold - 2**15
        scale = kept.to(like.dtype) * (2**16 / (2**16 - threshold))
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        b, c, h, w = like.shape
        return scale.view(b, h, w, c).permute(0, 3, 1, 2)
    return scale.view(like.shape)


_EXPM1_TAYLOR = [1 / math.factorial(k) for k in range(2, 10)]  # expm1(y) = y + y^2 (1/2! + y/3! + ...)


def _expm1_of_negative(a: Tensor) -> Tensor:
    """expm1(-a) for a >= 0 from one exp: exp(-a) - 1, except below 1/2 where that would cancel, there its
    Taylor series (truncation error under 1e-9 relative): within a float32 ulp. On a CPU torch's expm1 costs
    twice its exp (SLEEF's vector kernels), and exps were most of the step's element-wise time."""
    y = -a
    series = y * _EXPM1_TAYLOR[-1] + _EXPM1_TAYLOR[-2]
    for c in reversed(_EXPM1_TAYLOR[:-2]):
        series = series * y + c
    return torch.where(a < 0.5, y + y * y * series, torch.exp(y) - 1)


class _ConcatElu(torch.autograd.Function):
    """concat_elu(x) = elu(cat(x, -x)) with one exp per input element instead of two expm1s in the forward
    and two more exps in the backward: the pair is (x, expm1(-x)) where x > 0 and (expm1(x), -x) elsewhere,
    so e = expm1(-|x|) serves both halves. The backward reads the sign and the slope exp(-|x|) = e + 1 from
    the output, which later layers keep anyway: given x instead, the compiled step recomputed every exp
    (inductor's partitioner saves x and recomputes), 1.02x slower at nf 40."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        positive = x > 0
        e = _expm1_of_negative(x.abs())
        y = torch.cat([torch.where(positive, x, e), torch.where(positive, e, -x)], dim=1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        y_pos, y_neg = y.chunk(2, dim=1)
        positive = y_pos > 0
        slope = torch.where(positive, y_neg, y_pos) + 1
        grad_pos, grad_neg = grad.chunk(2, dim=1)
        return torch.where(positive, grad_pos - grad_neg * slope, grad_pos * slope - grad_neg)


def concat_elu(x: Tensor) -> Tensor:
    """`pcnn.core.layers.concat_elu`; compiled with a gradient, `_ConcatElu`. Eagerly its several passes over
    memory cost more than the exps they save (0.9x the step's speed at nf 40), and without a gradient
    there is nothing to save."""
    if torch.compiler.is_compiling() and x.requires_grad:
        return _ConcatElu.apply(x)
    return plain_concat_elu(x)


def _dropout(padded: Tensor, p: float) -> Tensor:
    """Dropout at rate p, applied to a convolution's already padded input (the padding stays zero).

    Dropping after the padding keeps every load of the CPU mask unmasked, which inductor vectorises; on
    the unpadded tensor the fused pad-and-drop kernel read the mask byte by byte (a 3x slower kernel).
    """
    if padded.device.type == "cpu" and 0 < _drop_threshold(p) < 2**16:
        return padded * _dropout_scale(padded, p)
    return F.dropout(padded, p, training=True)


class _Act:
    """An activation and, computed at most once, its concat_elu (shared by every layer that reads it)."""

    __slots__ = ("t", "_ce")

    def __init__(self, t: Tensor) -> None:
        self.t = t
        self._ce: Tensor | None = None

    @property
    def ce(self) -> Tensor:
        if self._ce is None:
            self._ce = concat_elu(self.t)
        return self._ce


def _conv(
    layer: ShiftedConv2d,
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    dropout: float = 0.0,
) -> Tensor:
    """The layer's convolution, with its input dropped out at rate `dropout` first."""
    weight = layer.wn.weight() if weight is None else weight
    bias = layer.bias if bias is None else bias
    padded = F.pad(x, layer.padding)
    if dropout > 0:
        padded = _dropout(padded, dropout)
    if layer.stride == 1:
        return padded_conv2d(padded, weight, bias, layer.padding)
    return F.conv2d(padded, weight, bias, stride=layer.stride)


def _deconv(layer: ShiftedDeconv2d, x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    y = F.conv_transpose2d(x, layer.wn.weight(), layer.bias, stride=2)
    return y[:, :, : 2 * h, layer.crop_left : layer.crop_left + 2 * w]


def _plus_nin(out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """out + 1x1 convolution of x (no bias): one matrix product with the sum fused in."""
    b, c, h, w = x.shape
    o = out.shape[1]
    channels_last = torch.channels_last
    if x.is_contiguous(memory_format=channels_last) and out.is_contiguous(memory_format=channels_last):
        flat = torch.addmm(
            out.permute(0, 2, 3, 1).reshape(-1, o), x.permute(0, 2, 3, 1).reshape(-1, c), weight.t()
        )
        return flat.view(b, h, w, o).permute(0, 3, 1, 2)
    if x.is_contiguous() and out.is_contiguous():
        return torch.baddbmm(out.view(b, o, h * w), weight.expand(b, o, c), x.view(b, c, h * w)).view(
            b, o, h, w
        )
    return out + torch.einsum("oc,bchw->bohw", weight, x)


def _output_nin(layer: NIN, x: Tensor) -> Tensor:
    """The output 1x1 layer, producing channels-last DMoL parameters in either input layout.

    The fused likelihood reads each pixel's mixture parameters contiguously in that layout; from NCHW
    input the product takes the input transposed, which the matrix kernel reads without a copy.
    """
    b, c, h, w = x.shape
    weight = layer.wn.weight()
    if x.is_contiguous(memory_format=torch.channels_last):
        y = torch.addmm(layer.bias, x.permute(0, 2, 3, 1).reshape(-1, c), weight.t())
    else:
        y = torch.matmul(x.reshape(b, c, h * w).transpose(1, 2), weight.t()) + layer.bias
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)


def _skip_weights(layer: NIN, parts: list[int]) -> list[Tensor]:
    """Split the 1x1 weight acting on concat_elu(cat(parts)) into one weight per part's concat_elu.

    concat_elu(cat(a, b)) orders channels [elu(a), elu(b), elu(-a), elu(-b)]; part i's own concat_elu is
    [elu(s_i), elu(-s_i)], so its weight takes the matching column blocks of both halves.
    """
    weight = layer.wn.weight()
    total = sum(parts)
    out, start = [], 0
    for size in parts:
        out.append(
            torch.cat([weight[:, start : start + size], weight[:, total + start : total + start + size]], 1)
        )
        start += size
    return out


def _resnet(
    layer: GatedResnet, x: _Act, skips: list[_Act], label: LabelContext | None, training: bool
) -> _Act:
    """GatedResnet.forward with shared concat_elus, split skip products and the fast dropout."""
    if layer.conditioning == "per-layer-input":
        ce_in = F.elu(torch.cat([x.t, -x.t], dim=1) + _signed(layer.label_in(label.one_hot)))
    else:
        ce_in = x.ce
    bias = layer.conv_in.bias if layer.skip is None else layer.conv_in.bias + layer.skip.bias
    h = _conv(layer.conv_in, ce_in, bias=bias)
    if layer.skip is not None:
        for part, weight in zip(skips, _skip_weights(layer.skip, [s.t.shape[1] for s in skips])):
            h = _plus_nin(h, part.ce, weight)
    h = _conv(layer.conv_out, concat_elu(h), dropout=layer.dropout.p if training else 0.0)
    h = layer.condition_output(h, label, x.t.shape[-1])
    a, b = h.chunk(2, dim=1)
    return _Act(torch.addcmul(x.t, a, torch.sigmoid(b)))


def _signed(term: Tensor) -> Tensor:
    """The per-layer input embedding e as it enters concat_elu(x + e): [+e, -e] on channels, broadcast."""
    return torch.cat([term, -term], dim=1)[:, :, None, None]


def _down_shift(x: Tensor) -> Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def _right_shift(x: Tensor) -> Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class FastForward(nn.Module):
    """Training forward of a `PixelCNNPP` (module docstring); `channels_last` picks the activation layout.

    It also scores faster in eval mode (no dropout), so the trainer evaluates through it too.
    """

    def __init__(self, model: PixelCNNPP, channels_last: bool = True) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    @property
    def config(self) -> ModelConfig:
        """The wrapped model's config, so that classification and evaluation code can take either."""
        return self.model.config

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        m = self.model
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != x.shape[-2] or x.shape[-1] % 4:
            raise ValueError(
                f"expected square images (B, 3, S, S) with S a multiple of 4, got {tuple(x.shape)}"
            )
        training = self.training and m.training
        label = m.label_context(labels, x.shape[0], x.device)
        xin = m.network_input(x, label)
        if self.channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        u_list = [_Act(_down_shift(_conv(m.u_init, xin)))]
        ul_list = [_Act(_down_shift(_conv(m.ul_init_above, xin)) + _right_shift(_conv(m.ul_init_left, xin)))]
        if self.channels_last:
            u_list[0].t = u_list[0].t.contiguous(memory_format=torch.channels_last)
            ul_list[0].t = ul_list[0].t.contiguous(memory_format=torch.channels_last)
        for scale in range(NUM_SCALES):
            for u_layer, ul_layer in zip(m.up_u[scale], m.up_ul[scale]):
                u_list.append(_resnet(u_layer, u_list[-1], [], label, training))
                ul_list.append(_resnet(ul_layer, ul_list[-1], [u_list[-1]], label, training))
            if scale < NUM_SCALES - 1:
                u_list.append(_Act(_conv(m.downsize_u[scale], u_list[-1].t)))
                ul_list.append(_Act(_conv(m.downsize_ul[scale], ul_list[-1].t)))
        u, ul = u_list.pop(), ul_list.pop()
        for scale in range(NUM_SCALES):
            for u_layer, ul_layer in zip(m.down_u[scale], m.down_ul[scale]):
                u = _resnet(u_layer, u, [u_list.pop()], label, training)
                ul = _resnet(ul_layer, ul, [u, ul_list.pop()], label, training)
            if scale < NUM_SCALES - 1:
                u = _Act(_deconv(m.upsize_u[scale], u.t))
                ul = _Act(_deconv(m.upsize_ul[scale], ul.t))
        return _output_nin(m.out, F.elu(ul.t))
