"""One call for a lent GPU: a short `seed`-profile training run, the notebook pipeline on it, and a record.

    python -m pcnn.gpu_smoke --data-dir $PCNN_DATA_DIR            # 3 minutes of training, then the pipeline

The `seed` profile is the original report's GPU configuration, which this project has never run on a GPU.
A device session is short, so this checks that the configuration runs there rather than reproducing the
report: it trains the profile for `--minutes` (a budget in the run's own config, so the run is resumable
and the pipeline's notebook 01 loads the finished run instead of retraining it), then runs the six
notebooks with stage sizes cut to fit minutes (`smoke_sizes`: one FID seed, a short fine-tune and a
two-variant ablation on the seed's reduced model), without the LaTeX report. It writes
`figures/runs/<name>/`, ready to commit: the run's records (`config.json`, `provenance.json`,
`metrics.jsonl`, `train_loss.csv`), `gpu_smoke.json` (GPU, precision and why, steps, images/s,
validation accuracy, FID, seconds per stage) and a README saying what the numbers are, and it updates
the index `figures/runs/README.md`. Paths in them are portable (`pcnn.workflow.runrecord.portable`).

Without a CUDA device it refuses at once (exit 2): a CPU run of the `seed` profile would say nothing
about the GPU and take hours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

PROFILE = "seed"
RECORD = "gpu_smoke.json"
RUN_FILES = ("config.json", "provenance.json", "metrics.jsonl", "train_loss.csv")


class SmokeError(RuntimeError):
    """The smoke cannot run here (no CUDA device, no data, a bad argument)."""


def smoke_sizes(minutes: float) -> dict[str, Any]:
    """Stage sizes of the `seed` profile cut for a device session of minutes (`pcnn.config.StageSizes`).

    The training override is the same one the smoke trains with, so that notebook 01 finds the finished
    run. Evaluation stays on every validation image (seconds on a GPU); everything that samples or trains
    again is cut: one FID seed, 50 matched samples per class, the naive sampler estimated, a one-minute
    fine-tune, and two ablation variants of half a minute on the seed's reduced model, not compiled (a
    compile per variant would cost more than its training).
    """
    return {
        "train_overrides": [f"train.max_minutes={minutes:g}"],
        "eval_subset": 0,
        "prefix_images": 0,
        "fid_seeds": [0],
        "course_floor_seeds": 1,
        "matched_per_class": 50,
        "sample_batch": 200,
        "speed_batches": [1, 32],
        "naive_speed": "estimate",
        "finetune_budget": {"max_minutes": 1.0},
        "ablation_budget": {"max_minutes": 0.5},
        "ablation_overrides": ["model.nr_filters=40", "model.nr_logistic_mix=10", "train.compile=off"],
        "ablation_variants": ["none", "gated-bias"],
        "ablation_fid_per_class": 0,
        "ablation_fid_seeds": [],
        "baseline_epochs": 5,
        "baseline_minutes": 0.5,
    }


def require_cuda() -> Any:
    """The CUDA device, or SmokeError saying there is none."""
    import torch

    if not torch.cuda.is_available():
        raise SmokeError(
            "no CUDA device: the GPU smoke runs the seed profile on a GPU only (on this machine torch sees "
            f"none; torch {torch.__version__}, built for CUDA {torch.version.cuda}). Nothing was run."
        )
    return torch.device("cuda")


def device_facts(device: Any) -> dict[str, Any]:
    """The GPU as the record names it: model, compute capability, memory, torch and CUDA versions."""
    import torch

    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def _last(metrics: list[dict[str, Any]], key: str) -> Any:
    return next((m[key] for m in reversed(metrics) if m.get(key) is not None), None)


def build_record(
    *,
    data: str,
    device: dict[str, Any],
    precision: str,
    minutes: float,
    train_status: str,
    train_seconds: float,
    metrics: list[dict[str, Any]],
    pipeline: dict[str, Any] | None,
    results: dict[str, Any] | None,
    command: list[str],
) -> dict[str, Any]:
    """`gpu_smoke.json`: what ran where and what it measured (None where a stage did not run)."""
    validation = ((results or {}).get("training") or {}).get("validation") or {}
    fid = ((results or {}).get("sampling") or {}).get("fid") or {}
    return {
        "what": f"`{PROFILE}`-profile GPU smoke: {minutes:g} minutes of training, then the pipeline on it",
        "command": command,
        "data": data,
        "device": device,
        "precision": precision,
        "training": {
            "budget_minutes": minutes,
            "status": train_status,
            "seconds": round(train_seconds, 1),
            "steps": _last(metrics, "step"),
            "epochs": _last(metrics, "epoch"),
            "images_per_s": _last(metrics, "images_per_s"),
            "val_accuracy": _last(metrics, "val_accuracy"),
            "val_bits_per_dim": _last(metrics, "val_bits_per_dim"),
        },
        "pipeline": None
        if pipeline is None
        else {
            "seconds": {k: round(v, 1) for k, v in (pipeline.get("seconds") or {}).items()},
            "validation": {
                key: validation.get(key)
                for key in ("accuracy", "accuracy_ci95", "macro_f1", "bits_per_dim", "n")
            },
            "fid_course": (fid.get("course") or {}).get("model"),
            "fid_course_floor": (fid.get("course") or {}).get("floor"),
            "fid_note": fid.get("note"),
        },
    }


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else "not measured"


def record_readme(record: dict[str, Any]) -> str:
    """The folder's README: what the smoke is (not a result) and its numbers, from the record."""
    train, device = record["training"], record["device"]
    title = f"`{PROFILE}`-profile GPU smoke on {device['name']}"
    lines = [
        f"# {title} ({train['budget_minutes']:g} minutes of training; not a result)",
        "",
        "Written by `python -m pcnn.gpu_smoke` (its command is in `gpu_smoke.json`). It checks that the",
        "original report's configuration trains and runs through the notebook pipeline on a GPU: minutes of",
        "a run planned for 180 are far from that report's numbers, and the pipeline's stages ran at cut",
        "sizes (`pcnn.gpu_smoke.smoke_sizes`).",
        "",
        f"- GPU: {device['name']}, compute capability {device['compute_capability']}, "
        f"{device['memory_gib']} GiB; torch {device['torch']}, CUDA {device['cuda']}.",
        f"- Data: {record['data']}; precision {record['precision']}.",
        f"- Training: {train['status']} after {_fmt(train['steps'], '{:d}')} steps "
        f"({_fmt(train['epochs'], '{:d}')} epochs) in {train['seconds']:.0f} s; "
        f"{_fmt(train['images_per_s'], '{:.1f}')} training images/s in its last evaluated epoch.",
    ]
    pipeline = record.get("pipeline")
    if pipeline is None:
        lines.append("- The pipeline did not run (`--no-pipeline`).")
    else:
        validation = pipeline.get("validation") or {}
        ci = validation.get("accuracy_ci95")
        interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
        fid, floor = pipeline.get("fid_course") or {}, pipeline.get("fid_course_floor") or {}
        note = f"; {pipeline['fid_note']}" if pipeline.get("fid_note") else ""
        stages = ", ".join(f"{name} {sec:.0f} s" for name, sec in (pipeline.get("seconds") or {}).items())
        lines += [
            f"- Validation, every image, Bayes' rule: accuracy {_fmt(validation.get('accuracy'), '{:.1%}')}"
            f"{interval}, macro F1 {_fmt(validation.get('macro_f1'), '{:.3f}')}, "
            f"{_fmt(validation.get('bits_per_dim'), '{:.3f}')} bits/dim.",
            f"- Course-protocol FID {_fmt(fid.get('mean'), '{:.1f}')} against a real-data floor of "
            f"{_fmt(floor.get('mean'), '{:.1f}')} (one sampling seed{note}).",
            f"- Pipeline stages: {stages}.",
        ]
    lines += ["", "The other files are the training run's records."]
    return "\n".join(lines) + "\n"


