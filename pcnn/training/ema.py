"""Polyak averaging: an exponential moving average (EMA) of the weights, used for evaluation and sampling.

PixelCNN++ reports its likelihoods with Polyak-averaged parameters (decay 0.9995): the average of the
last few thousand iterates sits nearer the optimum than any single noisy Adam iterate.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pcnn.core.model import unwrap


class EMA:
    """A frozen copy of the model whose parameters track `d * ema + (1 - d) * current`.

    Starts equal to the model; `update` after every optimiser step. The decay warms up as
    d = min(decay, (1 + n) / (10 + n)) after n updates, so that the average forgets the random
    initialisation within a short run (with a fixed 0.9995 it would still be mostly the initial weights
    after a few hundred steps); `updates` is restored from the step count on resume. `module` is an
    ordinary model in eval mode that evaluation and sampling use directly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @property
    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        source = list(unwrap(model).parameters())
        torch._foreach_lerp_(list(self.module.parameters()), source, 1.0 - self.current_decay)
        for mine, theirs in zip(self.module.buffers(), unwrap(model).buffers()):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """A plain model state dict (the same keys as the model's), so `load_model` can use it directly."""
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.module.load_state_dict(state)
