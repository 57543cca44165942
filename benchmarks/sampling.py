"""Time the naive and the cached sampler on the `cpu` and `seed` profiles' models (untrained weights).

The cached sampler draws all images. One naive pixel step is one full network pass over the batch, the same
cost at every pixel, so the naive time is measured over the first few pixel steps and extrapolated to all
S*S steps (the output says so).

    .venv/bin/python benchmarks/sampling.py [--quick] [--device auto] [--threads N] [--per-class N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from pcnn.config import profile
from pcnn.core.model import build_model
from pcnn.sampling.sample import draw_pixel, sample
from pcnn.training.device import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cached(model: torch.nn.Module, labels: torch.Tensor, size: int, device: torch.device) -> float:
    """Seconds for the cached sampler to draw one image per label."""
    generator = torch.Generator(device=device).manual_seed(0)
    sample(model, labels[:1], generator=generator, method="cached", image_size=size)  # warm-up (CUDA init)
    _sync(device)
    start = time.perf_counter()
    sample(model, labels, generator=generator, method="cached", image_size=size)
    _sync(device)
    return time.perf_counter() - start


def time_naive_steps(model: torch.nn.Module, labels: torch.Tensor, size: int, steps: int) -> float:
    """Seconds for the first `steps` pixel steps of the naive sampler (its loop body, one full pass each)."""
    device = labels.device
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.zeros(len(labels), 3, size, size, device=device)
    with torch.no_grad():
        model(x, labels)  # warm-up: first-call allocations are not part of a step
        _sync(device)
        start = time.perf_counter()
        for step in range(steps):
            r, c = divmod(step, size)
            x[:, :, r, c] = draw_pixel(model(x, labels)[:, :, r, c], generator)
        _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 images and 1 naive step per profile")
    parser.add_argument("--per-class", type=int, default=0, help="images per class (0: 25, quick 2)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--naive-steps", type=int, default=0, help="naive steps to time (0: 4, quick 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    per_class = args.per_class or (2 if args.quick else 25)
    naive_steps = args.naive_steps or (1 if args.quick else 4)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    threads = torch.get_num_threads()
    print(f"device {device}, torch {torch.__version__}, {threads} CPU threads, load average {load:.1f}")
    for name in ("cpu", "seed"):
        config = profile(name).model
        torch.manual_seed(0)
        model = build_model(config).to(device).eval()
        size, k = config.image_size, config.num_classes
        labels = torch.arange(k, device=device).repeat_interleave(per_class)
        cached = time_cached(model, labels, size, device)
        naive_part = time_naive_steps(model, labels, size, naive_steps)
        naive = naive_part * size * size / naive_steps
        print(
            f"profile {name:4s} (nr_resnet {config.nr_resnet}, nr_filters {config.nr_filters}, "
            f"mix {config.nr_logistic_mix}), {len(labels)} images of {size}x{size}:\n"
            f"  cached {cached:9.1f} s\n"
            f"  naive  {naive:9.1f} s  (extrapolated: {naive_part:.1f} s for {naive_steps} of {size * size} "
            f"pixel steps)\n"
            f"  cached is {naive / cached:.0f}x faster"
        )


if __name__ == "__main__":
    main()
