"""Sampling from PixelCNN++G (docs/design.md#sampling): a naive sampler and the exact cached sampler.

Both samplers share one randomness rule so that, with the same generator state, they return the same
images: at each pixel in raster order draw `torch.rand(B, M)` (a Gumbel-max choice of the mixture
component), then `torch.rand(B, 3)` (the logistic noise of R, G and B), both in float32 on the generator's
device and clamped to [1e-5, 1 - 1e-5]. Within a pixel R is drawn first, then G with its mean shifted by
c0 * R, then B with c1 * R + c2 * G. Every value is clamped to [-1, 1] and rounded to the 256-level grid
*before* it conditions the next channel: the likelihood conditions on the grid value, so this samples the
model's own distribution exactly. Temperature T divides the mixture logits and multiplies every logistic
scale.

`naive` runs the whole network once per pixel. `cached` is the incremental sampler of Ramachandran et al.
2017 ("Fast Generation for Convolutional Autoregressive Models") written for this architecture:

- The `u` stream (down-shifted 2x3 convolutions, initial output shifted down a row) at row r depends on
  image rows < r only, so all of its layers, at every scale, compute one whole row when pixel (r, 0) is
  about to be drawn: full-resolution row r, half-resolution row r/2 when r is even, quarter-resolution
  row r/4 when r % 4 == 0. The transposed 2x3 layer turns one input row into two output rows.
- The `ul` stream (down-right-shifted 2x2 convolutions) at (r, c) depends on pixels before (r, c) in
  raster order, so it is computed position by position: full resolution at every step, half resolution at
  (r/2, c/2) when r and c are even, quarter resolution when both are multiples of 4. The transposed 2x2
  layer turns one input position into a 2x2 block of outputs.
- Each convolution keeps the input rows its causal window still needs (its cache). A position-wise
  convolution adds the window's previous-row part once per output row (`_PosConv.top`) and multiplies
  only the current row's `kw` inputs at each position; the skip input that comes from the `u` stream and
  the label terms are folded into that per-row part as well.

`cached_params` runs the cached machinery on a given image (teacher forcing) and returns what one full
forward pass returns; the tests compare the two for every conditioning variant.

Completion (`sample(..., prefix=, prefix_rows=)`, `complete`): known top rows are fed like drawn ones but
draw no noise, so both samplers still consume the generator identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pcnn.core.layers import GatedResnet, LabelContext, ShiftedConv2d, ShiftedDeconv2d, concat_elu
from pcnn.core.likelihood import split_params
from pcnn.core.model import NUM_SCALES, PixelCNNPP, inference, unwrap

METHODS = ("cached", "naive")
NOISE_EPS = 1e-5


# ----------------------------------------------------------------------------------------- one pixel
def _uniform(shape: tuple[int, int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Uniform noise drawn in float32 on the generator's device, so draws do not depend on the model dtype."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return u.clamp_(NOISE_EPS, 1.0 - NOISE_EPS).to(device=like.device, dtype=like.dtype)


def _to_grid(x: Tensor) -> Tensor:
    """Clamp to [-1, 1] and round to the nearest of the 256 levels k/127.5 - 1 (in place on a temporary)."""
    return torch.add(x, 1.0).mul_(127.5).round_().clamp_(0.0, 255.0).div_(127.5).sub_(1.0)


def draw_pixel(params: Tensor, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
    """Draw one pixel (B, 3) on the grid from its DMoL parameters (B, 10M) by the module's randomness rule.

    Written with few kernels: on a GPU the cached sampler's cost is mostly launches, and this runs per pixel.
    """
    b = params.shape[0]
    logits, means, log_scales, coeffs = split_params(params[:, :, None, None])
    m = logits.shape[1]
    logits = logits.reshape(b, m) if temperature == 1.0 else logits.reshape(b, m) / temperature
    choice = (logits - torch.log(-torch.log(_uniform((b, m), generator, params)))).argmax(dim=1)
    index = choice.view(b, 1, 1, 1, 1).expand(b, 3, 1, 1, 1)
    mean, log_scale, coeff = (t.gather(2, index).view(b, 3) for t in (means, log_scales, coeffs))
    scale = torch.exp(log_scale) if temperature == 1.0 else torch.exp(log_scale) * temperature
    y = torch.addcmul(mean, scale, torch.logit(_uniform((b, 3), generator, params)))  # logistic draws
    red = _to_grid(y[:, 0])
    green = _to_grid(torch.addcmul(y[:, 1], coeff[:, 0], red))
    blue = _to_grid(torch.addcmul(torch.addcmul(y[:, 2], coeff[:, 1], red), coeff[:, 2], green))
    return torch.stack([red, green, blue], dim=1)


# ---------------------------------------------------------------------------- incremental convolutions
class _RowConv:
    """A causal convolution evaluated one output row at a time (the `u` stream and the initial layers).

    It keeps the last kh-1 padded input rows (zeros at first: the top padding); `feed` takes the next input
    row and returns the output row that this input row completes (every `stride`-th row), else None.
    """

    def __init__(self, conv: ShiftedConv2d) -> None:
        self.weight = conv.wn.weight()
        self.bias = conv.bias
        self.kh = conv.kernel[0]
        left, right, top, bottom = conv.padding
        if top != self.kh - 1 or bottom:
            raise ValueError(f"not a down-shifted convolution: padding {conv.padding}, kernel {conv.kernel}")
        self.pad = (left, right)
        self.stride = conv.stride
        self.history: Tensor | None = None
        self.fed = 0

    def feed(self, row: Tensor) -> Tensor | None:
        row = F.pad(row, self.pad)
        if self.history is None:
            self.history = row.new_zeros(row.shape[0], row.shape[1], self.kh - 1, row.shape[3])
        window = torch.cat([self.history, row], dim=2)
        self.history = window[:, :, 1:]
        index, self.fed = self.fed, self.fed + 1
        if index % self.stride:
            return None
        return F.conv2d(window, self.weight, self.bias, stride=self.stride)


class _PosConv:
    """A causal (down-right-shifted) convolution evaluated one output position at a time.

    The previous kh-1 input rows are kept channels-first for one convolution per output row, whose result
    (`top`, (B, W_out, C_out), bias included; callers add their own per-row terms to it) is the window's
    part above the current row. The current input row is kept channels-last with the left padding, so
    the window's current-row part is a view and a position costs one matrix product.
    """

    def __init__(self, conv: ShiftedConv2d, batch: int, in_width: int) -> None:
        weight = conv.wn.weight()
        cout, cin, kh, kw = weight.shape
        left, right, top, bottom = conv.padding
        if kh < 2 or (left, right, top, bottom) != (kw - 1, 0, kh - 1, 0):
            raise ValueError(f"not a down-right-shifted conv: padding {conv.padding}, kernel {conv.kernel}")
        self.kw, self.left, self.stride = kw, left, conv.stride
        self.w_above = weight[:, :, :-1]
        self.w_current = weight[:, :, -1].permute(2, 1, 0).reshape(kw * cin, cout)
        self.bias = conv.bias
        self.history = weight.new_zeros(batch, cin, kh - 1, left + in_width)
        self.current = weight.new_zeros(batch, left + in_width, cin)
        self.top: Tensor | None = None
        self.fed = 0

    def begin_row(self) -> bool:
        """Start the next input row; True when it completes an output row (then `top` is that row's part)."""
        index, self.fed = self.fed, self.fed + 1
        if index:
            row = self.current.permute(0, 2, 1)[:, :, None]
            self.history = torch.cat([self.history[:, :, 1:], row], dim=2)
        if index % self.stride:
            self.top = None
            return False
        top = F.conv2d(self.history, self.w_above, self.bias, stride=self.stride)
        self.top = top[:, :, 0].transpose(1, 2).contiguous()
        return True

    def write(self, c: int, value: Tensor) -> None:
        self.current[:, self.left + c] = value

    def output(self, c: int, scale: Tensor | None = None) -> Tensor:
        """Output (B, C_out) at column c of the current output row; `scale` scales the current-row part."""
        start = c * self.stride
        window = self.current[:, start : start + self.kw].reshape(self.current.shape[0], -1)
        if scale is None:
            return torch.addmm(self.top[:, c], window, self.w_current)
        return torch.addcmul(self.top[:, c], scale, window @ self.w_current)


class _RowDeconv:
    """The stride-2 transposed 2x3 layer of the `u` stream: input row k gives output rows 2k and 2k+1."""

    def __init__(self, deconv: ShiftedDeconv2d) -> None:
        if deconv.kernel[0] != 2:
            raise ValueError(f"expected a transposed convolution with 2 rows, got kernel {deconv.kernel}")
        self.weight = deconv.wn.weight()
        self.bias = deconv.bias
        self.crop = (deconv.kernel[1] - 1) // 2
        self.rows: Tensor | None = None

    def feed(self, row: Tensor) -> None:
        out = F.conv_transpose2d(row, self.weight, self.bias, stride=2)
        self.rows = out[:, :, :, self.crop : self.crop + 2 * row.shape[-1]]

    def row(self, r: int) -> Tensor:
        return self.rows[:, :, r % 2 : r % 2 + 1]


class _PosDeconv:
    """The stride-2 transposed 2x2 layer of the `ul` stream: input (k, l) gives the 2x2 block at (2k, 2l)."""

    def __init__(self, deconv: ShiftedDeconv2d, batch: int, in_width: int) -> None:
        if tuple(deconv.kernel) != (2, 2):
            raise ValueError(f"expected a 2x2 transposed convolution, got kernel {deconv.kernel}")
        weight = deconv.wn.weight()  # (C_in, C_out, 2, 2)
        cout = weight.shape[1]
        self.weight = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], 4 * cout)
        self.bias = deconv.bias.repeat(4)
        self.blocks = weight.new_zeros(batch, 2, 2 * in_width, cout)  # the two output rows of one input row

    def feed(self, c: int, value: Tensor) -> None:
        out = torch.addmm(self.bias, value, self.weight)
        self.blocks[:, :, 2 * c : 2 * c + 2] = out.view(value.shape[0], 2, 2, -1)

    def at(self, r: int, c: int) -> Tensor:
        return self.blocks[:, r % 2, c]


