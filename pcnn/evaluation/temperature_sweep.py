"""`python -m pcnn.temperature_sweep`: how sampling temperature and self-guidance move the class consistency
of samples.

Levers for sample quality, measured rather than guessed: for each temperature and guidance weight
(`pcnn.sampling.guided`; 0 is the model's own distribution), samples of every class from one checkpoint,
judged by the discriminative baseline CNN (`pcnn.evaluation.baseline`), which is trained on the training
split only. Nothing here looks at the validation images, so choosing a
setting from the sweep does not select on validation. Writes `sweep.json` (the judge's consistency with
bootstrap intervals, per class, for each setting), one grid of samples per setting to look at and
`levers.tex`, the report's section on them (`pcnn.reporting.levers`): with `--out figures/sampling_levers`
the committed report includes it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pcnn.datasets import CLASS_NAMES, DataError, resolve_data_dir
from pcnn.evaluation.baseline import baseline_predict, cached_baseline
from pcnn.evaluation.sample_quality import judge_samples
from pcnn.reporting.levers import grid_name, levers_tex
from pcnn.sampling.sample import sample_grid_figure
from pcnn.training.checkpoint import CheckpointError, load_model
from pcnn.workflow.runrecord import machine_roots, portable


def sweep(
    checkpoint: str | Path,
    data_dir: str | Path,
    temperatures: list[float],
    out: str | Path,
    *,
    guidances: Sequence[float] = (0.0,),
    per_class: int = 50,
    seed: int = 0,
    judge_epochs: int = 30,
    judge_minutes: float = 30.0,
    judge_seeds: Sequence[int] = (0,),
    fid_dims: int = 0,
    judge_cache: str | Path | None = None,
) -> dict:
    """Judge `per_class` samples per class at each (temperature, guidance); write and return the record.

    Settings are keyed by the temperature for guidance 0 (as in earlier records, e.g. "1.0") and
    `<temperature>_w<guidance>` otherwise (e.g. "1.0_w2").
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(checkpoint, device="cpu").eval()
    judges, judge_reports = [], []
    for judge_seed in judge_seeds:
        judge, judge_report = cached_baseline(
            judge_cache,
            data_dir,
            seed=judge_seed,
            epochs=judge_epochs,
            max_minutes=judge_minutes,
            image_size=model.config.image_size,
        )
        judges.append(functools.partial(baseline_predict, judge))
        judge_reports.append(judge_report)
    record: dict = {
        "checkpoint": portable(str(checkpoint), machine_roots(data_dir)),
        "per_class": per_class,
        "seed": seed,
        "judge": judge_reports[0],
        "judges": judge_reports,
        "temperatures": {},
    }
    real_features: dict = {}  # the real images' Inception features, computed for the first setting only
    for temperature, guidance in itertools.product(temperatures, guidances):
        key = str(temperature) + (f"_w{guidance:g}" if guidance else "")
        judged = judge_samples(
            model,
            judges,
            per_class,
            seed=seed,
            temperature=temperature,
            guidance=guidance,
            batch_size=4 * per_class,
            data_root=data_dir,
            fid_dims=fid_dims,
            progress=True,
            real_features=real_features,
        )
        images, labels, consistency = judged.images, judged.labels, judged.record["judge"]
        # the judge's numbers at the top level, as in records before the own classifier and FID joined them
        record["temperatures"][key] = {
            **consistency,
            **{k: v for k, v in judged.record.items() if k != "judge"},
        }
        shown = torch.cat([torch.nonzero(labels == k).flatten()[:8] for k in range(len(CLASS_NAMES))])
        sample_grid_figure(images[shown], labels[shown], CLASS_NAMES, out / grid_name(temperature, guidance))
        print(
            f"{key}: judge consistency {consistency['overall']:.3f} "
            f"[{consistency['overall_ci95'][0]:.3f}, {consistency['overall_ci95'][1]:.3f}], per class "
            + ", ".join(f"{k} {v:.2f}" for k, v in consistency["per_class"].items())
            + _extras(judged.record),
            flush=True,
        )
        (out / "sweep.json").write_text(json.dumps(record, indent=2))  # kept after each setting
        (out / "levers.tex").write_text(levers_tex(record, out.name))
    return record


def _extras(record: dict) -> str:
    """The own classifier's share and the matched FID of a setting, for the progress line."""
    text = ""
    if "own_classifier" in record:
        text += f"; own classifier {record['own_classifier']['overall']:.3f}"
    if "matched_fid" in record:
        fid = record["matched_fid"]
        text += f"; matched FID {fid['model']:.1f} (floor {fid['floor']:.1f})"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcnn.temperature_sweep", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `pcnn train`")
    parser.add_argument("--out", required=True, help="folder for sweep.json and the sample grids")
    parser.add_argument("--data-dir", default=None, help="course-layout data root (default: PCNN_DATA_DIR)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7])
    parser.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=[0.0],
        help="self-guidance weights (0: the model's own distribution; >0 steers towards the class)",
    )
    parser.add_argument("--per-class", type=int, default=50, help="samples per class and setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--judge-epochs", type=int, default=30, help="epochs of the judge CNN (notebook 04 trains 30)"
    )
    parser.add_argument(
        "--judge-minutes",
        type=float,
        default=30.0,
        help="wall-clock cap of the judge's training: a cap, not the budget, so the judge does not depend on"
        " the machine's load (default 30)",
    )
    parser.add_argument(
        "--judge-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="one judge per seed (the first one's verdict leads; all are recorded) (default 0)",
    )
    parser.add_argument(
        "--judge-cache",
        default=None,
        metavar="DIR",
        help="keep each trained judge in DIR and reuse it there (same data, seed, epochs): several models'"
        " samples are then judged by the very same judges, and reruns skip their training (default: none)",
    )
    parser.add_argument(
        "--fid",
        action="store_true",
        help="also the matched-protocol FID/KID (Inception dims 2048) of each setting beside its floor",
    )
    args = parser.parse_args(argv)
    if (
        args.per_class < 1
        or not all(t > 0 for t in args.temperatures)
        or not all(w >= 0 for w in args.guidance)
    ):
        print(
            "error: --per-class must be >= 1, every temperature > 0 and every guidance >= 0", file=sys.stderr
        )
        return 2
    try:
        sweep(
            args.checkpoint,
            resolve_data_dir(args.data_dir),
            args.temperatures,
            args.out,
            guidances=args.guidance,
            per_class=args.per_class,
            seed=args.seed,
            judge_epochs=args.judge_epochs,
            judge_minutes=args.judge_minutes,
            judge_seeds=args.judge_seeds,
            fid_dims=2048 if args.fid else 0,
            judge_cache=args.judge_cache,
        )
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
