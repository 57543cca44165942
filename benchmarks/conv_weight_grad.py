"""Weight gradient of the model's stride-1 convolutions: oneDNN's kernel against `pcnn.fast.convgrad`.

Each row is one layer shape of the benchmark settings (`cpu`-profile width at batch 16, `seed` width at
batch 32), channels-last as the fast path runs them. Three ways alternate and their medians are compared,
so that load changes on a shared machine hit all alike: oneDNN's kernel, `pcnn.fast.convgrad`'s torch
matrix products (its fallback) and `pcnn.fast.native`'s kernel (what `pcnn.fast.convgrad` runs where it
can; "n/a" where it cannot).

    python benchmarks/conv_weight_grad.py
    python benchmarks/conv_weight_grad.py --reps 40 --threads 2
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcnn import native  # noqa: E402
from pcnn.fast.convgrad import padded_conv_weight_grad  # noqa: E402

# batch, image size, input channels (a concat_elu: twice the filters), output channels, kernel
SHAPES = [
    (16, 32, 80, 40, (2, 3)),
    (16, 32, 80, 80, (2, 3)),
    (16, 32, 80, 80, (2, 2)),
    (16, 16, 80, 80, (2, 3)),
    (16, 8, 80, 80, (2, 3)),
    (32, 32, 256, 128, (2, 3)),
    (32, 32, 256, 256, (2, 3)),
    (32, 16, 256, 256, (2, 3)),
]


def onednn_weight_grad(padded: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.convolution_backward(
        grad_out, padded, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (False, True, False)
    )[1]


def median_ms(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def torch_products(padded: torch.Tensor, grad_out: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    with mock.patch.object(native, "available", lambda: False):
        return padded_conv_weight_grad(padded, grad_out, kh, kw)


def time_layer(
    batch: int, size: int, cin: int, cout: int, kernel: tuple[int, int], reps: int
) -> dict[str, float]:
    """Median milliseconds of each weight-gradient kernel for one layer, after checking they agree."""
    kh, kw = kernel
    pad = (kw // 2, (kw - 1) // 2, kh - 1, 0)  # the model's: 2x3 down-shifted, 2x2 down-right-shifted
    padded = F.pad(torch.randn(batch, cin, size, size), pad).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(batch, cout, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(cout, cin, kh, kw)
    calls = {
        "onednn": functools.partial(onednn_weight_grad, padded, grad_out, weight),
        "products": functools.partial(torch_products, padded, grad_out, kh, kw),
    }
    if native.available():
        calls["native"] = functools.partial(padded_conv_weight_grad, padded, grad_out, kh, kw)
    want = calls["onednn"]()
    for name in ("products", "native"):
        if name in calls:
            torch.testing.assert_close(calls[name](), want, rtol=1e-4, atol=1e-2)
    return median_ms(calls, reps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=20, help="timed calls per kernel (alternating)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; medians of {args.reps} calls")
    print("times in ms; the ratios are each kernel's time over oneDNN's")
    print(f"{'layer':<34} {'oneDNN':>7} {'products':>9} {'native':>7} {'ratio':>7} {'ratio':>7}")
    for batch, size, cin, cout, kernel in SHAPES:
        ms = time_layer(batch, size, cin, cout, kernel, args.reps)
        layer = f"B{batch} {size}x{size} {cin}->{cout} {kernel[0]}x{kernel[1]}"
        row = [f"{layer:<34}", f"{ms['onednn']:>7.2f}", f"{ms['products']:>9.2f}"]
        row.append(f"{ms['native']:>7.2f}" if "native" in ms else f"{'n/a':>7}")
        row.append(f"{ms['products'] / ms['onednn']:>6.2f}x")
        row.append(f"{ms['native'] / ms['onednn']:>6.2f}x" if "native" in ms else f"{'n/a':>7}")
        print(" ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