def write_record(out: Path, run_dir: Path, record: dict[str, Any], roots: dict[str, str]) -> list[Path]:
    """Write the folder `out` (run records, `gpu_smoke.json`, README) and refresh the index beside it."""
    from pcnn.workflow.runrecord import portable, write_runs_index

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in RUN_FILES:
        source = run_dir / name
        if not source.is_file():
            continue
        target = out / name
        if source.suffix == ".json":
            target.write_text(json.dumps(portable(json.loads(source.read_text()), roots), indent=2) + "\n")
        else:
            shutil.copy2(source, target)
        written.append(target)
    record = portable(record, roots)
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    (out / "README.md").write_text(record_readme(record))
    written += [out / RECORD, out / "README.md", write_runs_index(out.parent)]
    return written


def run_smoke(*, data_dir: str | None, minutes: float, name: str, build_dir: Path, pipeline: bool) -> Path:
    """Train, run the pipeline, write the record; returns the record folder. SmokeError before any work
    when there is no CUDA device or no data."""
    from pcnn.config import apply_overrides, profile
    from pcnn.datasets import DataError, make_synthetic, resolve_data_dir, synthetic_data_dir
    from pcnn.training.engine import describe_precision, train
    from pcnn.workflow.pipeline import repo_root, run_pipeline
    from pcnn.workflow.runrecord import data_label, machine_roots, read_metrics

    device = require_cuda()
    root = repo_root()
    if root is None:
        raise SmokeError("run it from a checkout: the record goes to <checkout>/figures/runs/")
    if data_dir == "synthetic":
        data_root = make_synthetic(synthetic_data_dir())
    else:
        try:
            data_root = resolve_data_dir(data_dir)
        except DataError as exc:
            raise SmokeError(str(exc)) from None
        if data_label(data_root) != "<CPEN455 data>":
            raise SmokeError(
                f"{data_root} is the synthetic stand-in set: give the course data with --data-dir or "
                "$PCNN_DATA_DIR (or --data-dir synthetic to run on the stand-in set on purpose)"
            )
    sizes = smoke_sizes(minutes)
    config = apply_overrides(profile(PROFILE), sizes["train_overrides"])
    precision = describe_precision(config.train, device)
    print(f"[gpu-smoke] {device_facts(device)['name']}: precision {precision}", flush=True)
    build = build_dir.resolve() / PROFILE
    run_dir = build / "runs" / "main"
    tick = time.monotonic()
    result = train(config, data_dir=data_root, run_dir=run_dir, resume=True, progress=False, device=device)
    train_seconds = time.monotonic() - tick
    print(f"[gpu-smoke] training {result.status} at step {result.step} in {train_seconds:.0f} s", flush=True)
    summary = results = None
    if pipeline:
        summary = run_pipeline(
            PROFILE, data_dir=str(data_root), build_dir=build_dir, device="cuda", sizes=sizes, report=False
        )
        results = json.loads((Path(summary["figures"]) / "results.json").read_text())
    record = build_record(
        data=data_label(data_root),
        device=device_facts(device),
        precision=precision,
        minutes=minutes,
        train_status=result.status,
        train_seconds=train_seconds,
        metrics=read_metrics(run_dir),
        pipeline=summary,
        results=results,
        command=[Path(sys.argv[0]).name, *sys.argv[1:]],
    )
    out = root / "figures" / "runs" / name
    roots = {**machine_roots(data_root, build=build, checkout=root), str(Path.cwd()): ""}
    write_record(out, run_dir, record, roots)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m pcnn.gpu_smoke`: exit 0 with the record written, 2 when it cannot run here, 1 on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m pcnn.gpu_smoke",
        description=__doc__.split("\n\n")[0]
        + " Needs a CUDA device; writes figures/runs/NAME/ and updates figures/runs/README.md.",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="course data (default: $PCNN_DATA_DIR); `synthetic` runs on the stand-in set on purpose",
    )
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="training budget of the seed-profile run (default 3)"
    )
    parser.add_argument(
        "--name", default="gpu_seed_smoke", help="record folder under figures/runs/ (default gpu_seed_smoke)"
    )
    parser.add_argument(
        "--build-dir", default="build/gpu_smoke", help="build root of the run and the pipeline"
    )
    parser.add_argument("--no-pipeline", action="store_true", help="train and record only")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be positive, got {args.minutes:g}")
    if not args.name or Path(args.name).name != args.name or args.name.startswith("."):
        parser.error(f"--name must be a plain folder name, got {args.name!r}")
    from pcnn.workflow.pipeline import PipelineError

    try:
        out = run_smoke(
            data_dir=args.data_dir,
            minutes=args.minutes,
            name=args.name,
            build_dir=Path(args.build_dir),
            pipeline=not args.no_pipeline,
        )
    except SmokeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"error: the training run is kept; the pipeline failed: {exc}", file=sys.stderr)
        return 1
    print(f"[gpu-smoke] record: {out} (commit it with figures/runs/README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
