"""`pcnn evaluate`: classify a split with a checkpoint and write metrics, scores and a submission CSV."""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from pcnn.datasets import CPEN455Dataset, DataError, class_counts, resolve_data_dir
from pcnn.evaluation.evaluate import score_split, write_outputs
from pcnn.training.checkpoint import CheckpointError, load_checkpoint, model_from_state, trained_position
from pcnn.training.device import resolve_device


def run_evaluate(args: argparse.Namespace) -> int:
    """Score a split and write its outputs. Exit 0, or 2: bad input (with `error: ...` on stderr)."""
    if args.split != "test" and args.fid is not None:
        print("error: --fid goes into the test split's submission; use it with --split test", file=sys.stderr)
        return 2
    if args.split == "test" and args.subset:
        print("error: the test split's submission needs every test image; drop --subset", file=sys.stderr)
        return 2
    if args.fid is not None and not (math.isfinite(args.fid) and args.fid >= 0):
        print(f"error: --fid must be a finite number >= 0, got {args.fid}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
        state = load_checkpoint(args.checkpoint)
        model = model_from_state(state, device=device, weights=args.weights, source=args.checkpoint)
        position = trained_position(state)
        root = resolve_data_dir(args.data_dir)
        dataset = CPEN455Dataset(root, args.split, image_size=model.config.image_size)
        prior = None
        if args.prior == "train":
            counts = np.asarray(class_counts(root, "train"), dtype=float)
            prior = counts / counts.sum()
    except (CheckpointError, DataError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scores = score_split(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        tta=args.tta,
        prior=prior,
        subset=args.subset,
    )
    paths = write_outputs(scores, args.out, args.split, fid=args.fid, checkpoint=position)
    metrics = scores.metrics()
    shown = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
    print(json.dumps(shown, indent=2))
    for name, path in paths.items():
        print(f"wrote {name}: {path}")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="classify a split by Bayes' rule and write metrics, log-likelihoods and a submission CSV",
        description=(
            "Score every image of a split under every class label, predict the most probable class, and "
            "write <split>_metrics.json (accuracy with a bootstrap 95% interval, macro F1, ECE, confusion "
            "matrix, bits/dim under the true label), <split>_log_likelihoods.csv (log p(x|y) and posteriors "
            "per image), and for the test split the course leaderboard's submission.csv: a header id,label, "
            "one row per test image (its file name, e.g. 0000021.jpg, and the predicted class), and with "
            "--fid a last row fid,<value>."
        ),
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file written by `pcnn train`")
    parser.add_argument("--data-dir", default=None, help="data root (default: $PCNN_DATA_DIR or synthetic)")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (x4 class pairs)")
    parser.add_argument("--subset", type=int, default=0, help="score a fixed subset of this many images")
    parser.add_argument("--tta", action="store_true", help="average log-likelihoods over horizontal flips")
    parser.add_argument(
        "--prior", choices=["uniform", "train"], default="uniform", help="class prior for Bayes' rule"
    )
    parser.add_argument(
        "--weights", choices=["auto", "ema", "raw"], default="auto", help="EMA or raw weights"
    )
    parser.add_argument(
        "--fid",
        type=float,
        default=None,
        help="test split: the FID to report on the leaderboard, written as the submission's last row",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.set_defaults(func=run_evaluate)
