"""The notebooks' stages that are more than one call: one function per stage, so that a notebook cell is
prose, one call, and a display (docs/design.md#notebooks).

Measurements shared with the ablation runner live in `pcnn.workflow.experiments`; what is here serves one
notebook each: the data exploration (00), the main run (01), the fine-tuning (02) and the report's
figures folder (05). Notebook 04's many stages have their own module, `pcnn.workflow.sampling_stages`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcnn.datasets import CLASS_NAMES, CPEN455Dataset, load_image_uint8, read_split_csv
from pcnn.reporting.plots import to_uint8_hwc
from pcnn.workflow.pipeline import NotebookContext

SPLITS = ("train", "validation", "test")

# ------------------------------------------------------------------------------------------- 00 data


def example_grid(train: CPEN455Dataset, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded random choice of `per_class` training images of each class: (classes, per_class, H, W, 3)."""
    labels = np.asarray(train.labels)
    return np.stack(
        [
            to_uint8_hwc(
                np.stack(
                    [
                        train[i][0].numpy()
                        for i in rng.choice(np.flatnonzero(labels == k), per_class, replace=False)
                    ]
                )
            )
            for k in range(len(CLASS_NAMES))
        ]
    )


@dataclass
class PixelStatistics:
    """Per-class pixel histograms (classes -> (3, 256) counts), their mean and std per channel, and the
    number of training images they cover."""

    histograms: dict[str, np.ndarray]
    stats: dict[str, dict[str, Any]]
    images: int


def pixel_statistics(train: CPEN455Dataset, limit: int, rng: np.random.Generator) -> PixelStatistics:
    """Per class and channel statistics over `limit` training images (0: all), at the model's size."""
    labels = np.asarray(train.labels)
    chosen = (
        np.sort(rng.permutation(len(train))[:limit])
        if limit and limit < len(train)
        else np.arange(len(train))
    )
    histograms = {name: np.zeros((3, 256), dtype=np.int64) for name in CLASS_NAMES}
    for i in chosen:
        image = to_uint8_hwc(train[i][0][None].numpy())[0]
        for c in range(3):
            histograms[CLASS_NAMES[labels[i]]][c] += np.bincount(image[..., c].ravel(), minlength=256)
    levels = np.arange(256)
    stats = {}
    for name, hist in histograms.items():
        total = np.maximum(hist.sum(axis=1), 1)
        mean = (hist * levels).sum(axis=1) / total
        std = np.sqrt((hist * (levels[None] - mean[:, None]) ** 2).sum(axis=1) / total)
        stats[name] = {
            "mean_rgb": mean.round(2).tolist(),
            "std_rgb": std.round(2).tolist(),
            "images": int((labels[chosen] == CLASS_NAMES.index(name)).sum()),
        }
    return PixelStatistics(histograms, stats, len(chosen))


def grayscale_images(root: Path) -> list[dict[str, Any]]:
    """Every image whose three channels are equal (single-channel files or gray RGB files)."""
    gray = []
    for split in SPLITS:
        if not (root / f"{split}.csv").is_file():
            continue
        for path, label in read_split_csv(root, split):
            image = load_image_uint8(root / path)
            if bool((image[0] == image[1]).all() and (image[1] == image[2]).all()):
                gray.append({"path": path, "split": split, "label": label})
    return gray


def grayscale_pictures(root: Path, shown: Sequence[Mapping[str, Any]], size: int = 64) -> np.ndarray:
    """The listed grayscale images at `size` pixels, as one row of a grid: (1, n, size, size, 3)."""
    from torchvision.transforms.v2 import functional as TF

    return np.stack(
        [
            TF.resize(load_image_uint8(root / g["path"]), [size, size], antialias=True)
            .permute(1, 2, 0)
            .numpy()
            for g in shown
        ]
    )[None]


# ------------------------------------------------------------------------------------------ 01 training


@dataclass
class MainRun:
    """The main run as notebook 01 uses it: the selected checkpoint, its state and the run's records."""

    checkpoint: Path
    run_dir: Path
    state: dict[str, Any]
    metrics: list[dict[str, Any]]
    losses: list[tuple[int, float]]


