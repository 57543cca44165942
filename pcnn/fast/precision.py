"""Which arithmetic the training step uses, chosen from what the hardware computes natively, with the reason.

Libraries' own checks count emulation as support: `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is true on
every AVX-512 CPU, though only CPUs with `avx512_bf16` or AMX compute bf16 natively (elsewhere oneDNN
converts to float32 and back: the `cpu` profile's step ran at 11 img/s in bf16 against 26 img/s in float32
on an AVX-512 Xeon without avx512_bf16), and `torch.cuda.is_bf16_supported()` is true on GPUs before
Ampere (sm_80), which emulate it and on which Triton cannot compile bf16 kernels. So the choice reads the
CPU's flags and the GPU's compute capability itself:

- CUDA, compute capability >= 8.0: bf16 autocast (native, no loss scaling needed);
- CUDA, 7.0-7.5 (V100, T4: fp16 tensor cores): fp16 autocast with a gradient scaler;
- a CPU with native bf16 (the `avx512_bf16` or `amx_bf16` flag): bf16 autocast. On a 2-core AMD EPYC
  with avx512_bf16 the fast path's eager step of the `cpu` profile's model (nf 40, mix 10, batch 16)
  ran at 83.6 img/s in bf16 against 52.0 img/s in float32, 1.61x (`benchmarks/train_step.py`);
- every other CPU, older GPUs and MPS: float32.

The likelihood is always computed in float32 inside the autocast region (`pcnn.core.likelihood`).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

CHOICES = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_MIN_CAPABILITY = (8, 0)  # Ampere
FP16_MIN_CAPABILITY = (7, 0)  # Volta: the first tensor cores


@dataclass(frozen=True)
class Precision:
    """The training step's autocast dtype (None: plain float32), whether it scales the loss, and why."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def scales_loss(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's exponent range."""
        return self.dtype == torch.float16

    def describe(self) -> str:
        return f"{self.name}: {self.reason}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: no native bf16 is assumed)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_cpu(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX), not by converting to float32."""
    flags = cpu_flags() if flags is None else flags
    return platform.machine().lower() in ("x86_64", "amd64") and any(
        f in flags for f in NATIVE_BF16_CPU_FLAGS
    )


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def choose_precision(
    choice: str,
    device: torch.device,
    *,
    flags: frozenset[str] | None = None,
    capability: tuple[int, int] | None = None,
) -> Precision:
    """The precision for `choice` (`auto`, `fp32`, `bf16`, `fp16`) on `device`; `flags` (the CPU's) and
    `capability` (the GPU's) are read from the machine unless given, which the tests do."""
    if choice not in CHOICES:
        raise ValueError(f"train.precision must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "fp32":
        return Precision(None, "asked for (train.precision=fp32)")
    if choice == "bf16":
        return Precision(torch.bfloat16, "asked for (train.precision=bf16)" + _bf16_warning(device, flags))
    if choice == "fp16":
        return Precision(torch.float16, "asked for (train.precision=fp16), with loss scaling")
    if device.type == "cuda":
        cc = capability if capability is not None else cuda_capability(device)
        name = f"sm_{cc[0]}{cc[1]}"
        if cc >= BF16_MIN_CAPABILITY:
            return Precision(torch.bfloat16, f"this GPU ({name}) computes bf16 natively")
        if cc >= FP16_MIN_CAPABILITY:
            return Precision(
                torch.float16, f"this GPU ({name}) has fp16 tensor cores but no native bf16; loss scaling on"
            )
        return Precision(None, f"this GPU ({name}) has neither bf16 nor fp16 tensor cores")
    if device.type == "cpu":
        if native_bf16_cpu(flags):
            return Precision(torch.bfloat16, "this CPU computes bf16 natively (avx512_bf16/amx_bf16 flag)")
        return Precision(
            None, "this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag): it would be emulated"
        )
    return Precision(None, f"the default on {device.type}")


def _bf16_warning(device: torch.device, flags: frozenset[str] | None) -> str:
    if device.type == "cpu" and not native_bf16_cpu(flags):
        return "; this CPU emulates bf16 (no avx512_bf16/amx_bf16 flag): expect a slower step than fp32"
    return ""
