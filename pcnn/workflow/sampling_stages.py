"""Notebook 04's stages (sampling and FID): one function per stage, so that each cell of
`notebooks/04_sampling_and_fid.py` is prose, one call and a display (docs/design.md#notebooks).

Each stage measures one thing, writes the arrays the report draws from (`results/<name>.npz`, read by
`pcnn.reporting.report`) and returns the part of the `sampling` record (`pcnn.workflow.results.
SamplingRecord`) it owns. Samples travel between stages as `Drawn` (images in [-1, 1], labels), so the
grid, the judge and the nearest neighbours look at the very images that were measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from pcnn.datasets import CLASS_NAMES, CPEN455Dataset
from pcnn.reporting.plots import to_uint8_hwc
from pcnn.workflow.experiments import draw_class_samples
from pcnn.workflow.pipeline import NotebookContext

TEMPERATURES = (1.0, 0.9, 0.8)  # the temperature grid's columns: 1.0 is the model as trained
COMPLETIONS_PER_IMAGE = 3  # completions under the true class per validation image (one more under the next)


class Drawn(NamedTuple):
    """Samples and the classes they were drawn for (class-major, as `draw_class_samples` returns them)."""

    images: Tensor
    labels: Tensor


# ----------------------------------------------------------------------------------------------- helpers


def first_per_class(labels: Tensor, per_class: int) -> Tensor:
    """Indices of the first `per_class` items of each class present, class by class: the report's grids
    show the first samples, so that a grid and the numbers measured on the same draw agree."""
    return torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in labels.unique()])


def save_samples(results_dir: Path, name: str, drawn: Drawn, per_class: int) -> Path:
    """Keep the first `per_class` images of each class as uint8 (N, 3, H, W) with their labels in
    `<results_dir>/<name>.npz`, the file the report's sample grids read; returns its path."""
    keep = first_per_class(drawn.labels, per_class)
    path = Path(results_dir) / f"{name}.npz"
    np.savez_compressed(
        path,
        images=to_uint8_hwc(drawn.images[keep]).transpose(0, 3, 1, 2),
        labels=drawn.labels[keep].numpy(),
    )
    return path


def sampling_figure(ctx: NotebookContext, stem: str, sampling: Mapping[str, Any] | None = None) -> Any:
    """Draw and save one of the report's figures from this notebook's results (the record so far when the
    figure reads it); returns the figure to display."""
    from pcnn.reporting.report import render_figure

    results: dict[str, Any] = {"meta": ctx.meta}
    if sampling is not None:
        results["sampling"] = sampling
    return render_figure(stem, results, ctx.paths.results, ctx.paths.figures)[0]


# ------------------------------------------------------------------------------------------ FID stages


@dataclass
class CourseFid:
    """The record's `fid` entry after the course protocol (`course` only when measured), and the first
    seed's samples, which the sample grid reuses instead of sampling again (None when not measured)."""

    fid: dict[str, Any]
    first: Drawn | None

    @property
    def line(self) -> str:
        """One sentence on the result, or on why there is none."""
        if not self.fid["available"]:
            return f"FID {self.fid['note']}"
        model, floor = self.fid["course"]["model"], self.fid["course"]["floor"]
        return (
            f"course protocol ({model['n_samples']} samples x {model['n']} seeds, dims 192): FID "
            f"{model['mean']:.2f} +- {model['std']:.2f}; "
            f"real-data floor {floor['mean']:.2f} +- {floor['std']:.2f}"
        )


def floor_summary(floor: Mapping[str, Any]) -> dict[str, Any]:
    """The record's view of `pcnn.evaluation.fid.course_floor`: the same keys as the model's summary over
    seeds (mean, std, values, n), so that the report puts both side by side."""
    return {
        "mean": floor["fid"],
        "std": floor["fid_std"],
        "values": floor["fid_values"],
        "n": len(floor["fid_values"]),
        "kid_mean": floor.get("kid_mean"),
        "n_samples": floor.get("n_samples"),
        "fid_all_validation": floor["fid_all_validation"],
    }