def train_or_load(ctx: NotebookContext, checkpoint: str | None, max_minutes: float | None) -> MainRun:
    """Train the profile's main run (resuming an unfinished one; a finished one returns at once), or load
    the given checkpoint instead; `max_minutes` caps this session only."""
    from pcnn.training.checkpoint import load_checkpoint
    from pcnn.training.engine import train
    from pcnn.workflow.runrecord import read_losses, read_metrics

    if checkpoint is None:
        result = train(
            ctx.config,
            data_dir=ctx.data_root,
            run_dir=ctx.paths.runs / "main",
            resume=True,
            max_minutes=max_minutes,
            progress=False,
            device=ctx.device,
        )
        print(f"status {result.status}: step {result.step}, epochs {result.epochs_completed}")
        if result.status == "session_budget":
            print(f"stopped after this session's {max_minutes} min: Run all again resumes the run")
        selected = Path(result.best_checkpoint or result.last_checkpoint)
        run_dir = Path(result.run_dir)
    else:
        selected = Path(checkpoint)
        run_dir = selected.parent.parent  # a run folder's checkpoints/ lives in the run folder
    state = load_checkpoint(selected)
    metrics = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    losses = read_losses(run_dir) if (run_dir / "train_loss.csv").is_file() else []
    return MainRun(selected, run_dir, state, metrics, losses)


def downsample(pairs: Sequence[tuple[int, float]], limit: int = 1500) -> dict[str, list[Any]]:
    """Means over equal runs of steps, so that results JSON stays small for long runs."""
    if not pairs:
        return {"step": [], "loss": []}
    steps, values = np.asarray(pairs, dtype=float).T
    chunks = max(1, int(np.ceil(len(steps) / limit)))
    cut = len(steps) // chunks * chunks
    if chunks > 1 and cut:
        steps, values = steps[:cut].reshape(-1, chunks)[:, -1], values[:cut].reshape(-1, chunks).mean(axis=1)
    return {"step": steps.astype(int).tolist(), "loss": values.tolist()}


def run_summary(ctx: NotebookContext, run: MainRun, trained_here: bool) -> dict[str, Any]:
    """The training record's fields that describe the run (`pcnn.workflow.results.TrainingRecord`); a
    loaded checkpoint reports the config it was trained with."""
    metrics, state = run.metrics, run.state
    return {
        "config": ctx.config.to_dict() if trained_here else state.get("run_config", ctx.config.to_dict()),
        "checkpoint": str(run.checkpoint),
        "device": str(ctx.device),
        "metrics": metrics,
        "loss_curve": downsample(run.losses),
        "steps": metrics[-1]["step"] if metrics else state.get("step"),
        "epochs": metrics[-1]["epoch"] if metrics else state.get("epoch"),
        "wall_time_s": metrics[-1].get("wall_time_s") if metrics else None,
        "selected_epoch": state.get("epoch"),
        "selected_on": state.get("selected_on", "last weights"),
    }


def tta_and_prior(
    ctx: NotebookContext, model: Any, validation: CPEN455Dataset, log_likelihoods: np.ndarray, labels: Any
) -> list[dict[str, Any]] | None:
    """Flip averaging and the training-frequency prior, each against the plain Bayes rule on the same
    images (`pcnn.evaluation.analysis.tta_and_prior_effects`); None when the stage sizes skip it."""
    from pcnn.evaluation.analysis import tta_and_prior_effects
    from pcnn.evaluation.evaluate import score_split

    if not ctx.sizes.tta_prior:
        return None
    flipped = score_split(
        model,
        validation,
        subset=ctx.sizes.eval_subset,
        device=ctx.device,
        batch_size=ctx.config.train.eval_batch_size,
        tta=True,
        progress=False,
    )
    counts = np.bincount(CPEN455Dataset(ctx.data_root, "train").labels, minlength=log_likelihoods.shape[1])
    return tta_and_prior_effects(log_likelihoods, flipped.log_likelihoods, labels, counts)


def write_submission(ctx: NotebookContext, model: Any) -> str | None:
    """Score the test split and write the course submission, when the profile scores whole splits and
    the data has a test split; the submission's path, or None."""
    from pcnn.evaluation.evaluate import score_split, write_outputs

    if ctx.sizes.eval_subset or not (ctx.data_root / "test.csv").is_file():
        return None
    test = CPEN455Dataset(ctx.data_root, "test", image_size=model.config.image_size)
    outputs = write_outputs(
        score_split(model, test, device=ctx.device, progress=False), ctx.paths.results / "test", "test"
    )
    return str(outputs.get("submission"))


