"""Device selection and process settings shared by the CLI, the trainer and the notebooks."""

from __future__ import annotations

import contextlib
import ctypes
import os

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else Apple MPS, else the CPU; other names are passed to torch."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return device


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks for reuse instead of handing them back to the OS (no-op off glibc).

    A CPU training step frees and re-allocates the same activations every step; with glibc's defaults
    many of them went back to the OS and were page-faulted (and zeroed) in again: about 16,000 faults per
    nf-40 step at batch 8 on one thread, which made oneDNN's input-gradient calls of the 32x32 2x3
    convolutions take twice their kernel's time. With this, none
    (docs/performance.md#what-the-second-process-adds).
    The cost is that the process keeps its peak heap, which a training process reaches every step anyway.
    `PCNN_KEEP_FREED_MEMORY=0` in the environment leaves glibc's defaults (helper processes inherit it):
    `benchmarks/train_step.py` measures a step's peak memory so, and it suits a machine short of memory.
    """
    if os.environ.get("PCNN_KEEP_FREED_MEMORY") == "0":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 25)  # glibc's largest: 32 MiB
