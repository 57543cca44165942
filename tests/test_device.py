"""Process settings of `pcnn.training.device`."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLIBC_ONLY = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# Allocates, writes and frees blocks of 1-8 MiB through glibc (as torch's CPU allocator does for a step's
# activations), and prints how many pages the process faulted in over five more rounds after the first.
CHURN = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "keep":
    from pcnn.training.device import keep_freed_memory
    keep_freed_memory()
SIZES = [n << 18 for n in (4, 16, 8, 32, 6, 12, 24, 6)]
def churn():
    blocks = [libc.malloc(size) for size in SIZES]
    for block, size in zip(blocks, SIZES):
        ctypes.memset(block, 1, size)
    for block in blocks:
        libc.free(block)
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return int(out.stdout.split()[-1])


@GLIBC_ONLY
def test_keep_freed_memory_stops_refaulting_freed_blocks():
    default, kept = _faults("default"), _faults("keep")
    # 27 MiB a round (6900 pages): glibc's defaults hand them back to the OS and fault them in again
    assert default > 20000, f"the default allocator did not refault ({default} faults): the test is void"
    assert kept < 500, f"{kept} page faults with keep_freed_memory against {default} without"


@GLIBC_ONLY
def test_keep_freed_memory_can_be_switched_off_by_the_environment():
    assert _faults("keep", PCNN_KEEP_FREED_MEMORY="0") > 20000
