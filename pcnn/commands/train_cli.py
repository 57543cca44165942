"""`pcnn train` and `pcnn finetune`: resolve a config from a profile or a checkpoint, plus overrides; train.

Exit codes: 0 for a finished, stopped-on-budget or already-finished run; 1 when the loss diverged (the
last good checkpoint is kept); 2 for bad arguments, data or checkpoints.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

from pcnn.config import PROFILES, RunConfig, apply_overrides, profile
from pcnn.datasets import DataError
from pcnn.training.checkpoint import CheckpointError
from pcnn.training.engine import FINAL_REASONS, NonFiniteLossError, TrainResult, train
from pcnn.workflow.runrecord import RunRecord

DEFAULT_PROFILE = "smoke"


def _default_run_dir(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def _stored_config(run_dir: str | None) -> RunConfig | None:
    if run_dir is None or not (Path(run_dir) / "config.json").is_file():
        return None
    return RunRecord(run_dir).read_config()


def _report(result: TrainResult) -> int:
    if result.status == "already_finished":
        return 0
    shown = {k: v for k, v in (result.metrics[-1] if result.metrics else {}).items() if v is not None}
    print(json.dumps(shown, indent=2))
    print(f"run folder: {result.run_dir}")
    if result.best_checkpoint is not None:
        print(f"best checkpoint: {result.best_checkpoint}")
    if result.status not in FINAL_REASONS:
        print(f"stopped ({result.status}); continue with --resume --run-dir {result.run_dir}")
    return 0


def _run(config: RunConfig, args: argparse.Namespace, run_dir: Path) -> int:
    if args.print_config:
        print(config.to_json())
        return 0
    if args.resume and args.run_dir is None:
        print("error: --resume needs the --run-dir of the run to continue", file=sys.stderr)
        return 2
    try:
        result = train(
            config,
            data_dir=args.data_dir,
            run_dir=run_dir,
            resume=args.resume,
            max_minutes=args.max_minutes,
            progress=not args.no_progress,
        )
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (CheckpointError, DataError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _report(result)


def run_train(args: argparse.Namespace) -> int:
    try:
        stored = _stored_config(args.run_dir) if args.resume and args.profile is None else None
        base = stored if stored is not None else profile(args.profile or DEFAULT_PROFILE)
        config = apply_overrides(base, args.set)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(config.name)
    return _run(config, args, run_dir)


def run_finetune(args: argparse.Namespace) -> int:
    from pcnn.training.finetune import finetune_config

    try:
        if args.checkpoint:
            config = finetune_config(
                args.checkpoint,
                args.set,
                classes=args.classes,
                share=args.class_share,
                holdout=args.holdout,
                patience=args.patience,
            )
        else:
            stored = _stored_config(args.run_dir) if args.resume else None
            if stored is None:
                raise ValueError("give --checkpoint (or --resume with the --run-dir of a fine-tuning run)")
            config = apply_overrides(stored, args.set)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(config.name)
    return _run(config, args, run_dir)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", default=None, help="data root (default: $PCNN_DATA_DIR, else synthetic)"
    )
    parser.add_argument("--run-dir", default=None, help="run folder (default: runs/<name>-<timestamp>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from checkpoints/last.pt (starts fresh if there is none)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget of this session: stop cleanly with a checkpoint, resumable later "
        "(train.max_minutes is the budget of the whole run)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a config field, e.g. --set train.epochs=3 --set model.nr_filters=64 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pcnn train` and `pcnn finetune`."""
    parser = subparsers.add_parser(
        "train",
        help="train PixelCNN++G from a profile (smoke, cpu, seed) with optional overrides",
        description=(
            "Train a model and write a run folder: config.json, provenance.json, metrics.jsonl (one line "
            "per evaluation), train_loss.csv (every step), checkpoints/{last,best,epoch_XXXX}.pt and sample "
            "grids. Profiles: smoke (about a minute on a CPU), cpu (the 60-minute reduced model), seed (the "
            "original report's GPU run). --resume continues exactly where the last checkpoint left off; with "
            "--resume and no --profile the run folder's own config.json is used."
        ),
    )
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default=None, help=f"named profile (default {DEFAULT_PROFILE})"
    )
    _common_arguments(parser)
    parser.set_defaults(func=run_train)

    tune = subparsers.add_parser(
        "finetune",
        help="fine-tune a checkpoint: lower lr, extra augmentation, optional class focus and holdout",
        description=(
            "Fine-tune the model of a checkpoint with a fresh optimiser at a tenth of its last learning "
            "rate, colour jitter and random crops, optionally drawing chosen classes with a fixed share of "
            "each epoch and selecting/early-stopping on a holdout carved from the training split (never on "
            "the validation split). Writes an ordinary run folder."
        ),
    )
    tune.add_argument("--checkpoint", default=None, help="checkpoint to start from (a .pt of `pcnn train`)")
    tune.add_argument("--classes", default="", help="focus classes, comma-separated indices, e.g. 0,3")
    tune.add_argument("--class-share", type=float, default=0.9, help="share of draws from the focus classes")
    tune.add_argument("--holdout", type=float, default=0.0, help="fraction of the training split held out")
    tune.add_argument("--patience", type=int, default=0, help="early-stop after this many evaluations")
    _common_arguments(tune)
    tune.set_defaults(func=run_finetune)
