"""One prepared GPU session: a reference run of the `cpu` model, a `seed`-profile smoke, sampling speed.

Run on a machine with a CUDA GPU (it also runs on a CPU with tiny budgets, for checking the script):

    python benchmarks/gpu_check.py --data-dir DIR --out OUT --ref-minutes 5 --seed-minutes 1.5

It writes, into OUT: `summary.json` (throughput, validation metrics, sampler timings, environment),
the reference run's `reference.pt` (best checkpoint by validation accuracy), `ref_metrics.jsonl`,
`ref_train_loss.csv`, `ref_config.json`, `ref_provenance.json`, and `ref_samples.pt` (uint8 samples of
the reference model: 5 seeds x 25 per class for the course FID, and 250 per class for the matched FID;
FID itself is computed on the CPU machine, which holds the Inception weights). Paths in `summary.json`
are written relative to `<work>` (its scratch folder), never as this machine's absolute paths.

The one-call check of the `seed` profile with the notebook pipeline, recorded under `figures/runs/`, is
`python -m pcnn.gpu_smoke` instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from pcnn.config import apply_overrides, profile
from pcnn.datasets import CPEN455Dataset
from pcnn.evaluation.evaluate import score_split
from pcnn.sampling.sample import sample
from pcnn.training.checkpoint import load_model
from pcnn.training.device import resolve_device
from pcnn.workflow.runrecord import portable


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _throughput(metrics_path: Path) -> float:
    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return float(lines[-1].get("images_per_s", float("nan"))) if lines else float("nan")


def _train(name: str, overrides: list[str], minutes: float, data_dir: str, work: Path, device) -> dict:
    config = apply_overrides(profile(name), overrides + [f"train.max_minutes={minutes}"])
    run_dir = work / name
    start = time.time()
    from pcnn.training.engine import train

    result = train(config, data_dir=data_dir, run_dir=run_dir, progress=False, device=device)
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {
        "profile": name,
        "overrides": overrides,
        "wall_s": time.time() - start,
        "last_metrics": metrics[-1] if metrics else None,
        "best_val_accuracy": max((m.get("val_accuracy") or 0 for m in metrics), default=None),
        "images_per_s_last_epoch": _throughput(run_dir / "metrics.jsonl"),
        "run_dir": str(run_dir),
        "best_checkpoint": str(result.best_checkpoint),
    }


def _sample_timed(model, labels: torch.Tensor, seed: int, device: torch.device) -> tuple[torch.Tensor, float]:
    generator = torch.Generator(device=device).manual_seed(seed)
    _sync(device)
    start = time.time()
    images = sample(model, labels.to(device), generator=generator, method="cached", image_size=32)
    _sync(device)
    return ((images.cpu() + 1) * 127.5).round().to(torch.uint8), time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ref-minutes", type=float, default=5.0)
    parser.add_argument("--seed-minutes", type=float, default=1.5)
    parser.add_argument("--per-class", type=int, default=25, help="course-protocol samples per class")
    parser.add_argument("--matched-per-class", type=int, default=250)
    parser.add_argument("--fid-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="extra overrides for the reference run")
    args = parser.parse_args()

    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/pcnn_gpu_check")
    shutil.rmtree(work, ignore_errors=True)
    summary: dict = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }

    def save() -> None:
        record = portable(json.loads(json.dumps(summary, default=str)), {str(work): "<work>"})
        (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")

    ref_overrides = [
        f"train.num_workers={args.workers}",
        "train.eval_every=5",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.compile=off",
        *args.set,
    ]
    summary["reference"] = _train("cpu", ref_overrides, args.ref_minutes, args.data_dir, work, device)
    save()
    ref_dir = work / "cpu"
    shutil.copy(summary["reference"]["best_checkpoint"], out / "reference.pt")
    for name in ("metrics.jsonl", "train_loss.csv", "config.json", "provenance.json"):
        shutil.copy(ref_dir / name, out / f"ref_{name}")

    model = load_model(out / "reference.pt", device=device)
    val = CPEN455Dataset(args.data_dir, "validation")
    scores = score_split(model, val, batch_size=128, device=device, progress=False)
    summary["reference_validation"] = {k: v for k, v in scores.metrics().items()}
    save()

    k = model.config.num_classes
    course_labels = torch.arange(k).repeat_interleave(args.per_class)
    samples, times = {}, []
    for seed in range(args.fid_seeds):
        images, seconds = _sample_timed(model, course_labels, seed, device)
        samples[f"course_seed{seed}"] = images
        times.append(seconds)
    matched_labels = torch.arange(k).repeat_interleave(args.matched_per_class)
    samples["matched"], matched_s = _sample_timed(model, matched_labels, 1000, device)
    samples["course_labels"], samples["matched_labels"] = course_labels, matched_labels
    torch.save(samples, out / "ref_samples.pt")
    summary["reference_sampling_s"] = {"course_100": times, "matched_1000": matched_s}
    save()

    seed_overrides = [
        f"train.num_workers={args.workers}",
        "train.eval_every=1",
        "train.eval_subset=256",
        "train.sample_every=0",
        "train.checkpoint_every=0",
        "train.epochs=3",
    ]
    summary["seed_smoke"] = _train("seed", seed_overrides, args.seed_minutes, args.data_dir, work, device)
    save()
    seed_model = load_model(summary["seed_smoke"]["best_checkpoint"], device=device)
    _, seconds = _sample_timed(seed_model, course_labels, 0, device)
    summary["seed_sampling_100_cached_s"] = seconds
    save()
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
