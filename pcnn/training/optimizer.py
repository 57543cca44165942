"""The optimiser and the learning-rate schedule (a pure function of the epoch, so resume needs no state)."""

from __future__ import annotations

import torch
from torch import nn

from pcnn.config import TrainConfig
from pcnn.core.model import unwrap


def lr_at(train_config: TrainConfig, epoch: int) -> float:
    """Learning rate of the epoch with 0-based index `epoch` (epoch `epoch + 1` in the logs)."""
    tc = train_config
    if tc.lr_switch_epoch and epoch >= tc.lr_switch_epoch:
        return tc.lr_after_switch * tc.lr_decay_after_switch ** (epoch - tc.lr_switch_epoch)
    return tc.lr * tc.lr_decay**epoch


def build_optimizer(model: nn.Module, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model's parameters (the fused kernel where torch has one for the device)."""
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    device = params[0].device
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, lr=train_config.lr, fused=fused)
