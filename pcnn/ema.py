"""Polyak averaging: an exponential moving average (EMA) of the weights, used for evaluation and sampling.

PixelCNN++ reports its likelihoods with Polyak-averaged parameters (decay 0.9995): the average of the
last few thousand iterates sits nearer the optimum than any single noisy Adam iterate.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile, DistributedDataParallel and FastForward wrappers."""
    from pcnn.model import PixelCNNPP

    inner = model
    while not isinstance(inner, PixelCNNPP):
        for name in ("_orig_mod", "module", "model"):
            if isinstance(getattr(inner, name, None), nn.Module):
                inner = getattr(inner, name)
                break
        else:
            return inner
    return inner


class EMA:
    """A frozen copy of the model whose parameters track `decay * ema + (1 - decay) * current`.

    Starts equal to the model; `update` after every optimiser step. `module` is an ordinary model in eval
    mode that evaluation and sampling use directly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = list(unwrap(model).parameters())
        torch._foreach_lerp_(list(self.module.parameters()), source, 1.0 - self.decay)
        for mine, theirs in zip(self.module.buffers(), unwrap(model).buffers()):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, Tensor]:
        """A plain model state dict (the same keys as the model's), so `load_model` can use it directly."""
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)