def _nin_weight(nin: nn.Module) -> tuple[Tensor, Tensor]:
    """(weight (C_out, C_in), bias) of a 1x1 convolution."""
    weight = nin.wn.weight()
    return weight.reshape(weight.shape[0], -1), nin.bias


class _LayerLabel:
    """A gated residual layer's label terms, computed once: input shift, and the scale / shift of (a, b).

    The additive part is read off `condition_output` itself (applied to zeros), so every additive variant
    (gated-bias, single-matrix, spatial maps of shape (B, 2F, H, W)) needs no code here; FiLM also scales.
    """

    def __init__(
        self, layer: GatedResnet, label: LabelContext | None, batch: int, width: int, like: Tensor
    ) -> None:
        channels = layer.conv_out.bias.shape[0]
        self.shift = layer.label_in(label.one_hot) if layer.conditioning == "per-layer-input" else None
        self.add = layer.condition_output(like.new_zeros(batch, channels, 1, 1), label, width)
        self.scale = None
        if layer.conditioning == "film":
            self.scale = 1 + layer.film(label.one_hot)[:, :channels]

    def add_row(self, r: int) -> Tensor:
        """The additive term for output row r: (B, 2F, 1, W) or (B, 2F, 1, 1)."""
        return self.add[:, :, r : r + 1] if self.add.shape[2] > 1 else self.add

    def shifted(self, x: Tensor) -> Tensor:
        if self.shift is None:
            return x
        return x + (self.shift[:, :, None, None] if x.dim() == 4 else self.shift)


