"""The training precision follows the hardware's native arithmetic, with the CPU's flags and the GPU's
compute capability mocked: emulated bf16 is never chosen by `auto` (`pcnn.fast.precision`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcnn.config import TrainConfig
from pcnn.fast import precision
from pcnn.fast.precision import choose_precision, cpu_flags, native_bf16_cpu
from pcnn.training.engine import describe_precision, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
XEON_AVX512 = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni"})  # bf16 only emulated
SAPPHIRE_RAPIDS = XEON_AVX512 | {"avx512_bf16", "amx_bf16", "amx_tile"}
ZEN2_AVX2 = frozenset({"avx2", "fma"})
ZEN4 = XEON_AVX512 | {"avx512_bf16"}  # no AMX


@pytest.fixture(autouse=True)
def x86(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flags above are x86 flags, whatever machine runs the tests."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [(ZEN2_AVX2, None), (XEON_AVX512, None), (SAPPHIRE_RAPIDS, torch.bfloat16), (ZEN4, torch.bfloat16)],
)
def test_auto_on_a_cpu_takes_bf16_only_where_it_is_native(flags: frozenset[str], dtype) -> None:
    chosen = choose_precision("auto", CPU, flags=flags)
    assert chosen.dtype == dtype and not chosen.scales_loss
    assert ("computes bf16 natively" in chosen.reason) == (dtype is not None)
    assert ("no native bf16" in chosen.reason) == (dtype is None)


def test_no_cpu_gets_bf16_where_the_machine_is_not_x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision.platform, "machine", lambda: "arm64")
    assert choose_precision("auto", CPU, flags=SAPPHIRE_RAPIDS).dtype is None


def test_native_bf16_is_read_from_the_flags_not_from_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not native_bf16_cpu(XEON_AVX512)  # oneDNN's own check says True here: it counts emulation
    assert native_bf16_cpu(SAPPHIRE_RAPIDS)
    assert native_bf16_cpu(frozenset({"avx512_bf16"}))
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    assert not native_bf16_cpu(SAPPHIRE_RAPIDS)


def test_cpu_flags_are_parsed_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()  # not Linux: nothing is assumed


@pytest.mark.parametrize(
    ("capability", "dtype", "reason"),
    [
        ((9, 0), torch.bfloat16, "sm_90) computes bf16 natively"),  # H100
        ((8, 0), torch.bfloat16, "sm_80) computes bf16 natively"),  # A100
        ((7, 5), torch.float16, "sm_75) has fp16 tensor cores"),  # T4 (Colab)
        ((7, 0), torch.float16, "sm_70) has fp16 tensor cores"),  # V100
        ((6, 1), None, "sm_61) has neither"),  # Pascal
    ],
)
def test_auto_on_a_gpu_follows_its_compute_capability(capability, dtype, reason) -> None:
    chosen = choose_precision("auto", CUDA, capability=capability)
    assert chosen.dtype == dtype and reason in chosen.reason
    assert chosen.scales_loss == (dtype == torch.float16)


def test_the_capability_is_read_from_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch claims on a T4
    assert resolve_precision(TrainConfig(), CUDA) == torch.float16
    assert describe_precision(TrainConfig(), CUDA).startswith("fp16: this GPU (sm_75)")


def test_explicit_choices_win_and_emulated_bf16_is_flagged() -> None:
    assert choose_precision("fp32", CUDA, capability=(9, 0)).dtype is None
    assert choose_precision("fp16", CPU, flags=ZEN2_AVX2).dtype == torch.float16
    asked = choose_precision("bf16", CPU, flags=XEON_AVX512)
    assert asked.dtype == torch.bfloat16 and "emulates bf16" in asked.describe()
    assert "emulates" not in choose_precision("bf16", CPU, flags=SAPPHIRE_RAPIDS).describe()
    with pytest.raises(ValueError, match="train.precision must be one of"):
        choose_precision("fp8", CPU)
    with pytest.raises(ValueError, match="train.precision must be one of"):
        TrainConfig(precision="fp8")