def course_fid(
    ctx: NotebookContext,
    model: Any,
    available: bool,
    note: str | None = None,
    *,
    temperature: float = 1.0,
) -> CourseFid:
    """Course-protocol FID over the profile's sampling seeds (samples at `temperature`) beside its
    real-data floor (validation images treated as samples, at most as many per class as the validation
    split has); with `available` False (no Inception weights) nothing is measured and `note` says why."""
    from pcnn.datasets import class_counts
    from pcnn.evaluation import fid as fid_metrics
    from pcnn.workflow.experiments import course_fid_over_seeds

    sz = ctx.sizes
    fid: dict[str, Any] = {"available": available, "note": None if available else note}
    if not available:
        return CourseFid(fid, None)
    course, images, labels = course_fid_over_seeds(
        model,
        ctx.data_root,
        sz.course_per_class,
        ctx.seeds(sz.fid_seeds),
        device=ctx.device,
        batch_size=sz.sample_batch,
        temperature=temperature,
    )
    floor = fid_metrics.course_floor(
        ctx.data_root,
        192,
        n_per_class=min(sz.course_per_class, *class_counts(ctx.data_root, "validation")),
        seeds=list(range(sz.course_floor_seeds)),
        device=ctx.device,
        progress=False,
    )
    fid["course"] = {"model": course, "floor": floor_summary(floor)}
    return CourseFid(fid, Drawn(images, labels))


@dataclass
class MatchedFid:
    """The record's `fid.matched` entry, the first draw's samples (the judge scores the same ones) and the
    number of real images each draw was measured against."""

    record: dict[str, Any]
    samples: Drawn
    n_reference: int

    @property
    def line(self) -> str:
        """One sentence: FID (mean +- std over the draws) and KID of the model beside the floor."""
        model, floor = self.record["model"], self.record["floor"]
        fid = f"FID {model['mean']:.2f}"
        if model["n"] > 1:
            fid += f" +- {model['std']:.2f} over {model['n']} draws"
        return (
            f"matched protocol ({model['n_samples']} vs {self.n_reference}, dims 2048): "
            f"{fid} (floor {floor['mean']:.2f}); "
            f"KID {model['kid_mean']:.4f} (floor {floor['kid_mean']:.4f})"
        )


