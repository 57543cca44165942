"""`pcnn sample`: draw images of every class from a checkpoint into a samples folder in the course's layout.

The samples folder holds the course's sample files and nothing else, because the course's
`generation_evaluation.py` scores every image in it (pytorch-fid fails on a grid of another size, and a
same-sized extra image would be scored as a sample); the grid and the PNG copies go beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation.fid import check_output_folder, is_inside, remove_samples, save_course_samples
from pcnn.sampling.sample import METHODS, sample_grid_figure
from pcnn.training.checkpoint import CheckpointError, load_model
from pcnn.training.device import resolve_device
from pcnn.workflow.experiments import draw_class_samples


def sibling_path(out: Path, suffix: str) -> Path:
    """`<out><suffix>` beside the folder `out` (e.g. samples -> samples_grid.png), also for `.` or `dir/`."""
    out = out.resolve()
    return out.parent / f"{out.name}{suffix}"


def run_sample(args: argparse.Namespace) -> int:
    """Sample `--per-class` images per class; write the course JPEGs and the grid. Exit 0, or 2: bad input."""
    if args.per_class < 1 or args.batch_size < 0 or not args.temperature > 0 or not args.guidance >= 0:
        print(
            "error: --per-class must be >= 1, --batch-size >= 0, --temperature > 0 and --guidance >= 0",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    grid_path = Path(args.grid) if args.grid is not None else sibling_path(out, "_grid.png")
    png_dir = sibling_path(out, "_png") if args.png else None
    if is_inside(grid_path, out):
        print(f"error: --grid {grid_path} must lie outside the samples folder {out}", file=sys.stderr)
        return 2
    folders = [out] if png_dir is None else [out, png_dir]
    try:
        for folder in folders:
            check_output_folder(folder)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        model = load_model(args.checkpoint, device=device, weights=args.weights)
    except (CheckpointError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not model.conditional:
        note = "the unconditional variant ignores labels; files are named by class only to fill the layout"
        print(f"note: {note}", file=sys.stderr)
    try:
        images, labels = draw_class_samples(
            model,
            args.per_class,
            seed=args.seed,
            device=device,
            batch_size=args.batch_size,
            method=args.method,
            progress=True,
            temperature=args.temperature,
            guidance=args.guidance,
        )
    except ValueError as exc:  # e.g. guidance for the unconditional variant
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in folders:
        remove_samples(folder)
    save_course_samples(images, labels, out, png_dir=png_dir)
    grid = sample_grid_figure(images, labels, CLASS_NAMES, grid_path)
    copies = f" (PNG copies in {png_dir})" if png_dir is not None else ""
    print(f"wrote {len(images)} samples to {out}{copies} and the grid {grid}")
    return 0


def add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pcnn sample` on an argparse subparsers object (`set_defaults(func=run_sample)`)."""
    parser = subparsers.add_parser(
        "sample",
        help="generate images of every class from a checkpoint (course file layout, a labelled grid beside)",
        description=(
            "Draw --per-class images of each class with the exact cached sampler (or the naive one, one full "
            "network pass per pixel; both give the same images for the same seed) and write them as "
            "<out>/Class{k}_image_{nn}.jpg, as the course saves samples. The folder holds nothing else, "
            "since the course's FID scores every image in it: the grid (one row per class) goes to "
            "<out>_grid.png and --png copies to <out>_png/. A folder holding other files is refused; the "
            "samples of an earlier run are replaced. The images depend on --seed, --batch-size and the "
            "device."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file written by `pcnn train`")
    parser.add_argument("--out", required=True, help="samples folder (what the course's FID reads)")
    parser.add_argument("--per-class", type=int, default=25, help="images per class (the course uses 25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    parser.add_argument("--method", choices=METHODS, default="cached", help="cached (fast) or naive (slow)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="scales the logistics and divides the mixture logits"
    )
    parser.add_argument(
        "--grid", default=None, help="labelled grid image, outside --out (default: <out>_grid.png beside it)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="self-guidance weight: the model's own classifier steers the sampler (0, the default: the"
        " model's own distribution; > 0 is not; 14-21 times slower on a CPU;"
        " docs/design.md#guided-sampling)",
    )
    parser.add_argument("--png", action="store_true", help="also write lossless PNG copies to <out>_png/")
    parser.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto", help="EMA or raw")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--batch-size", type=int, default=0, help="images per sampling batch (0: all)")
    parser.set_defaults(func=run_sample)