# --------------------------------------------------------------------------------------- 02 fine-tuning


def weakest_class(per_class_accuracy: Mapping[str, float | None]) -> str:
    """The class with the lowest accuracy (a class without images counts as perfect)."""
    return min(per_class_accuracy, key=lambda name: _or_one(per_class_accuracy[name]))


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else value


def budget_overrides(budget: Mapping[str, float]) -> list[str]:
    """`train.*` overrides for a stage budget (`max_steps`, `max_minutes`, optional `epochs`)."""
    overrides = [
        f"train.max_steps={int(budget.get('max_steps', 0))}",
        f"train.max_minutes={float(budget.get('max_minutes', 0.0))}",
    ]
    if budget.get("epochs"):
        overrides.append(f"train.epochs={int(budget['epochs'])}")
    return overrides


def mean_per_class_change(base: Mapping[str, Any], tuned: Mapping[str, Any]) -> float:
    """Mean change in per-class accuracy from `base` to `tuned` (evaluation summaries), classes without
    images left out."""
    changes = [
        (tuned["per_class_accuracy"][k] if tuned["per_class_accuracy"][k] is not None else np.nan)
        - (base["per_class_accuracy"][k] if base["per_class_accuracy"][k] is not None else np.nan)
        for k in CLASS_NAMES
    ]
    return float(np.nanmean(changes))


# ------------------------------------------------------------------------------------------- 05 report


def merged_results(ctx: NotebookContext) -> tuple[dict[str, Any], Path]:
    """Merge notebooks 00-04's records (validated) with the run's `meta` and write `results.json` into
    the figures folder, with machine paths named portably; fails when a record is missing."""
    import json

    from pcnn.reporting.report import RESULT_NAMES, merge_results
    from pcnn.workflow.runrecord import portable

    meta = {**ctx.meta, "sizes": ctx.sizes.to_dict()}
    results = portable(merge_results(ctx.paths.results, meta), ctx.record_roots)
    missing = [name for name in RESULT_NAMES if results[name] is None]
    if missing:
        raise FileNotFoundError(
            f"results missing for {missing}: run notebooks 00-04 first ({ctx.paths.results})"
        )
    path = ctx.paths.figures / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path


def report_figures(
    ctx: NotebookContext, results: Mapping[str, Any]
) -> tuple[list[tuple[str, Any]], list[Path]]:
    """Draw every figure of the report, then each optional one this build has the images for (removing a
    stale copy of one it has not); returns the (stem, figure) pairs drawn and the files written."""
    from pcnn.reporting.report import OPTIONAL_FIGURES, REPORT_FIGURES, render_figure

    drawn, written = [], []
    for stem in REPORT_FIGURES + OPTIONAL_FIGURES:
        try:
            fig, paths = render_figure(stem, results, ctx.paths.results, ctx.paths.figures)
        except FileNotFoundError:
            if stem in REPORT_FIGURES:
                raise
            target = ctx.paths.figures / f"{stem}.pdf"
            for old in (target, target.with_suffix(".png")):
                old.unlink(missing_ok=True)  # a stale copy from an earlier build must not reach the report
            print(f"{stem}: not available in this build")
            continue
        drawn.append((stem, fig))
        written += paths
    return drawn, written


def copy_submission(ctx: NotebookContext, results: Mapping[str, Any]) -> Path | None:
    """Copy notebook 01's test submission beside the figures (publishing commits it with them), or remove
    a stale copy when this build wrote none; the copy's path, or None."""
    import shutil

    submission = ctx.paths.results / "test" / "submission.csv"
    copy = ctx.paths.figures / "submission.csv"
    if results["training"].get("submission") and submission.is_file():
        shutil.copy2(submission, copy)
        return copy
    copy.unlink(missing_ok=True)  # a stale copy from an earlier build must not pass for this one's
    return None


def check_report_inputs(written: Sequence[Path]) -> int | None:
    """In a checkout, fail when the report includes a file this build did not write; the number of
    included files, or None outside a checkout."""
    from pcnn.reporting.report import included_files
    from pcnn.workflow.pipeline import repo_root

    root = repo_root()
    if root is None:
        return None
    names = {path.name for path in written}
    included = included_files(root / "report")
    absent = [name for name in included if not ({name, f"{name}.pdf", f"{name}.tex"} & names)]
    if absent:
        raise RuntimeError(f"the report includes files this build did not write: {absent}")
    return len(included)
