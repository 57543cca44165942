"""The PixelCNN++G network (docs/design.md#model): two causal streams, a U-Net of gated residual layers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcnn.config import ModelConfig
from pcnn.core.layers import (
    NIN,
    GatedResnet,
    LabelContext,
    ShiftedDeconv2d,
    down_right_shifted_conv,
    down_shift,
    down_shifted_conv,
    right_shift,
)

NUM_SCALES = 3


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Fail clearly on a label outside 0..num_classes-1 (one_hot would fail obscurely, or not at all)."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")


class PixelCNNPP(nn.Module):
    """Conditional PixelCNN++: `model(x, labels)` maps images in [-1, 1] to DMoL parameters (B, 10M, H, W)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        f, k, nr = config.nr_filters, config.num_classes, config.nr_resnet
        cond = config.conditioning
        in_channels = 3 + 1 + (k if cond == "label-channel" else 0)

        def u_conv(cin: int, cout: int) -> nn.Module:
            return down_shifted_conv(cin, cout, (2, 3))

        def ul_conv(cin: int, cout: int) -> nn.Module:
            return down_right_shifted_conv(cin, cout, (2, 2))

        def resnet(conv, skip: int) -> GatedResnet:
            return GatedResnet(f, conv, skip, cond, k, config.dropout)

        self.u_init = down_shifted_conv(in_channels, f, (2, 3))
        self.ul_init_above = down_shifted_conv(in_channels, f, (1, 3))
        self.ul_init_left = down_right_shifted_conv(in_channels, f, (2, 1))

        self.up_u = nn.ModuleList(
            [nn.ModuleList([resnet(u_conv, 0) for _ in range(nr)]) for _ in range(NUM_SCALES)]
        )
        self.up_ul = nn.ModuleList(
            [nn.ModuleList([resnet(ul_conv, f) for _ in range(nr)]) for _ in range(NUM_SCALES)]
        )
        self.downsize_u = nn.ModuleList(
            [down_shifted_conv(f, f, (2, 3), stride=2) for _ in range(NUM_SCALES - 1)]
        )
        self.downsize_ul = nn.ModuleList(
            [down_right_shifted_conv(f, f, (2, 2), stride=2) for _ in range(NUM_SCALES - 1)]
        )

        down_depths = [nr] + [nr + 1] * (NUM_SCALES - 1)
        self.down_u = nn.ModuleList(
            [nn.ModuleList([resnet(u_conv, f) for _ in range(n)]) for n in down_depths]
        )
        self.down_ul = nn.ModuleList(
            [nn.ModuleList([resnet(ul_conv, 2 * f) for _ in range(n)]) for n in down_depths]
        )
        self.upsize_u = nn.ModuleList([ShiftedDeconv2d(f, f, (2, 3)) for _ in range(NUM_SCALES - 1)])
        self.upsize_ul = nn.ModuleList([ShiftedDeconv2d(f, f, (2, 2)) for _ in range(NUM_SCALES - 1)])

        self.out = NIN(f, 10 * config.nr_logistic_mix)

        if cond == "single-matrix":
            self.shared_label = nn.Linear(k, 2 * f, bias=False)
            nn.init.normal_(self.shared_label.weight, std=0.01)
        if cond == "spatial":
            size = config.image_size
            self.spatial_maps = nn.ParameterList(
                [nn.Parameter(torch.randn(k, f, size >> s, size >> s) * 0.01) for s in range(NUM_SCALES)]
            )

    @property
    def conditional(self) -> bool:
        return self.config.conditioning != "none"

    def label_context(self, labels: Tensor | None, batch: int, device: torch.device) -> LabelContext | None:
        """One-hot labels and the derived per-batch conditioning tensors every layer reads."""
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError(f"conditioning {self.config.conditioning!r} needs labels")
        labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        if labels.numel() != batch:
            raise ValueError(f"got {labels.numel()} labels for a batch of {batch} images")
        if not torch.compiler.is_compiling():  # compiled callers check first (a graph break otherwise)
            check_labels(labels, self.config.num_classes)
        one_hot = F.one_hot(labels, self.config.num_classes).to(self.out.bias.dtype)
        shared = self.shared_label(one_hot) if self.config.conditioning == "single-matrix" else None
        spatial = None
        if self.config.conditioning == "spatial":
            spatial = {m.shape[-1]: m[labels] for m in self.spatial_maps}
        return LabelContext(one_hot, shared, spatial)

    def network_input(self, x: Tensor, label: LabelContext | None) -> Tensor:
        """The image plus a constant channel of ones (so padding differs from black), plus label planes."""
        b, _, h, w = x.shape
        parts = [x, x.new_ones(b, 1, h, w)]
        if self.config.conditioning == "label-channel":
            parts.append(label.one_hot.to(x.dtype)[:, :, None, None].expand(b, -1, h, w))
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != x.shape[-2] or x.shape[-1] % 4:
            raise ValueError(
                f"images must be square with a side that is a multiple of 4, got {tuple(x.shape)}"
            )
        label = self.label_context(labels, x.shape[0], x.device)
        xin = self.network_input(x, label)

        u_list = [down_shift(self.u_init(xin))]
        ul_list = [down_shift(self.ul_init_above(xin)) + right_shift(self.ul_init_left(xin))]
        for scale in range(NUM_SCALES):
            for u_layer, ul_layer in zip(self.up_u[scale], self.up_ul[scale]):
                u_list.append(u_layer(u_list[-1], label=label))
                ul_list.append(ul_layer(ul_list[-1], u_list[-1], label=label))
            if scale < NUM_SCALES - 1:
                u_list.append(self.downsize_u[scale](u_list[-1]))
                ul_list.append(self.downsize_ul[scale](ul_list[-1]))

        u, ul = u_list.pop(), ul_list.pop()
        for scale in range(NUM_SCALES):
            for u_layer, ul_layer in zip(self.down_u[scale], self.down_ul[scale]):
                u = u_layer(u, u_list.pop(), label=label)
                ul = ul_layer(ul, torch.cat([u, ul_list.pop()], dim=1), label=label)
            if scale < NUM_SCALES - 1:
                u = self.upsize_u[scale](u)
                ul = self.upsize_ul[scale](ul)
        assert not u_list and not ul_list
        return self.out(F.elu(ul))


def build_model(model_config: ModelConfig) -> PixelCNNPP:
    """Build the network that `model_config` describes."""
    return PixelCNNPP(model_config)


def unwrap(model: nn.Module, keep: type[nn.Module] | tuple[type[nn.Module], ...] = ()) -> nn.Module:
    """The plain model inside torch.compile, DistributedDataParallel and FastForward wrappers.

    Takes off wrappers (their `_orig_mod`, `module` or `model`) until a `PixelCNNPP`, or an instance of
    `keep` (`keep=FastForward`: only what wraps the training module); a module wrapping none is returned.
    """
    inner = model
    while not isinstance(inner, (PixelCNNPP, keep)):
        for name in ("_orig_mod", "module", "model"):
            if isinstance(getattr(inner, name, None), nn.Module):
                inner = getattr(inner, name)
                break
        else:
            return inner
    return inner


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd, restoring the caller's mode afterwards, also after an error:
    what every scoring and sampling pass over a model needs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
