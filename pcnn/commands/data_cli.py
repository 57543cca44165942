"""The ``pcnn data`` command: inspect, generate, download and validate data roots.

``pcnn.commands.cli`` registers it with ``add_data_parser(subparsers)`` and dispatches to ``args.func(args)``;
every handler returns the process exit code (0 success, 1 problems found, 2 unusable input).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pcnn import datasets as data

_DATA_DIR_HELP = (
    "data root in the CPEN455 course layout ({train,validation,test}.csv and image folders); default:"
    f" ${data.DATA_DIR_ENV} if set, else the built-in synthetic set"
)


def _error(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"data root: {summary['root']}")
    for split, info in summary["splits"].items():
        counts = info["class_counts"]
        detail = "unlabelled" if counts is None else ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"  {split:<10} {info['images']:>6} images  ({detail})")
    print(f"image sizes: {summary['image_sizes']}")
    print(f"image modes: {summary['modes']}")
    print(f"grayscale images: {summary['grayscale']} ({summary['single_channel']} stored single-channel)")


def _info(args: argparse.Namespace) -> int:
    try:
        summary = data.summarize(data.resolve_data_dir(args.data_dir))
    except data.DataError as exc:
        return _error(exc)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return 0


def _synth(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else data.synthetic_data_dir()
    counts = {"train": args.train, "validation": args.per_class, "test": args.per_class}
    try:
        root = data.make_synthetic(out, seed=args.seed, counts=counts)
    except data.DataError as exc:
        return _error(exc)
    print(f"synthetic data set (seed {args.seed}) at {root}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    try:
        root = data.fetch(args.out, url=args.url, sha256=args.sha256)
    except data.DataError as exc:
        return _error(exc)
    print(f"course data at {root}; use it with --data-dir {root.resolve()} or")
    print(f"  export {data.DATA_DIR_ENV}={root.resolve()}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        root = data.resolve_data_dir(args.data_dir)
    except data.DataError as exc:
        return _error(exc)
    problems = data.check_data_root(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"OK: {root}")
    return 0


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``data`` with its sub-commands ``info``, ``synth``, ``fetch`` and ``check``."""
    parser = subparsers.add_parser(
        "data",
        help="inspect, generate, download or check a data set",
        description="Work with data roots in the CPEN455 course layout.",
    )
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info",
        help="counts per split and class, image sizes, grayscale images",
        description="Summarise a data root: images per split and class, image sizes and modes, and the"
        " number of grayscale images (decodes every image once).",
    )
    info.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=_info)

    synth = commands.add_parser(
        "synth",
        help="generate the synthetic four-class data set",
        description="Write a deterministic synthetic four-class set (burger, panda, koala, pizza drawings)"
        " in the course layout; the same seed gives byte-identical files, and re-running on a complete"
        " set does nothing.",
    )
    synth.add_argument(
        "--out", type=Path, default=None, help="output folder (default: the built-in synthetic data dir)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--train", type=int, default=100, help="training images per class (default: 100)")
    synth.add_argument(
        "--per-class", type=int, default=25, help="validation and test images per class (default: 25)"
    )
    synth.set_defaults(func=_synth)

    fetch = commands.add_parser(
        "fetch",
        help="download the course data (needs internet)",
        description="Download the course repository archive (DSL-Lab/CPEN455HW-2023W2), verify it and"
        " install its data/ folder. The archive's SHA-256 is printed so that it can be pinned with"
        " --sha256; the validation and test split files are always checked against pinned hashes."
        f" Offline, copy the data to a folder and use --data-dir or ${data.DATA_DIR_ENV} instead.",
    )
    fetch.add_argument(
        "--out", type=Path, default=Path("data/cpen455"), help="destination folder (default: data/cpen455)"
    )
    fetch.add_argument("--sha256", default=None, metavar="HEX", help="expected SHA-256 of the archive")
    fetch.add_argument("--url", default=data.COURSE_ARCHIVE_URL, help="archive URL (default: %(default)s)")
    fetch.set_defaults(func=_fetch)

    check = commands.add_parser(
        "check",
        help="validate every CSV row and decode every image",
        description="Validate a data root: every CSV row (format, labels), and every image fully decoded."
        " Prints one line per problem (file, line, image, reason) and exits 1 if there are any,"
        " else prints OK and exits 0.",
    )
    check.add_argument("--data-dir", type=Path, default=None, help=_DATA_DIR_HELP)
    check.set_defaults(func=_check)
