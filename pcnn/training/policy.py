"""Device choices of a training run: precision, compilation, CPU processes, data workers, the fast path."""

from __future__ import annotations

import os

import torch
from torch import nn

from pcnn.config import TrainConfig
from pcnn.core.model import unwrap
from pcnn.fast.core_parallel import helps_on_this_cpu
from pcnn.fast.fastpath import FastForward
from pcnn.fast.precision import choose_precision
from pcnn.training.distributed import DistInfo


def resolve_precision(train_config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training step (None: plain float32); the likelihood is always float32.
    `pcnn.fast.precision` says how `auto` chooses, from the hardware's native arithmetic."""
    return choose_precision(train_config.precision, device).dtype


def describe_precision(train_config: TrainConfig, device: torch.device) -> str:
    """One line for a person: the precision the step will use on `device` and why (e.g. in a notebook)."""
    return choose_precision(train_config.precision, device).describe()


# On the 2-core CPU compiling costs 1.5-3.5 minutes and then saves 12-17% of every step: it repays itself
# after about 17 minutes or 1000 steps, so `auto` compiles CPU runs whose budget is at least this long.
_CPU_COMPILE_MIN_STEPS = 1000
_CPU_COMPILE_MIN_MINUTES = 20.0


def resolve_compile(train_config: TrainConfig, device: torch.device) -> bool:
    """Whether to torch.compile the step's forward and loss.

    `auto` compiles on CUDA, and on the CPU only a run whose budget says it is long enough to repay the
    minutes of compiling (`benchmarks/train_step.py --compile on`): a step budget of at least 1000 steps,
    or, without one, a wall-clock budget of at least 20 minutes. A run without a budget (tests, a quick
    look in a notebook) is not compiled on the CPU; `on` forces it.
    """
    tc = train_config
    if tc.compile != "auto":
        return tc.compile == "on"
    if device.type == "cuda":
        return True
    if tc.max_steps:
        return tc.max_steps >= _CPU_COMPILE_MIN_STEPS
    return tc.max_minutes >= _CPU_COMPILE_MIN_MINUTES


def resolve_processes(
    train_config: TrainConfig, device: torch.device, compiled: bool, dist_info: DistInfo
) -> int:
    """Processes sharing each CPU step (`pcnn.fast.core_parallel`): `cpu_processes` if set (> 0); auto (0)
    uses two on a CPU with at least two intra-op threads when the step is compiled, i.e. in a run long enough
    to repay the helper's start and compile (a minute), and where a second process was measured to help
    (`core_parallel.helps_on_this_cpu`); one under torchrun or on a GPU."""
    tc = train_config
    if device.type != "cpu" or dist_info.enabled or tc.batch_size < 2:
        return 1
    if tc.cpu_processes > 0:
        return min(tc.cpu_processes, tc.batch_size)
    return 2 if compiled and torch.get_num_threads() >= 2 and helps_on_this_cpu() else 1


def training_module(model: nn.Module, train_config: TrainConfig) -> nn.Module:
    """What the step calls for the forward pass: `FastForward` around the model (fast path), or the model.

    Channels-last activations (`auto`: on) suit tensor-core convolutions, and with torch 2.14 oneDNN's
    CPU convolutions too: the 2-core CPU's step ran 3-5% faster than in NCHW at both benchmark settings.
    """
    inner = unwrap(model)
    if train_config.fast_path == "off":
        return inner
    return FastForward(inner, channels_last=train_config.channels_last != "off")


def resolve_workers(train_config: TrainConfig, device: torch.device) -> int:
    """DataLoader worker processes: `num_workers` if set (>= 0); auto (-1) is 0 on a CPU, whose cores are
    busy training, and up to 8 on a GPU machine, so that augmentation keeps up with the GPU."""
    if train_config.num_workers >= 0:
        return train_config.num_workers
    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))
