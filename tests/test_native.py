"""The hand-written CPU weight-gradient kernel: exact sums at awkward sizes, its build, and its fallback."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from pcnn.fast import convgrad, native

# Compares computations that round differently on other CPUs: run again under AVX2 kernels (Makefile).
pytestmark = pytest.mark.isa_sensitive

needs_kernel = pytest.mark.skipif(not native.available(), reason="no AVX2/FMA CPU or no C++ compiler here")


def reference(x: torch.Tensor, g: torch.Tensor, offsets: list[int], length: int) -> torch.Tensor:
    x, g = x.double(), g.double()
    return torch.stack([g[:length].t() @ x[offset : offset + length] for offset in offsets])


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("channels", "outputs", "offsets", "length"),
    [
        (16, 6, [0], 1),  # one row, one full register tile
        (32, 5, [0, 1, 2, 9, 10, 11], 300),  # a 2x3 kernel on width 9; rows past one 256-row block
        (48, 13, [0, 1, 7, 8], 1000),  # output channels not a multiple of the tile's 6
        (16, 1, [3], 257),  # one output channel, one tap with an offset, one row past a block
    ],
)
def test_kernel_sums_match_float64_products(channels, outputs, offsets, length, threads) -> None:
    generator = torch.Generator().manual_seed(channels + outputs + length)
    x = torch.randn(length + max(offsets) + 3, channels, generator=generator)
    g = torch.randn(length + 2, outputs, generator=generator)  # rows past `length` must be ignored
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = native.conv_weight_grad(x, g, offsets, length)
    finally:
        torch.set_num_threads(previous)
    want = reference(x, g, offsets, length)
    assert got.shape == (len(offsets), outputs, channels)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4 * length**0.5)


@needs_kernel
def test_kernel_rejects_what_it_cannot_take() -> None:
    x, g = torch.randn(20, 16), torch.randn(20, 4)
    with pytest.raises(ValueError, match="float32"):
        native.conv_weight_grad(x.double(), g.double(), [0], 10)
    with pytest.raises(ValueError, match="bad shapes"):
        native.conv_weight_grad(torch.randn(20, 8), g, [0], 10)  # 8 channels: not a multiple of 16
    with pytest.raises(ValueError, match="bad shapes"):
        native.conv_weight_grad(x, g, [15], 10)  # the tap reads past x's rows


@needs_kernel
@pytest.mark.parametrize("kernel", [(2, 3), (2, 2)])
def test_native_and_torch_weight_gradients_agree_on_a_model_layer(kernel, monkeypatch) -> None:
    """The same 16x16 layer through the kernel and through the torch products (its fallback)."""
    torch.manual_seed(0)
    kh, kw = kernel
    padded = F.pad(torch.randn(3, 32, 16, 16), (kw // 2, (kw - 1) // 2, 1, 0))
    padded = padded.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(3, 24, 16, 16).contiguous(memory_format=torch.channels_last)
    with_kernel = convgrad.padded_conv_weight_grad(padded, grad_out, kh, kw)
    monkeypatch.setattr(native, "available", lambda: False)
    with_torch = convgrad.padded_conv_weight_grad(padded, grad_out, kh, kw)
    torch.testing.assert_close(with_kernel, with_torch, rtol=1e-4, atol=1e-3)


@needs_kernel
def test_small_layers_take_the_kernel_when_it_runs(monkeypatch) -> None:
    """Below MIN_PIXELS the torch products lose to oneDNN, but the kernel does not: it takes every layer."""
    weight, bias = torch.randn(4, 16, 2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    small = convgrad.padded_conv2d(torch.randn(2, 16, 5, 6), weight, bias)
    assert type(small.grad_fn).__name__ == "_PaddedConvBackward"
    monkeypatch.setattr(native, "available", lambda: False)
    small = convgrad.padded_conv2d(torch.randn(2, 16, 5, 6), weight, bias)
    assert type(small.grad_fn).__name__ != "_PaddedConvBackward"


def test_build_is_cached_and_a_failing_compiler_falls_back_with_a_warning(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(RuntimeError, match="false failed"):
        native.build()
    assert not list(tmp_path.glob("*.so")), "a failed build must leave no library behind"
    monkeypatch.setattr(native, "_cpu_supported", lambda: True)
    with pytest.warns(UserWarning, match="not available"):
        assert native._load.__wrapped__() is None


@pytest.mark.parametrize(
    ("capability", "setting", "expected"),
    [("AVX2", None, True), ("AVX512", None, False), ("AVX512", "1", True), ("AVX2", "0", False)],
)
def test_the_kernel_is_on_by_default_only_where_it_beat_onednn(monkeypatch, capability, setting, expected):
    if setting is None:
        monkeypatch.delenv("PCNN_NATIVE", raising=False)
    else:
        monkeypatch.setenv("PCNN_NATIVE", setting)
    assert native.wanted(capability) is expected
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert native.wanted() is expected


def test_the_environment_switch_turns_the_kernel_off(monkeypatch) -> None:
    monkeypatch.setenv("PCNN_NATIVE", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native._load.__wrapped__() is None


@needs_kernel
def test_a_built_library_is_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PCNN_CACHE_DIR", str(tmp_path))
    first = native.build()
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path and list(tmp_path.iterdir()) == [first]
