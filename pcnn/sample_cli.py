"""`pcnn sample`: draw images of every class from a checkpoint, in the course's file layout, with a grid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pcnn.checkpoint import CheckpointError, load_model
from pcnn.data import CLASS_NAMES
from pcnn.device import resolve_device
from pcnn.fid import save_course_samples
from pcnn.sample import METHODS, sample, sample_grid_figure


def run_sample(args: argparse.Namespace) -> int:
    """Sample `--per-class` images per class; write the course JPEGs and grid.png. Exit 0, or 2: bad input."""
    if args.per_class < 1 or args.batch_size < 0 or not args.temperature > 0:
        print("error: --per-class must be >= 1, --batch-size >= 0 and --temperature > 0", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        model = load_model(args.checkpoint, device=device, weights=args.weights)
    except (CheckpointError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = model.config
    if not model.conditional:
        note = "the unconditional variant ignores labels; files are named by class only to fill the layout"
        print(f"note: {note}", file=sys.stderr)
    labels = torch.arange(config.num_classes, device=device).repeat_interleave(args.per_class)
    batch = args.batch_size or len(labels)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    parts = [
        sample(
            model,
            labels[start : start + batch],
            generator=generator,
            method=args.method,
            temperature=args.temperature,
            image_size=config.image_size,
            progress=True,
        ).cpu()
        for start in range(0, len(labels), batch)
    ]
    images, labels = torch.cat(parts), labels.cpu()
    out = Path(args.out)
    written = save_course_samples(images, labels, out, png=args.png)
    grid = sample_grid_figure(images, labels, CLASS_NAMES, out / "grid.png")
    print(f"wrote {len(written)} files to {out} and the grid {grid}")
    return 0


def add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pcnn sample` on an argparse subparsers object (`set_defaults(func=run_sample)`)."""
    parser = subparsers.add_parser(
        "sample",
        help="generate images of every class from a checkpoint (course file layout plus a labelled grid)",
        description=(
            "Draw --per-class images of each class with the exact cached sampler (or the naive one, one full "
            "network pass per pixel; both give the same images for the same seed) and write them as "
            "<out>/Class{k}_image_{nn}.jpg, as the course saves samples, plus <out>/grid.png with one row "
            "per class. The images depend on --seed, --batch-size and the device."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file written by `pcnn train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--per-class", type=int, default=25, help="images per class (the course uses 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    parser.add_argument("--method", choices=METHODS, default="cached", help="cached (fast) or naive (slow)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="scales the logistics and divides the mixture logits"
    )
    parser.add_argument("--png", action="store_true", help="also write lossless PNG copies to <out>/png/")
    parser.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto", help="EMA or raw")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--batch-size", type=int, default=0, help="images per sampling batch (0: all)")
    parser.set_defaults(func=run_sample)