class _RowResnet:
    """A gated residual layer of the `u` stream, one output row (B, F, 1, W) at a time."""

    def __init__(self, layer: GatedResnet, label: _LayerLabel) -> None:
        self.conv_in = _RowConv(layer.conv_in)
        self.conv_out = _RowConv(layer.conv_out)
        self.skip = _nin_weight(layer.skip) if layer.skip is not None else None
        self.label = label
        self.row = 0

    def __call__(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        h = self.conv_in.feed(concat_elu(self.label.shifted(x)))
        if skip is not None:
            weight, bias = self.skip
            h = h + F.conv2d(concat_elu(skip), weight[:, :, None, None], bias)
        h = self.conv_out.feed(concat_elu(h))
        if self.label.scale is not None:
            h = h * self.label.scale[:, :, None, None]
        h = h + self.label.add_row(self.row)
        self.row += 1
        a, b = h.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class _PosResnet:
    """A gated residual layer of the `ul` stream, one output position (B, F) at a time.

    Its skip input is `u` (up pass) or `cat([u, ul])` (down pass). The `u` part is known for the whole row
    when the row begins, so its 1x1 convolution is added to conv_in's per-row part; only the `ul` part is
    multiplied per position.
    """

    def __init__(
        self, layer: GatedResnet, label: _LayerLabel, batch: int, width: int, u_channels: int
    ) -> None:
        self.conv_in = _PosConv(layer.conv_in, batch, width)
        self.conv_out = _PosConv(layer.conv_out, batch, width)
        weight, self.skip_bias = _nin_weight(layer.skip)
        half = weight.shape[1] // 2  # concat_elu(skip) = [skip, -skip]; skip = [u, ul]
        u_cols = [*range(u_channels), *range(half, half + u_channels)]
        ul_cols = [*range(u_channels, half), *range(half + u_channels, 2 * half)]
        self.skip_u = weight[:, u_cols]
        self.skip_ul = weight[:, ul_cols].t().contiguous() if ul_cols else None
        self.label = label
        self.row = 0

    def begin_row(self, u_row: Tensor) -> None:
        """Start output row `self.row`, whose `u` skip input (B, F, 1, W) is now known."""
        self.conv_in.begin_row()
        skip = F.conv2d(concat_elu(u_row), self.skip_u[:, :, None, None], self.skip_bias)
        self.conv_in.top += skip[:, :, 0].transpose(1, 2)
        self.conv_out.begin_row()
        if self.label.scale is not None:
            self.conv_out.top *= self.label.scale[:, None, :]
        self.conv_out.top += self.label.add_row(self.row)[:, :, 0].transpose(1, 2)
        self.row += 1

    def __call__(self, c: int, x: Tensor, skip_ul: Tensor | None = None) -> Tensor:
        self.conv_in.write(c, concat_elu(self.label.shifted(x)))
        h = self.conv_in.output(c)
        if skip_ul is not None:
            h = torch.addmm(h, concat_elu(skip_ul), self.skip_ul)
        self.conv_out.write(c, concat_elu(h))
        a, b = self.conv_out.output(c, self.label.scale).chunk(2, dim=1)
        return torch.addcmul(x, a, torch.sigmoid(b))


class _CachedNet:
    """The whole network, evaluated incrementally in raster order (see the module docstring).

    Per row: `start_row(r)` (image rows < r must be in `image`), then for every column c
    `params_at(c)` followed by `put_pixel(c, value)`.
    """

    def __init__(self, model: PixelCNNPP, labels: Tensor | None, batch: int, size: int) -> None:
        like = model.out.bias
        f = model.config.nr_filters
        label = model.label_context(labels, batch, like.device)
        widths = [size >> s for s in range(NUM_SCALES)]
        self.size = size
        self.image = like.new_zeros(batch, 3, size, size)
        self.const = model.network_input(like.new_zeros(batch, 3, 1, 1), label)[:, 3:]  # ones, label planes
        self.u_init = _RowConv(model.u_init)
        self.ul_above = _RowConv(model.ul_init_above)
        self.ul_left = _PosConv(model.ul_init_left, batch, size)
        self.above: Tensor | None = None

        def tag(layer: GatedResnet, s: int) -> _LayerLabel:
            return _LayerLabel(layer, label, batch, widths[s], like)

        def u_layers(layers: nn.ModuleList, s: int) -> list[_RowResnet]:
            return [_RowResnet(layer, tag(layer, s)) for layer in layers]

        def ul_layers(layers: nn.ModuleList, s: int) -> list[_PosResnet]:
            return [_PosResnet(layer, tag(layer, s), batch, widths[s], f) for layer in layers]

        # indexed by scale s (0 = full resolution); the model's down pass runs from the coarsest scale
        coarse = NUM_SCALES - 1
        self.up_u = [u_layers(model.up_u[s], s) for s in range(NUM_SCALES)]
        self.up_ul = [ul_layers(model.up_ul[s], s) for s in range(NUM_SCALES)]
        self.down_u = [u_layers(model.down_u[coarse - s], s) for s in range(NUM_SCALES)]
        self.down_ul = [ul_layers(model.down_ul[coarse - s], s) for s in range(NUM_SCALES)]
        self.downsize_u = [_RowConv(conv) for conv in model.downsize_u]  # scale s -> s + 1
        self.downsize_ul = [_PosConv(conv, batch, widths[s]) for s, conv in enumerate(model.downsize_ul)]
        # scale s + 1 -> s
        self.upsize_u = [_RowDeconv(model.upsize_u[coarse - 1 - s]) for s in range(coarse)]
        self.upsize_ul = [
            _PosDeconv(model.upsize_ul[coarse - 1 - s], batch, widths[s + 1]) for s in range(coarse)
        ]
        out_weight, self.out_bias = _nin_weight(model.out)
        self.out_weight = out_weight.t().contiguous()
        self.r = -1

    def _input_row(self, r: int) -> Tensor:
        row = self.image[:, :, r : r + 1]
        return torch.cat([row, self.const.expand(-1, -1, 1, self.size)], dim=1)

    def start_row(self, r: int) -> None:
        """Compute every `u` row that pixel (r, 0) needs; begin the `ul` rows of the scales that start one."""
        self.r = r
        if r == 0:  # the initial layers' outputs are shifted down: row 0 is zero
            u = self.image.new_zeros(self.image.shape[0], self.u_init.weight.shape[0], 1, self.size)
            self.above = u[:, :, 0].transpose(1, 2)
        else:
            xin = self._input_row(r - 1)
            u = self.u_init.feed(xin)
            self.above = self.ul_above.feed(xin)[:, :, 0].transpose(1, 2)
        self.ul_left.begin_row()

        up_lists: list[list[Tensor]] = []
        for s in range(NUM_SCALES):
            if s:
                u = self.downsize_u[s - 1].feed(u)
                self.downsize_ul[s - 1].begin_row()
                if u is None:
                    break
            entries = [u]
            for layer in self.up_u[s]:
                u = layer(u)
                entries.append(u)
            up_lists.append(entries)

        for s in reversed(range(len(up_lists))):
            entries = up_lists[s]
            for layer, u_row in zip(self.up_ul[s], entries[1:]):
                layer.begin_row(u_row)
            u = entries.pop() if s == NUM_SCALES - 1 else self.upsize_u[s].row(r >> s)
            for layer, ul_layer in zip(self.down_u[s], self.down_ul[s]):
                u = layer(u, entries.pop())
                ul_layer.begin_row(u)
            if s:
                self.upsize_u[s - 1].feed(u)

    def params_at(self, c: int) -> Tensor:
        """DMoL parameters (B, 10M) of pixel (r, c); pixels before it must have been put."""
        r = self.r
        ul = self.above[:, c]
        if c:
            ul = ul + self.ul_left.output(c - 1)
        ul_lists: list[list[Tensor]] = []
        for s in range(NUM_SCALES):
            mask = (1 << s) - 1
            if s:
                if r & mask or c & mask:
                    break
                ul = self.downsize_ul[s - 1].output(c >> s)
            entries = [ul]
            for layer in self.up_ul[s]:
                ul = layer(c >> s, ul)
                entries.append(ul)
            if s < NUM_SCALES - 1:
                self.downsize_ul[s].write(c >> s, ul)
            ul_lists.append(entries)

        for s in reversed(range(len(ul_lists))):
            entries = ul_lists[s]
            ul = entries.pop() if s == NUM_SCALES - 1 else self.upsize_ul[s].at(r >> s, c >> s)
            for layer in self.down_ul[s]:
                ul = layer(c >> s, ul, entries.pop())
            if s:
                self.upsize_ul[s - 1].feed(c >> s, ul)
        return torch.addmm(self.out_bias, F.elu(ul), self.out_weight)

    def put_pixel(self, c: int, value: Tensor) -> None:
        """Record pixel (r, c) (B, 3): it enters the image and the position-wise initial layer."""
        self.image[:, :, self.r, c] = value
        self.ul_left.write(c, torch.cat([value, self.const[:, :, 0, 0]], dim=1))


# ------------------------------------------------------------------------------------------ public API
def cached_params(model: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Teacher forcing through the cached machinery: the DMoL parameters (B, 10M, H, W) of `model(x, labels)`.

    Each position's parameters are computed incrementally from the true earlier pixels, exactly as the
    cached sampler computes them from sampled ones; for testing and debugging the sampler.
    """
    inner = unwrap(model)
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"images must be square, got {tuple(x.shape)}")
    with inference(inner):
        net = _CachedNet(inner, labels, b, h)
        x = x.to(net.image)
        out = x.new_empty(b, inner.out.bias.shape[0], h, w)
        for r in range(h):
            net.start_row(r)
            for c in range(w):
                out[:, :, r, c] = net.params_at(c)
                net.put_pixel(c, x[:, :, r, c])
    return out


def sample(
    model: nn.Module,
    labels: Tensor | Sequence[int] | None,
    *,
    generator: torch.Generator,
    method: str = "cached",
    temperature: float = 1.0,
    image_size: int = 32,
    progress: bool = False,
    batch_size: int | None = None,
    prefix: Tensor | None = None,
    prefix_rows: int = 0,
) -> Tensor:
    """Draw images (B, 3, S, S) on the 256-level grid of [-1, 1], one per label, from the model.

    `labels` (B,) are class indices; the unconditional variant ignores them, and then `labels=None` with
    `batch_size` also works. `method` is "cached" (fast, exact) or "naive" (one full pass per pixel);
    both consume `generator` identically (module docstring), so with the same generator state they return
    the same images up to floating-point ties. `progress` shows a bar over rows.

    Completion: with `prefix` (B, 3, S, S) the rows `< prefix_rows` are copied from it and only the rest
    is drawn, conditioned on them (the model's p(bottom | top, label)); known pixels draw no noise.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    inner = unwrap(model)
    like = inner.out.bias
    if labels is not None:
        labels = torch.as_tensor(labels, device=like.device).long().reshape(-1)
        batch_size = labels.numel()
    elif batch_size is None:
        raise ValueError("give labels, or batch_size for the unconditional variant")
    known = _known_rows(prefix, prefix_rows, batch_size, image_size)
    rows = tqdm(range(image_size), desc=f"sampling ({method})", unit="row", disable=not progress, leave=False)
    with inference(model):
        if method == "naive":
            x = like.new_zeros(batch_size, 3, image_size, image_size)
            if known is not None:
                x[:, :, :prefix_rows] = known.to(x)
            for r in rows:
                if r < prefix_rows:
                    continue
                for c in range(image_size):
                    params = model(x, labels)[:, :, r, c]
                    x[:, :, r, c] = draw_pixel(params, generator, temperature)
            return x
        net = _CachedNet(inner, labels, batch_size, image_size)
        if known is not None:
            known = known.to(net.image)
        for r in rows:
            net.start_row(r)
            for c in range(image_size):
                params = net.params_at(c)  # also for a known pixel: it advances the position-wise caches
                value = known[:, :, r, c] if r < prefix_rows else draw_pixel(params, generator, temperature)
                net.put_pixel(c, value)
        return net.image


def _known_rows(prefix: Tensor | None, prefix_rows: int, batch: int, size: int) -> Tensor | None:
    """The rows a completion keeps, checked against the batch and image size (None: draw every row)."""
    if not 0 <= prefix_rows <= size:
        raise ValueError(f"prefix_rows must be in [0, {size}] (image_size), got {prefix_rows}")
    if prefix is None:
        if prefix_rows:
            raise ValueError(f"prefix_rows={prefix_rows} needs a prefix (B, 3, {size}, {size})")
        return None
    if not prefix_rows:
        raise ValueError("a prefix was given with prefix_rows=0: say how many of its rows to keep")
    if tuple(prefix.shape) != (batch, 3, size, size):
        raise ValueError(f"prefix must have shape {(batch, 3, size, size)}, got {tuple(prefix.shape)}")
    return prefix[:, :, :prefix_rows]


def complete(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | Sequence[int],
    *,
    rows: int,
    per_image: int,
    generator: torch.Generator,
    method: str = "cached",
    temperature: float = 1.0,
) -> Tensor:
    """`per_image` completions (N, per_image, 3, S, S) of each image's first `rows` rows, under `labels` (N,).

    One batch of N * per_image draws, image-major: a completion shows what the model believes the rest of
    an image of that class looks like, given its top.
    """
    n, _, size, _ = images.shape
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.numel() != n:
        raise ValueError(f"{n} images but {labels.numel()} labels")
    drawn = sample(
        model,
        labels.repeat_interleave(per_image),
        generator=generator,
        method=method,
        temperature=temperature,
        image_size=size,
        prefix=images.repeat_interleave(per_image, dim=0),
        prefix_rows=rows,
    )
    return drawn.view(n, per_image, 3, size, size)


def sample_grid_figure(
    images: Tensor, labels: Tensor | Sequence[int], class_names: Sequence[str], path: str | Path
) -> Path:
    """Save a labelled grid of samples, one row per class (in class order), for reports and notebooks."""
    from matplotlib.figure import Figure

    labels = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    if len(labels) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(labels)} labels")
    pictures = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    classes = sorted(set(labels))
    by_class = {k: [i for i, label in enumerate(labels) if label == k] for k in classes}
    cols = max(len(v) for v in by_class.values())
    cell, margin, label_width = 0.7, 0.1, 0.9  # inches: square slots, room on the left for class names
    width, height = label_width + cols * cell + margin, len(classes) * cell + 2 * margin
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(len(classes), cols, squeeze=False)
    for row, k in enumerate(classes):
        name = class_names[k] if k < len(class_names) else f"class {k}"
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center")
        for col in range(cols):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(by_class[k]):
                ax.imshow(pictures[by_class[k][col]], interpolation="nearest")
    fig.subplots_adjust(
        left=label_width / width,
        right=1 - margin / width,
        bottom=margin / height,
        top=1 - margin / height,
        wspace=0.06,
        hspace=0.06,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
