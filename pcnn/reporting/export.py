"""Export a run's checkpoint as a small, shareable file with a sidecar of its sha256 and metrics.

`pcnn export runs/cpu-ref --out checkpoints/reference.pt` keeps only what evaluation and sampling need
(the model config, one set of weights, the run config and the metrics of the evaluation it was chosen
at), so the committed reference checkpoint stays a few megabytes; `reference.json` beside it records
the sha256 that `verify_export` (and the test suite) checks, so a corrupted or replaced file is caught.
The sidecar and the checkpoint are committed, so they name paths (the source, a fine-tune's
`init_checkpoint`) relative to the working folder, never as absolute paths of this machine
(`pcnn.workflow.runrecord.portable`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pcnn.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pcnn.workflow.runrecord import machine_roots, portable

SIDECAR_SUFFIX = ".json"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_source(source: str | Path, which: str = "best") -> Path:
    """A checkpoint file, or `<run>/checkpoints/<which>.pt` of a run folder."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def export_checkpoint(
    source: str | Path,
    out: str | Path,
    *,
    weights: str = "auto",
    which: str = "best",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the slim checkpoint to `out` and its sidecar `out.json`; returns the sidecar's content.

    `weights`: "auto" keeps the Polyak-averaged weights when the checkpoint has them, "raw" the trained
    ones. `extra` is added to the sidecar (for example the command that produced the run).
    """
    if weights not in ("auto", "raw"):
        raise ValueError(f"weights must be auto or raw, got {weights!r}")
    src = resolve_source(source, which)
    state = load_checkpoint(src)
    use_ema = weights == "auto" and state.get("ema") is not None
    roots = {**machine_roots(), str(Path.cwd()): ""}
    slim = {
        "model_config": state["model_config"],
        "model": state["ema"] if use_ema else state["model"],
        "ema": None,
        "run_config": portable(state.get("run_config"), roots),  # a fine-tune's init_checkpoint path
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "metrics": state.get("metrics"),
    }
    out = save_checkpoint(out, slim)
    sidecar = {
        "file": out.name,
        "sha256": sha256_of(out),
        "bytes": out.stat().st_size,
        "source": str(src),
        "weights": "ema" if use_ema else "raw",
        "epoch": slim["epoch"],
        "step": slim["step"],
        "metrics": slim["metrics"],
        "model_config": slim["model_config"],
        **(extra or {}),
    }
    sidecar = portable(sidecar, roots)
    side = out.with_suffix(SIDECAR_SUFFIX)
    tmp = side.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, side)
    return sidecar


def verify_export(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint against its sidecar's sha256; returns the sidecar, raises CheckpointError."""
    path = Path(path)
    side = path.with_suffix(SIDECAR_SUFFIX)
    if not side.is_file():
        raise CheckpointError(f"{path} has no sidecar {side.name} with its sha256")
    sidecar = json.loads(side.read_text())
    actual = sha256_of(path)
    if actual != sidecar.get("sha256"):
        raise CheckpointError(f"{path}: sha256 {actual} does not match {side.name} ({sidecar.get('sha256')})")
    return sidecar


def _run(args: argparse.Namespace) -> int:
    try:
        extra = {"command": args.command_text} if args.command_text else None
        sidecar = export_checkpoint(
            args.source, args.out, weights=args.weights, which=args.which, extra=extra
        )
    except (CheckpointError, ValueError) as exc:
        print(f"pcnn export: {exc}")
        return 1
    metrics = sidecar.get("metrics") or {}
    accuracy = metrics.get("val_accuracy")
    shown = f", validation accuracy {accuracy:.1%}" if isinstance(accuracy, float) else ""
    print(f"wrote {args.out} ({sidecar['bytes'] / 1e6:.1f} MB, {sidecar['weights']} weights{shown})")
    print(f"sha256 {sidecar['sha256']} recorded in {Path(args.out).with_suffix(SIDECAR_SUFFIX)}")
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a small checkpoint (one set of weights) with its sha256 and metrics",
        description=(
            "Export a run's checkpoint for sharing or committing: keeps the model config, one set of weights "
            "(Polyak-averaged when present), the run config and its metrics, and writes OUT.json with the "
            "sha256, size and metrics. Example: pcnn export runs/cpu-ref --out checkpoints/reference.pt"
        ),
    )
    parser.add_argument("source", help="a checkpoint file or a run folder (uses checkpoints/<which>.pt)")
    parser.add_argument("--out", required=True, help="the file to write (its sidecar is OUT with .json)")
    parser.add_argument(
        "--which", default="best", help="checkpoint of a run folder: best, last, epoch_0010..."
    )
    parser.add_argument("--weights", default="auto", choices=["auto", "raw"], help="auto: EMA when present")
    parser.add_argument("--command-text", default="", help="the command that produced the run, recorded")
    parser.set_defaults(func=_run)