def matched_summary(draws: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The record's view of `pcnn.evaluation.fid.matched_protocol` over one or more draws of samples:
    the model's FID and KID as mean, std (ddof 1; None for one draw) and values over the draws, the floor
    (the same real sets for every draw) once, per-class FIDs averaged over the draws under class names."""
    from pcnn.evaluation.fid.distances import summarize_over_seeds

    if not draws:
        raise ValueError("matched_summary needs at least one measured draw")
    models = [d["model"] for d in draws]
    floor = draws[0]["floor"]
    fid = summarize_over_seeds([m["fid"] for m in models])
    kids = [m["kid_mean"] for m in models]
    kid_measured = None not in kids  # KID needs two images a side: tiny draws have none
    # one draw: the spread over KID subsets; several: the spread over the draws
    several = len(models) > 1 and kid_measured
    kid_std = float(np.std(kids, ddof=1)) if several else models[0]["kid_std"]
    per_class = {}
    for k, first in draws[0]["per_class"].items():
        values = [d["per_class"][k]["model"] for d in draws]
        per_class[CLASS_NAMES[k]] = {
            "model": None if None in values else float(np.mean(values)),
            "floor": first["floor"],
        }
    return {
        "model": {
            "mean": fid["mean"],
            "std": fid["std"] if fid["n"] > 1 else None,
            "n": fid["n"],
            "values": fid["values"],
            "kid_mean": float(np.mean(kids)) if kid_measured else None,
            "kid_std": kid_std,
            "n_samples": models[0]["n_samples"],
            "dims": models[0]["dims"],
        },
        "floor": {
            "mean": floor["fid"],
            "std": None,
            "n": 1,
            "kid_mean": floor["kid_mean"],
            "kid_std": floor["kid_std"],
            "n_samples": floor["n_samples"],
        },
        "per_class": per_class,
    }


@dataclass
class MatchedReference:
    """What every matched-protocol draw of a notebook shares: one Inception network and the real images'
    features (computed at the first draw), so that choosing a temperature and the reported draws run
    Inception on the 2000 real images once."""

    inception: torch.nn.Module
    real_features: dict


def matched_reference(ctx: NotebookContext, available: bool) -> MatchedReference | None:
    """The shared Inception network (dims 2048) on the notebook's device; None without Inception weights."""
    from pcnn.evaluation.fid.features import standard_model

    return MatchedReference(standard_model(2048, ctx.device), {}) if available else None


def _matched_draw(
    ctx: NotebookContext, model: Any, seed: int, temperature: float, reference: MatchedReference
) -> tuple[Drawn, dict[str, Any]]:
    """One draw of `matched_per_class` samples per class at `temperature`, measured by the matched protocol
    against the real training images of the notebook seed (`fid.matched_protocol`'s record)."""
    from pcnn.evaluation import fid as fid_metrics

    sz = ctx.sizes
    drawn = Drawn(
        *draw_class_samples(
            model,
            sz.matched_per_class,
            seed=seed,
            device=ctx.device,
            batch_size=sz.sample_batch,
            temperature=temperature,
        )
    )
    measured = fid_metrics.matched_protocol(
        drawn.images,
        drawn.labels,
        ctx.data_root,
        sz.matched_per_class,
        2048,
        seed=ctx.seed,
        device=ctx.device,
        model=reference.inception,
        progress=False,
        real_features=reference.real_features,
    )
    return drawn, measured


def matched_fid(
    ctx: NotebookContext,
    model: Any,
    available: bool,
    *,
    temperature: float = 1.0,
    reference: MatchedReference | None = None,
) -> MatchedFid | None:
    """Matched-protocol FID and KID (as many samples as real training images, dims 2048) beside its floor,
    over the profile's `matched_seeds` draws at `temperature` (the real images' features computed once,
    or taken from `reference`); None without Inception weights."""
    if not available:
        return None
    reference = reference or matched_reference(ctx, available)
    draws = [
        _matched_draw(ctx, model, seed, temperature, reference) for seed in ctx.seeds(ctx.sizes.matched_seeds)
    ]
    record = {**matched_summary([measured for _, measured in draws]), "temperature": temperature}
    first, first_measured = draws[0]
    return MatchedFid(record, first, first_measured["model"]["n_reference"])


# ------------------------------------------------------------------------------------ sampling temperature


@dataclass
class TemperatureChoice:
    """The temperature the notebook's measured samples are drawn at, and the record's `temperature` entry:
    the candidates' matched FIDs on the selection draw and how the choice was made."""

    record: dict[str, Any]

    @property
    def temperature(self) -> float:
        """The chosen temperature, as the record holds it."""
        return float(self.record["chosen"])

    @property
    def line(self) -> str:
        """One sentence: the choice and what it rests on."""
        scored = self.record["candidates"]
        if not scored:
            return f"sampling temperature {self.temperature:g}: {self.record['note']}"
        listed = ", ".join(f"T = {t}: {c['fid']:.1f}" for t, c in scored.items())
        return (
            f"sampling temperature {self.temperature:g}, the lowest matched FID of the selection draw "
            f"(seed {self.record['seed']}, training images only): {listed}"
        )


def choose_temperature(
    ctx: NotebookContext, model: Any, available: bool, reference: MatchedReference | None = None
) -> TemperatureChoice:
    """The sampling temperature among the profile's `temperature_candidates` with the lowest matched FID on
    one selection draw at the notebook seed (common random numbers across the candidates; the first
    listed wins a tie).

    The matched protocol compares with training images, so the choice never looks at validation; the
    selection draw's seed is disjoint from the reported draws (`matched_seeds` offsets are not 0), so the
    reported FID at the chosen temperature is not the minimum it was chosen by. With one candidate, or
    without Inception weights (then T = 1, the model as trained), nothing is drawn.
    """
    sz = ctx.sizes
    candidates = [float(t) for t in sz.temperature_candidates]
    if not candidates or any(t <= 0 for t in candidates):
        raise ValueError(f"temperature_candidates must be positive temperatures, got {candidates}")
    if 0 in sz.matched_seeds and len(candidates) > 1:
        raise ValueError(
            "matched_seeds must not hold the offset 0: the temperature's selection draw uses the notebook "
            "seed, and the reported draws must be fresh ones"
        )
    record: dict[str, Any] = {
        "chosen": 1.0,
        "candidates": {},
        "seed": ctx.seed,
        "per_class": sz.matched_per_class,
        "n_samples": sz.matched_per_class * model.config.num_classes,
        "rule": "lowest matched FID on the selection draw",
        "note": None,
    }
    if len(candidates) == 1:
        record.update(chosen=candidates[0], note="one candidate in the profile: no selection draw")
    elif not available:
        record["note"] = "not chosen (no Inception weights to measure FID): T = 1, the model as trained"
    else:
        reference = reference or matched_reference(ctx, available)
        for temperature in candidates:
            _, measured = _matched_draw(ctx, model, ctx.seed, temperature, reference)
            record["candidates"][str(temperature)] = {
                "fid": measured["model"]["fid"],
                "kid": measured["model"]["kid_mean"],
            }
        scored = record["candidates"]
        record["chosen"] = float(min(scored, key=lambda t: scored[t]["fid"]))
    return TemperatureChoice(record)


# ------------------------------------------------------------------------------------------ sample grids


def grid_samples(
    ctx: NotebookContext, model: Any, course: Drawn | None, *, temperature: float = 1.0
) -> Drawn:
    """The samples of the per-class grid, saved as `samples.npz`: the course protocol's first seed when it
    drew enough per class (the grid then shows measured samples), else a fresh draw at the notebook seed
    and `temperature` (that of the course draw)."""
    sz = ctx.sizes
    grid = course
    if grid is None or sz.course_per_class < sz.grid_per_class:
        grid = Drawn(
            *draw_class_samples(
                model,
                sz.grid_per_class,
                seed=ctx.seed,
                device=ctx.device,
                batch_size=sz.sample_batch,
                temperature=temperature,
            )
        )
    save_samples(ctx.paths.results, "samples", grid, sz.grid_per_class)
    return grid


@dataclass
class TemperatureSamples:
    """The temperatures drawn at and the samples per class at each (the record's `sizes` keep both)."""

    temperatures: list[float]
    per_class: int


def temperature_samples(
    ctx: NotebookContext, model: Any, temperatures: Sequence[float] = TEMPERATURES
) -> TemperatureSamples:
    """Samples at each temperature from one generator seed, so that the blocks differ only by the
    temperature; saved as `samples_temperatures.npz` (images: class, temperature, sample, H, W, 3)."""
    sz = ctx.sizes
    per_class = min(4, sz.grid_per_class)
    by_temperature = [
        draw_class_samples(
            model, per_class, seed=ctx.seed, device=ctx.device, batch_size=sz.sample_batch, temperature=t
        )[0]
        for t in temperatures
    ]
    images = torch.stack(by_temperature, dim=1).unflatten(0, (model.config.num_classes, per_class))
    np.savez_compressed(
        ctx.paths.results / "samples_temperatures.npz",
        images=to_uint8_hwc(images.transpose(1, 2)),
        temperatures=np.array(list(temperatures)),
    )
    return TemperatureSamples(list(temperatures), per_class)


@dataclass
class Completions:
    """How the completions were drawn: the rows kept from each image and how many images."""

    rows: int
    images: int


def completions(ctx: NotebookContext, model: Any) -> Completions:
    """Complete the bottom half of a seeded random choice of validation images per class, several times
    under the true class and once under the next class (does the class steer the rest of the image?);
    saved as `completions.npz`."""
    from pcnn.reporting.plots import per_class_indices
    from pcnn.sampling.sample import complete

    classes = model.config.num_classes
    val_set = CPEN455Dataset(ctx.data_root, "validation", image_size=model.config.image_size)
    chosen = per_class_indices(val_set.labels, classes, max(1, ctx.sizes.nn_per_class), ctx.seed).flatten()
    originals = torch.stack([val_set[int(i)][0] for i in chosen])
    true_labels = torch.tensor([val_set.labels[int(i)] for i in chosen])
    other_labels = (true_labels + 1) % classes
    rows = model.config.image_size // 2
    generator = torch.Generator().manual_seed(ctx.seed + 2000)
    completed = complete(
        model, originals, true_labels, rows=rows, per_image=COMPLETIONS_PER_IMAGE, generator=generator
    )
    other = complete(model, originals, other_labels, rows=rows, per_image=1, generator=generator)[:, 0]
    np.savez_compressed(
        ctx.paths.results / "completions.npz",
        originals=to_uint8_hwc(originals),
        completions=to_uint8_hwc(completed),
        other=to_uint8_hwc(other),
        labels=true_labels.numpy(),
        other_labels=other_labels.numpy(),
        rows=rows,
    )
    return Completions(rows, len(chosen))


def training_samples(ctx: NotebookContext, checkpoint: str | Path) -> list[int]:
    """Collect the sample grids the checkpoint's run saved during training (`<run>/samples`) into
    `training_samples.npz`; returns their epochs (none when the run saved none)."""
    from pcnn.reporting.plots import read_sample_grids

    run_dir = Path(checkpoint).parent.parent  # a run folder's checkpoints/ lives in the run folder
    epochs, grids = read_sample_grids(run_dir / "samples")
    np.savez_compressed(ctx.paths.results / "training_samples.npz", grids=grids, epochs=np.array(epochs))
    return epochs


def reference_samples(ctx: NotebookContext, reference: Path | None) -> str | None:
    """Samples of the committed reference checkpoint, saved as `reference_samples.npz`; without one a stale
    file from an earlier build is removed, so the report never shows another model's samples. Returns
    the checkpoint's path for the record, or None."""
    from pcnn import load_model

    path = ctx.paths.results / "reference_samples.npz"
    if reference is None:
        path.unlink(missing_ok=True)
        return None
    sz = ctx.sizes
    drawn = Drawn(
        *draw_class_samples(
            load_model(reference, device=ctx.device),
            sz.reference_per_class,
            seed=ctx.seed,
            device=ctx.device,
            batch_size=sz.sample_batch,
        )
    )
    save_samples(ctx.paths.results, "reference_samples", drawn, sz.reference_per_class)
    return str(reference)


# ------------------------------------------------------------------------------------ reviewer's checks


@dataclass
class ReviewerChecks:
    """The record's `checks` entry, and the training images the nearest neighbours were searched in (the
    real-vs-generated figure shows some of them)."""

    record: dict[str, Any]
    train_images: Tensor
    train_labels: list[int]

    @property
    def line(self) -> str:
        """One sentence: the judge's own accuracy and how many samples it recognises."""
        baseline, consistency = self.record["baseline"], self.record["class_consistency"]
        return (
            f"baseline CNN: validation accuracy {baseline['accuracy']:.1%} after "
            f"{baseline['epochs']:.1f} epochs ({baseline['train_seconds'] / 60:.1f} min); it recognises "
            f"{consistency['overall']:.1%} of {consistency['n']} samples as their class"
        )


def nearest_neighbour_check(
    results_dir: Path, grid: Drawn, train_images: Tensor, per_class: int, k: int = 4
) -> dict[str, Any]:
    """Are samples copies of training images? The first `per_class` grid samples of each class beside
    their `k` nearest training images in pixel space, saved as `nearest_neighbours.npz`; returns the
    distances to the nearest one for the record."""
    from pcnn.evaluation.analysis import nearest_neighbour_grid, nearest_neighbours

    shown = first_per_class(grid.labels, per_class)
    indices, distances = nearest_neighbours(grid.images[shown], train_images, k=k)
    np.savez_compressed(
        Path(results_dir) / "nearest_neighbours.npz",
        grid=nearest_neighbour_grid(grid.images[shown], train_images, indices),
        labels=grid.labels[shown].numpy(),
    )
    return {
        "mean": float(distances[:, 0].mean()),
        "min": float(distances[:, 0].min()),
        "n_samples": int(len(shown)),
        "n_train": int(len(train_images)),
    }


def reviewer_checks(
    ctx: NotebookContext, model: Any, grid: Drawn, matched: MatchedFid | None = None
) -> ReviewerChecks:
    """A small discriminative CNN trained on the training split judges whether samples show the class they
    were drawn for (overall and per class, beside its own recall on real images): the matched protocol's
    samples when FID was measured (the most), else the grid's. The grid's samples are also shown beside
    their nearest training images."""
    from pcnn.evaluation.analysis import class_consistency
    from pcnn.evaluation.baseline import baseline_predict, train_baseline
    from pcnn.reporting.report import judge_per_class

    sz = ctx.sizes
    baseline, report = train_baseline(
        ctx.data_root,
        epochs=sz.baseline_epochs,
        max_minutes=sz.baseline_minutes,
        seed=ctx.seed,
        device=str(ctx.device),
        progress=False,
        max_train_images=sz.baseline_train_images,
    )
    judged = matched.samples if matched is not None else grid
    consistency = class_consistency(lambda x: baseline_predict(baseline, x), judged.images, judged.labels)
    train_set = CPEN455Dataset(ctx.data_root, "train", image_size=model.config.image_size)
    train_images = torch.stack([train_set[i][0] for i in range(len(train_set))])
    record = {
        "baseline": {k: v for k, v in report.items() if k != "train_loss"},
        "class_consistency": consistency,
        "nearest_neighbour_distance": nearest_neighbour_check(
            ctx.paths.results, grid, train_images, sz.nn_per_class
        ),
        "judge_per_class": judge_per_class(consistency, report),
    }
    return ReviewerChecks(record, train_images, list(train_set.labels))


def real_vs_generated(ctx: NotebookContext, grid: Drawn, checks: ReviewerChecks) -> Path:
    """A seeded random choice of training images per class above the grid's samples, saved as
    `real_vs_generated.npz`, so that the real images shown are not hand-picked; returns its path."""
    from pcnn.reporting.plots import per_class_indices, samples_by_class

    per_class, classes = ctx.sizes.grid_per_class, len(CLASS_NAMES)
    real = per_class_indices(checks.train_labels, classes, per_class, ctx.seed)
    path = ctx.paths.results / "real_vs_generated.npz"
    np.savez_compressed(
        path,
        real=to_uint8_hwc(checks.train_images[torch.from_numpy(real)]),
        generated=samples_by_class(grid.images, grid.labels.tolist(), classes, per_class),
    )
    return path


# ------------------------------------------------------------------------------------------------ sizes


def sampling_sizes(
    ctx: NotebookContext, temperatures: TemperatureSamples, completed: Completions, grid_epochs: list[int]
) -> dict[str, Any]:
    """The record's `sizes`: what this run sampled, so the report can say how many samples each number
    rests on."""
    sz = ctx.sizes
    return {
        "course_per_class": sz.course_per_class,
        "fid_seeds": ctx.seeds(sz.fid_seeds),
        "matched_per_class": sz.matched_per_class,
        "grid_per_class": sz.grid_per_class,
        "temperatures": temperatures.temperatures,
        "temperature_per_class": temperatures.per_class,
        "completion_rows": completed.rows,
        "completion_images": completed.images,
        "training_grid_epochs": grid_epochs,
    }
