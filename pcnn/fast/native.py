"""The project's one hand-written CPU kernel (pcnn/fast/csrc/conv_weight_grad.cpp), compiled on first use.

It is built with the system's C++ compiler (the one torch.compile needs on a CPU anyway) into a per-user
cache keyed by the source's hash, and called through ctypes (which releases the GIL); no build step at
install time. Where it cannot be used (not x86-64 with AVX2 and FMA, no compiler) or is not wanted
(`wanted()`) `available()` is False and callers keep their torch formulation; a failed build says why once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "conv_weight_grad.cpp"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared", "-std=c++17")
CHANNEL_MULTIPLE = 16  # the kernel's register tile covers 16 input channels


def cache_dir() -> Path:
    """Where built kernels live: `$PCNN_CACHE_DIR`, else `$XDG_CACHE_HOME/pcnn`, else ~/.cache/pcnn."""
    if os.environ.get("PCNN_CACHE_DIR"):
        return Path(os.environ["PCNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pcnn"


def _cpu_supported() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in (
        "AVX2",
        "AVX512",
    )


def build(source: Path = SOURCE, directory: Path | None = None) -> Path:
    """Compile `source` into the cache (once per source and flags) and return the library's path.

    The library is written under a temporary name and renamed into place, so that processes building it
    at the same time (the trainer and its helper) never load a half-written file."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on PATH")
    key = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    directory = cache_dir() if directory is None else directory
    library = directory / f"{source.stem}-{key}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        partial = Path(scratch) / library.name
        result = subprocess.run(
            [compiler, *FLAGS, str(source), "-o", str(partial)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(partial, library)
    return library


def wanted(capability: str | None = None) -> bool:
    """Whether to use the kernel where it can run: `PCNN_NATIVE=1` or `0` in the environment decides; by
    default only on AVX2 CPUs, where it took 0.63-0.80 of oneDNN's time at the large layers and made the
    step 1.02-1.08x faster. On AVX-512 CPUs oneDNN's own AVX-512 kernels match it: the step was 1.00x on
    an Intel Xeon and 0.99x on an AMD EPYC (the `cpu` profile in fp32, one process), so it stays off there.
    """
    setting = os.environ.get("PCNN_NATIVE")
    if setting is not None:
        return setting != "0"
    return (capability or torch.backends.cpu.get_cpu_capability()) == "AVX2"


@functools.cache
def _load() -> Callable[..., None] | None:
    if not wanted() or not _cpu_supported():
        return None
    try:
        function = ctypes.CDLL(str(build())).pcnn_conv_weight_grad
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"pcnn's CPU weight-gradient kernel is not available ({error}); using the torch formulation",
            stacklevel=3,
        )
        return None
    c_long_p = ctypes.POINTER(ctypes.c_long)
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                         ctypes.c_int, c_long_p, ctypes.c_void_p, ctypes.c_int]  # fmt: skip
    function.restype = None
    return function


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernel runs here (built on the first call); a constant to torch.compile, which cannot
    trace the build or ctypes."""
    return _load() is not None


def conv_weight_grad(x: Tensor, g: Tensor, offsets: list[int], length: int) -> Tensor:
    """grad[t] = g[:length].T @ x[offsets[t] : offsets[t] + length], as one (taps, O, C) tensor.

    x (rows, C) and g (rows, O) are contiguous float32 CPU matrices with C a multiple of 16; the kernel
    uses torch's intra-op thread count."""
    function = _load()
    if function is None:
        raise RuntimeError("pcnn's CPU kernel is not available here (see pcnn.fast.native.available)")
    if x.dtype != torch.float32 or g.dtype != torch.float32 or not (x.is_contiguous() and g.is_contiguous()):
        raise ValueError("the kernel takes contiguous float32 matrices")
    if x.device.type != "cpu" or g.device.type != "cpu":
        raise ValueError("the kernel takes CPU tensors")
    c, o = x.shape[1], g.shape[1]
    if c % CHANNEL_MULTIPLE or length > g.shape[0] or length + max(offsets) > x.shape[0] or min(offsets) < 0:
        raise ValueError(f"bad shapes for the kernel: x {tuple(x.shape)}, g {tuple(g.shape)}, {length} rows")
    out = x.new_empty(len(offsets), o, c)
    taps = (ctypes.c_long * len(offsets))(*offsets)
    threads = torch.get_num_threads()
    function(x.data_ptr(), g.data_ptr(), c, o, length, len(offsets), taps, out.data_ptr(), threads)
    return out
