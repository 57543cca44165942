"""Building blocks of PixelCNN++: weight-normalised causal convolutions and the gated residual layer.

Causality comes from explicit asymmetric zero padding: a *down-shifted* convolution (filter 2x3) pads one
row above and one column on each side, so an output sees its own row and the row above; a
*down-right-shifted* convolution (filter 2x2) pads one row above and one column to the left, so an output
sees the pixels above and to the left. Every convolution records its padding and stride, which is all an
incremental (cached) evaluation needs to compute one output row or position from a window of its input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def concat_elu(x: Tensor) -> Tensor:
    """ELU of both signs, concatenated on channels: keeps information that a single ELU would squash."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: Tensor) -> Tensor:
    """Shift a feature map one row down (zero row on top), so a position stops seeing its own row."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: Tensor) -> Tensor:
    """Shift a feature map one column right (zero column on the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class WeightNorm(nn.Module):
    """Weight normalisation (Salimans & Kingma 2016): weight = g * v / ||v||, one norm per output unit.

    The direction `v` and gain `g` are the parameters; the effective weight is recomputed from them on every
    call so that gradients flow to both.
    """

    def __init__(self, shape: tuple[int, ...], out_dim: int = 0) -> None:
        super().__init__()
        v = torch.randn(shape) * 0.05
        self.out_dim = out_dim
        self.v = nn.Parameter(v)
        self.g = nn.Parameter(self._norm(v))

    def _norm(self, v: Tensor) -> Tensor:
        dims = [d for d in range(v.dim()) if d != self.out_dim]
        return v.pow(2).sum(dim=dims, keepdim=True).sqrt()

    def weight(self) -> Tensor:
        return self.v * (self.g / self._norm(self.v))


class ShiftedConv2d(nn.Module):
    """Weight-normalised convolution with explicit (left, right, top, bottom) zero padding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int],
        padding: tuple[int, int, int, int],
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.padding = padding
        self.stride = stride
        self.wn = WeightNorm((out_channels, in_channels, *kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, self.padding), self.wn.weight(), self.bias, stride=self.stride)


def down_shifted_conv(
    cin: int, cout: int, kernel: tuple[int, int] = (2, 3), stride: int = 1
) -> ShiftedConv2d:
    """A convolution whose output at (i, j) sees input rows i-kh+1..i and the columns centred on j."""
    kh, kw = kernel
    return ShiftedConv2d(cin, cout, kernel, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0), stride)


def down_right_shifted_conv(
    cin: int, cout: int, kernel: tuple[int, int] = (2, 2), stride: int = 1
) -> ShiftedConv2d:
    """A convolution whose output at (i, j) sees input rows i-kh+1..i and columns j-kw+1..j."""
    kh, kw = kernel
    return ShiftedConv2d(cin, cout, kernel, (kw - 1, 0, kh - 1, 0), stride)


class ShiftedDeconv2d(nn.Module):
    """Weight-normalised stride-2 transposed convolution, cropped to keep the causal alignment.

    With `kernel=(2, 3)` (down-shifted) output row r depends on input row r // 2 only and the crop drops one
    column on each side; with `kernel=(2, 2)` (down-right-shifted) output (r, c) depends on input
    (r // 2, c // 2) only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.wn = WeightNorm((in_channels, out_channels, *kernel), out_dim=1)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.crop_left = (kernel[1] - 1) // 2 if kernel[1] == 3 else 0

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        y = F.conv_transpose2d(x, self.wn.weight(), self.bias, stride=2)
        return y[:, :, : 2 * h, self.crop_left : self.crop_left + 2 * w]


class NIN(nn.Module):
    """Weight-normalised 1x1 convolution ("network in network")."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.wn = WeightNorm((out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("oc,bchw->bohw", self.wn.weight(), x) + self.bias.view(1, -1, 1, 1)


class GatedResnet(nn.Module):
    """Gated residual layer: out = x + a * sigmoid(b), the label entering as in docs/design.md#conditioning.

    `conv_factory(cin, cout)` builds this stream's causal convolution; `skip_channels` is the width of the
    optional skip input (0 for none).
    """

    def __init__(
        self,
        nr_filters: int,
        conv_factory,
        skip_channels: int,
        conditioning: str,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        f = nr_filters
        self.conditioning = conditioning
        self.conv_in = conv_factory(2 * f, f)
        self.skip = NIN(2 * skip_channels, f) if skip_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv_factory(2 * f, 2 * f)
        if conditioning == "gated-bias":
            self.label_ab = nn.Linear(num_classes, 2 * f, bias=False)  # rows: W_a then W_b
        elif conditioning == "per-layer-input":
            self.label_in = nn.Linear(num_classes, f, bias=False)
        elif conditioning == "spatial":
            self.label_map = NIN(f, 2 * f)
        elif conditioning == "film":
            self.film = nn.Linear(num_classes, 4 * f)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        for name in ("label_ab", "label_in"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name).weight, std=0.01)

    def forward(self, x: Tensor, skip: Tensor | None = None, label: LabelContext | None = None) -> Tensor:
        h_in = x
        if self.conditioning == "per-layer-input":
            h_in = x + self.label_in(label.one_hot)[:, :, None, None]
        h = self.conv_in(concat_elu(h_in))
        if self.skip is not None:
            h = h + self.skip(concat_elu(skip))
        h = self.conv_out(self.dropout(concat_elu(h)))
        h = self.condition_output(h, label, x.shape[-1])
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    def condition_output(self, h: Tensor, label: LabelContext | None, width: int) -> Tensor:
        """Add the label's contribution to the gate inputs (a, b) after conv_out."""
        if self.conditioning == "gated-bias":
            return h + self.label_ab(label.one_hot)[:, :, None, None]
        if self.conditioning == "single-matrix":
            return h + label.shared[:, :, None, None]
        if self.conditioning == "spatial":
            return h + self.label_map(label.spatial_for(width))
        if self.conditioning == "film":
            gamma, beta = self.film(label.one_hot)[:, :, None, None].chunk(2, dim=1)
            return (1 + gamma) * h + beta
        return h


class LabelContext:
    """What every layer needs to know about the batch's labels, computed once per forward pass."""

    def __init__(
        self, one_hot: Tensor, shared: Tensor | None = None, spatial: dict[int, Tensor] | None = None
    ):
        self.one_hot = one_hot
        self.shared = shared
        self.spatial = spatial or {}

    def spatial_for(self, width: int) -> Tensor:
        return self.spatial[width]
