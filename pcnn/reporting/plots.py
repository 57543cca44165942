"""Figures of the notebooks and the report, in one consistent style.

Every figure is built on a `matplotlib.figure.Figure` (no pyplot state, so it works headless and in
notebooks alike) and saved by `save_figure` as a vector PDF for the report and a PNG for the notebooks
and the README. Widths follow the report's two-column layout: `COLUMN` for one column, `FULL` for
both. Each plot function returns the figure so a notebook can display it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLUMN = 3.4  # inches: one column of the report's two-column layout
FULL = 7.0  # inches: both columns
PNG_DPI = 200
PALETTE = "colorblind"

_RC = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "figure.dpi": 110,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # embed TrueType, so the PDF text stays selectable and editable
}


def set_style() -> None:
    """Apply the project's seaborn/matplotlib style (idempotent; the plot functions call it)."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, rc=_RC)


def colors(n: int) -> list[tuple[float, float, float]]:
    """The first `n` colours of the project's palette."""
    return sns.color_palette(PALETTE, n)


def new_figure(
    width: float = COLUMN, height: float | None = None, nrows: int = 1, ncols: int = 1, **kwargs: Any
) -> tuple[Figure, Any]:
    """A styled figure and its axes (an array when nrows * ncols > 1)."""
    set_style()
    height = height if height is not None else width * 0.68
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kwargs)
    return fig, axes


def save_figure(fig: Figure, path_stem: str | Path) -> list[Path]:
    """Write `<stem>.pdf` (vector, for LaTeX) and `<stem>.png` (for notebooks and the README)."""
    stem = Path(path_stem)
    if stem.suffix in (".pdf", ".png"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".pdf"), stem.with_suffix(".png")]
    # A fixed creation date keeps re-generated PDFs byte-identical when nothing changed.
    fig.savefig(paths[0], metadata={"CreationDate": None})
    fig.savefig(paths[1], dpi=PNG_DPI)
    return paths


def write_note(ax: Any, message: str) -> None:
    """Replace a plot by a sentence (what was not measured and why), never by made-up numbers."""
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def note_figure(message: str, width: float = COLUMN, height: float = 1.0) -> Figure:
    """A figure that only says something (e.g. that a data set has no grayscale images)."""
    fig, ax = new_figure(width, height)
    write_note(ax, message)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig


# ------------------------------------------------------------------------------------------------ data


def class_balance_figure(class_counts: Mapping[str, Mapping[str, int]], class_names: Sequence[str]) -> Figure:
    """Images per class in each labelled split (grouped bars)."""
    fig, ax = new_figure(COLUMN, 2.2)
    splits = list(class_counts)
    width = 0.8 / max(len(splits), 1)
    x = np.arange(len(class_names))
    for i, (split, color) in enumerate(zip(splits, colors(len(splits)))):
        counts = [class_counts[split].get(name, 0) for name in class_names]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, counts, width, label=split, color=color)
        ax.bar_label(bars, fontsize=6, padding=1)
    ax.set_xticks(x, class_names)
    ax.set_ylabel("images")
    ax.set_title("Class balance per split")
    ax.legend(frameon=False)
    ax.margins(y=0.15)
    return fig


def image_grid_figure(
    images: np.ndarray,
    row_labels: Sequence[str],
    title: str | None = None,
    cell: float = 0.55,
    col_labels: Sequence[str] | None = None,
) -> Figure:
    """A grid of uint8 images (rows, cols, H, W, 3), one labelled row per class or model."""
    images = np.asarray(images)
    rows, cols = images.shape[:2]
    set_style()
    label_w = 0.75
    fig = Figure(figsize=(label_w + cell * cols, cell * rows + (0.3 if title else 0.05)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(images[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if row_labels is not None and c == 0:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center")
            if col_labels is not None and r == 0:
                ax.set_title(col_labels[c], fontsize=7)
    top = 1 - (0.3 / (cell * rows + 0.3) if title else 0.01)
    fig.subplots_adjust(
        left=label_w / (label_w + cell * cols), right=0.995, bottom=0.01, top=top, wspace=0.04, hspace=0.04
    )
    if title:
        fig.suptitle(title, y=0.995, fontsize=8.5)
    return fig


def to_uint8_hwc(images: Any) -> np.ndarray:
    """Images (..., 3, H, W) as float in [-1, 1] or uint8 -> uint8 (..., H, W, 3) for display."""
    array = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if array.dtype != np.uint8:
        array = np.clip(np.round((array.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.moveaxis(array, -3, -1)


def samples_by_class(images: Any, labels: Sequence[int], num_classes: int, per_class: int) -> np.ndarray:
    """Arrange images into (num_classes, per_class, H, W, 3); missing cells are white."""
    pictures = to_uint8_hwc(images)
    labels = [int(v) for v in labels]
    grid = np.full((num_classes, per_class, *pictures.shape[1:]), 255, dtype=np.uint8)
    for k in range(num_classes):
        members = [i for i, label in enumerate(labels) if label == k][:per_class]
        for j, i in enumerate(members):
            grid[k, j] = pictures[i]
    return grid


def per_class_indices(labels: Sequence[int], num_classes: int, per_class: int, seed: int) -> np.ndarray:
    """Indices (num_classes, per_class) of a seeded random choice of each class's items (without
    replacement), so that the real images shown beside samples are not hand-picked."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        if len(members) < per_class:
            raise ValueError(f"class {k} has {len(members)} items, fewer than {per_class}")
        chosen.append(np.sort(rng.choice(members, per_class, replace=False)))
    return np.stack(chosen)


def pixel_histogram_figure(histograms: Mapping[str, np.ndarray], title: str) -> Figure:
    """Per-class histograms of the pixel values (0..255) of each colour channel."""
    names = list(histograms)
    fig, axes = new_figure(FULL, 1.9, 1, len(names), sharey=True)
    axes = np.atleast_1d(axes)
    centres = np.arange(256)
    for ax, name in zip(axes, names):
        hist = np.asarray(histograms[name], dtype=float)
        for channel, (label, color) in enumerate(zip("RGB", ("tab:red", "tab:green", "tab:blue"))):
            density = hist[channel] / max(hist[channel].sum(), 1)
            ax.plot(centres, density, color=color, lw=0.8, label=label)
        ax.set_title(name)
        ax.set_xlabel("pixel value (0-255)")
        ax.set_xlim(0, 255)
    axes[0].set_ylabel("fraction of sub-pixels")
    axes[-1].legend(frameon=False)
    fig.suptitle(title)
    return fig


# -------------------------------------------------------------------------------------------- training


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def training_curves_figure(
    losses: Sequence[tuple[int, float]],
    metrics: Sequence[Mapping[str, Any]],
    title: str = "Training curves",
    hybrid_from_epoch: int | None = None,
) -> Figure:
    """Bits/dim (training loss per step, smoothed, and validation per evaluation), validation accuracy
    with the learning rate, and a mark where the hybrid term joins (`hybrid_start`)."""
    fig, (ax_bpd, ax_acc) = new_figure(FULL, 2.7, 1, 2, sharex=True)
    c = colors(3)
    if losses:
        steps = np.asarray([s for s, _ in losses])
        loss = np.asarray([v for _, v in losses], dtype=float)
        window = max(1, len(loss) // 50)
        ax_bpd.plot(steps, loss, color=c[0], alpha=0.25, lw=0.6)
        ax_bpd.plot(steps, _smooth(loss, window), color=c[0], lw=1.2, label=f"train (mean of {window} steps)")
    val = [(m["step"], m["val_bits_per_dim"]) for m in metrics if m.get("val_bits_per_dim") is not None]
    if val:
        ax_bpd.plot(*zip(*val), "o-", color=c[1], ms=3, lw=1.2, label="validation")
    ax_bpd.set_xlabel("optimiser step")
    ax_bpd.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_bpd.set_ylabel("bits per dimension")
    ax_bpd.set_title("Negative log-likelihood (bits/dim)")
    ax_bpd.legend(frameon=False)
    acc = [(m["step"], 100 * m["val_accuracy"]) for m in metrics if m.get("val_accuracy") is not None]
    if acc:
        ax_acc.plot(*zip(*acc), "o-", color=c[2], ms=3, lw=1.2, label="validation accuracy")
        f1 = [(m["step"], 100 * m["val_f1"]) for m in metrics if m.get("val_f1") is not None]
        if f1:
            ax_acc.plot(*zip(*f1), "s--", color=c[0], ms=2.5, lw=0.9, label="validation macro F1")
        ax_acc.axhline(25, color="grey", ls=":", lw=0.8, label="chance (4 classes)")
        ax_acc.set_ylim(0, 100)
        ax_acc.legend(frameon=False)
    else:
        write_note(ax_acc, "no validation accuracy\n(unconditional model)")
    _plot_learning_rate(ax_acc, metrics)
    hybrid = hybrid_start(metrics, hybrid_from_epoch)
    if hybrid is not None:
        step, epoch = hybrid
        for ax in (ax_bpd, ax_acc):
            ax.axvline(step, color="black", ls="--", lw=0.8)
        ax_bpd.annotate(
            f"hybrid term\nfrom epoch {epoch}",
            (step, 1),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -3),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=6.5,
        )
    ax_acc.set_xlabel("optimiser step")
    ax_acc.set_ylabel("percent")
    ax_acc.set_title("Bayes-rule classification (validation)")
    fig.suptitle(title)
    return fig


def run_curves_figure(
    curves: Mapping[str, Sequence[Mapping[str, float]]], title: str = "Validation over training"
) -> Figure:
    """Validation bits/dim and accuracy per epoch of several runs (points: `epoch`, `bits_per_dim`,
    `accuracy`), on shared epoch axes: runs compared at equal epochs."""
    legend_rows = -(-len(curves) // 2)
    fig, (ax_bpd, ax_acc) = new_figure(FULL, 2.4 + 0.14 * legend_rows, 1, 2, sharex=True)
    for (name, points), color in zip(curves.items(), colors(len(curves))):
        epochs = [p["epoch"] for p in points]
        style = {"color": color, "ms": 3, "lw": 1.2, "label": name}
        ax_bpd.plot(epochs, [p["bits_per_dim"] for p in points], "o-", **style)
        ax_acc.plot(epochs, [100 * p["accuracy"] for p in points], "o-", **style)
    ax_bpd.set_ylabel("validation bits/dim")
    ax_acc.set_ylabel("validation accuracy (%)")
    for ax in (ax_bpd, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # below both panels: inside either one, a legend of more than a few runs covers their early epochs
    fig.legend(frameon=False, fontsize=6.5, loc="outside lower center", ncol=2, handles=ax_bpd.get_lines())
    fig.suptitle(title)
    return fig


def hybrid_start(
    metrics: Sequence[Mapping[str, Any]], start_epoch: int | None = None
) -> tuple[float, int] | None:
    """(step, epoch) where the hybrid term joins, the epoch 1-based as training logs it; None when the
    metrics' `disc_weight` never turns positive after an evaluation without it (nothing to mark).

    Evaluations can be several epochs apart: `start_epoch` (`train.disc_start_epoch`, 0-based) places
    the mark exactly, at the step interpolated between evaluations; without it, the mark is at the last
    evaluation before the switch.
    """
    for before, after in zip(metrics, metrics[1:]):
        if not (before.get("disc_weight") or 0) > 0 and (after.get("disc_weight") or 0) > 0:
            epoch = start_epoch if start_epoch is not None else int(before["epoch"])
            epochs = [0] + [int(m["epoch"]) for m in metrics]
            steps = [0] + [int(m["step"]) for m in metrics]
            return float(np.interp(epoch, epochs, steps)), epoch + 1
    return None


def _plot_learning_rate(ax: Any, metrics: Sequence[Mapping[str, Any]]) -> None:
    """The learning rate at each evaluation on a second axis, so a decay or warm-up is visible."""
    lr = [(m["step"], m["lr"]) for m in metrics if m.get("lr") is not None]
    if not lr:
        return
    twin = ax.twinx()
    twin.plot(*zip(*lr), color="grey", lw=1.0, label="learning rate (right axis)")
    twin.set_ylim(0, 1.1 * max(v for _, v in lr))  # from zero: a small decay looks small
    twin.ticklabel_format(axis="y", style="sci", scilimits=(0, 0), useOffset=False)
    twin.set_ylabel("learning rate")
    twin.grid(False)
    handles, labels = ax.get_legend_handles_labels()
    extra, extra_labels = twin.get_legend_handles_labels()
    ax.legend(
        handles + extra,
        labels + extra_labels,
        frameon=False,
        fontsize=6.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncol=2,
    )


# ---------------------------------------------------------------------------------------- classification


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "Confusion matrix"
) -> Figure:
    """Row-normalised confusion matrix (percent of each true class), annotated with counts."""
    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(100 * cm, rows, out=np.zeros_like(cm), where=rows > 0)
    annot = np.array(
        [[f"{share[i, j]:.0f}%\n({int(cm[i, j])})" for j in range(cm.shape[1])] for i in range(cm.shape[0])]
    )
    fig, ax = new_figure(COLUMN, 2.8)
    sns.heatmap(
        share,
        annot=annot,
        fmt="",
        cmap="Blues",
        vmin=0,
        vmax=100,
        square=True,
        ax=ax,
        xticklabels=class_names,
        yticklabels=class_names,
        annot_kws={"fontsize": 7},
        cbar_kws={"label": "percent of true class"},
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig


def reliability_figure(bins: Mapping[str, Any], ece: float, title: str = "Calibration") -> Figure:
    """Reliability diagram: accuracy against confidence per bin, with the image count per bin."""
    fig, ax = new_figure(COLUMN, 2.6)
    edges = np.asarray(bins["edges"], dtype=float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    acc = np.asarray(bins["accuracy"], dtype=float)
    counts = np.asarray(bins["counts"], dtype=float)
    ok = counts > 0
    c = colors(2)
    ax.bar(centres[ok], acc[ok], width=np.diff(edges)[ok] * 0.9, color=c[0], label="accuracy in bin")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    for x, y, n in zip(centres[ok], acc[ok], counts[ok]):  # the count inside the bar's foot
        ax.text(x, 0.02, f"{int(n)}", ha="center", fontsize=5.5, color="white" if y > 0.1 else "black")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max posterior)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f}; numbers: images per bin)")
    ax.legend(frameon=False, loc="upper left")
    return fig


def accuracy_vs_fraction_figure(
    curve: Mapping[str, Any], title: str = "Partial-image classification"
) -> Figure:
    """Accuracy (with its bootstrap 95% band) against the fraction of the image seen in raster order."""
    fig, ax = new_figure(COLUMN, 2.4)
    frac = 100 * np.asarray(curve["fractions"], dtype=float)
    acc = 100 * np.asarray(curve["accuracy"], dtype=float)
    c = colors(1)[0]
    ax.plot(frac, acc, color=c, lw=1.3, label="accuracy")
    if curve.get("ci_low") is not None:
        ax.fill_between(
            frac,
            100 * np.asarray(curve["ci_low"]),
            100 * np.asarray(curve["ci_high"]),
            color=c,
            alpha=0.2,
            lw=0,
            label="bootstrap 95% interval",
        )
    ax.axhline(25, color="grey", ls=":", lw=0.8, label="chance")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("image seen, raster order (% of pixels)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title} ({curve['n']} validation images)")
    ax.legend(frameon=False, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    return fig


def per_class_bpd_figure(per_class: Mapping[str, float], title: str = "Bits/dim per class") -> Figure:
    """Bits/dim of each class's validation images under their own label."""
    fig, ax = new_figure(COLUMN, 2.0)
    names = list(per_class)
    bars = ax.bar(names, [per_class[n] for n in names], color=colors(len(names)))
    ax.bar_label(bars, fmt="%.2f", fontsize=6.5, padding=1)
    ax.set_ylabel("bits per dimension")
    ax.set_title(title)
    ax.margins(y=0.15)
    return fig


# ------------------------------------------------------------------------------------------------- FID


def fid_floor_figure(
    entries: Sequence[Mapping[str, Any]], title: str = "FID beside the real-data floor"
) -> Figure:
    """Bars of a model's FID and the real-data floor per protocol; entries hold protocol, what, mean, std.

    An entry whose mean is None is drawn as an explicit "not measured" note, never as a number.
    """
    protocols = list(dict.fromkeys(e["protocol"] for e in entries))
    fig, axes = new_figure(FULL if len(protocols) > 1 else COLUMN, 2.2, 1, len(protocols))
    axes = np.atleast_1d(axes)
    for ax, protocol in zip(axes, protocols):
        rows = [e for e in entries if e["protocol"] == protocol]
        measured = [e for e in rows if e.get("mean") is not None]
        if not measured:
            reason = rows[0].get("note") or "not measured"
            write_note(ax, f"{protocol}:\n{reason}")
            continue
        names = [e["what"] for e in measured]
        means = [e["mean"] for e in measured]
        stds = [e.get("std") or 0.0 for e in measured]
        errors = stds if any(s > 0 for s in stds) else None
        bars = ax.bar(names, means, yerr=errors, capsize=3, color=colors(len(names)))
        ax.bar_label(bars, fmt="%.1f", fontsize=6.5, padding=2)
        ax.set_ylabel("FID (lower is better)")
        ax.set_title(protocol)
        ax.margins(y=0.2)
    fig.suptitle(title)
    return fig


def sampler_speed_figure(rows: Sequence[Mapping[str, Any]], title: str = "Sampler speed") -> Figure:
    """Seconds per image of the naive and the cached sampler at each batch size (log scale)."""
    fig, ax = new_figure(COLUMN, 2.2)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    batches = sorted({int(r["batch"]) for r in rows})
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(batches))
    for i, (method, color) in enumerate(zip(methods, colors(len(methods)))):
        values = [
            next(
                (r["seconds_per_image"] for r in rows if r["method"] == method and r["batch"] == b), math.nan
            )
            for b in batches
        ]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method, color=color)
        ax.bar_label(bars, fmt="%.2g", fontsize=6, padding=1)
    ax.set_xticks(x, [str(b) for b in batches])
    ax.set_yscale("log")
    ax.set_xlabel("batch size (images sampled together)")
    ax.set_ylabel("seconds per image")
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.margins(y=0.25)
    return fig


# ---------------------------------------------------------------------------------------------- ablation


def ablation_figure(rows: Sequence[Mapping[str, Any]], title: str = "Conditioning variants") -> Figure:
    """Validation accuracy (bootstrap 95% interval) and bits/dim of every ablation variant."""
    fig, (ax_acc, ax_bpd) = new_figure(FULL, 2.4, 1, 2)
    names = [r["name"] for r in rows]
    y = np.arange(len(names))
    c = colors(2)
    for i, r in enumerate(rows):
        if r.get("val_accuracy") is None:
            ax_acc.text(2, i, "n/a (no classifier)", va="center", fontsize=6.5, color="grey")
            continue
        acc = 100 * r["val_accuracy"]
        lo, hi = (100 * v for v in r["val_accuracy_ci"])
        ax_acc.errorbar(acc, i, xerr=[[acc - lo], [hi - acc]], fmt="o", color=c[0], capsize=2, ms=3.5)
    ax_acc.axvline(25, color="grey", ls=":", lw=0.8)
    ax_acc.set_yticks(y, names)
    ax_acc.set_xlim(0, 100)
    ax_acc.set_ylim(len(names) - 0.4, -0.6)
    ax_acc.set_xlabel("validation accuracy (%), 95% interval")
    ax_acc.set_title("Classification")
    bpd = [r.get("val_bpd") if r.get("val_bpd") is not None else math.nan for r in rows]
    ax_bpd.barh(y, bpd, color=c[1])
    ax_bpd.set_yticks(y, [""] * len(names))
    ax_bpd.set_ylim(len(names) - 0.4, -0.6)
    finite = [v for v in bpd if math.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        ax_bpd.set_xlim(max(0.0, low - 0.6 * (high - low + 0.05)), high + 0.3 * (high - low + 0.05))
    for i, v in enumerate(bpd):
        if math.isfinite(v):
            ax_bpd.text(v, i, f" {v:.3f}", va="center", fontsize=6)
    ax_bpd.set_xlabel("validation bits per dimension (lower is better)")
    ax_bpd.set_title("Likelihood")
    fig.suptitle(title)
    return fig


def comparison_figure(
    models: Mapping[str, Mapping[str, Any]],
    class_names: Sequence[str],
    title: str = "Base model and fine-tuned model",
) -> Figure:
    """Per-class validation accuracy of several models (grouped bars), overall accuracy in the legend."""
    fig, ax = new_figure(COLUMN, 2.3)
    names = list(models)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(class_names))
    for i, (name, color) in enumerate(zip(names, colors(len(names)))):
        per_class = [100 * models[name]["per_class_accuracy"][k] for k in class_names]
        ax.bar(
            x + (i - (len(names) - 1) / 2) * width,
            per_class,
            width,
            color=color,
            label=f"{name} ({100 * models[name]['accuracy']:.1f}% overall)",
        )
    ax.set_xticks(x, class_names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig


# ------------------------------------------------------------------------------------ generative model


def _flat_grid(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Blocks (rows, cols_i, H, W, 3) side by side along the columns: one grid for `image_grid_figure`."""
    return np.concatenate([np.asarray(b) for b in blocks], axis=1)


def completions_figure(
    originals: np.ndarray,
    completions: np.ndarray,
    labels: Sequence[int],
    class_names: Sequence[str],
    rows: int,
    other: np.ndarray | None = None,
    other_labels: Sequence[int] | None = None,
    title: str = "Completions of the top half",
) -> Figure:
    """Per image (one row): its known top rows, completions under its class (and another), the original.

    `originals` (N, H, W, 3) and `completions` (N, C, H, W, 3) are uint8; `other` (N, H, W, 3) holds one
    completion under `other_labels`. The hidden rows of the first column are mid-grey.
    """
    originals = np.asarray(originals)
    masked = originals.copy()
    masked[:, rows:] = 128
    per_image = completions.shape[1]
    blocks = [masked[:, None], completions]
    col_labels = ["given", *[f"draw {i + 1}" for i in range(per_image)]]  # short: a cell is narrow
    row_labels = [class_names[k] for k in labels]
    if other is not None:
        blocks.append(np.asarray(other)[:, None])
        col_labels.append("other")
        row_labels = [f"{class_names[k]}\n(other: {class_names[o]})" for k, o in zip(labels, other_labels)]
    blocks.append(originals[:, None])
    col_labels.append("original")
    return image_grid_figure(_flat_grid(blocks), row_labels, title, col_labels=col_labels)


def temperature_figure(
    grid: np.ndarray, class_names: Sequence[str], temperatures: Sequence[float], title: str
) -> Figure:
    """Samples (classes, temperatures, n, H, W, 3) in one row per class, a block of n per temperature."""
    grid = np.asarray(grid)
    n = grid.shape[2]
    blocks = [grid[:, t] for t in range(grid.shape[1])]
    col_labels = [f"T = {t:g}" if i == 0 else "" for t in temperatures for i in range(n)]
    return image_grid_figure(_flat_grid(blocks), list(class_names), title, col_labels=col_labels)


def real_vs_generated_figure(
    real: np.ndarray, generated: np.ndarray, class_names: Sequence[str], title: str
) -> Figure:
    """Per class a row of real training images above a row of samples (both (classes, n, H, W, 3))."""
    real, generated = np.asarray(real), np.asarray(generated)
    n = min(real.shape[1], generated.shape[1])
    rows = np.stack([part[k, :n] for k in range(len(class_names)) for part in (real, generated)])
    labels = [f"{name} ({what})" for name in class_names for what in ("real", "samples")]
    return image_grid_figure(rows, labels, title)


def read_sample_grids(folder: str | Path) -> tuple[list[int], np.ndarray]:
    """The sample grids a training run saved (`<run>/samples/epoch_XXXX.png`, `pcnn.runrecord`): their
    epochs and the images as uint8 (E, H, W, 3), padded with white to one size; none: (0, 1, 1, 3)."""
    from matplotlib.image import imread

    paths = sorted(Path(folder).glob("epoch_*.png"))
    if not paths:
        return [], np.zeros((0, 1, 1, 3), dtype=np.uint8)
    images = [np.round(imread(path)[..., :3] * 255).astype(np.uint8) for path in paths]
    height, width = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    grids = np.full((len(images), height, width, 3), 255, dtype=np.uint8)
    for grid, image in zip(grids, images):
        grid[: image.shape[0], : image.shape[1]] = image
    return [int(path.stem.split("_")[1]) for path in paths], grids


def samples_over_training_figure(
    grids: Sequence[np.ndarray], epochs: Sequence[int], title: str, max_panels: int = 6
) -> Figure:
    """The training run's sample grids side by side, each titled with its epoch (at most `max_panels`,
    evenly spaced, the last one always shown)."""
    if not grids:
        return note_figure(
            "The training run saved no sample grids (train.sample_every is 0, or training ended before "
            "the first one).",
            FULL,
        )
    keep = sorted({round(i) for i in np.linspace(0, len(grids) - 1, min(max_panels, len(grids)))})
    height, width = np.asarray(grids[0]).shape[:2]
    panel = FULL / len(keep)
    fig, axes = new_figure(FULL, panel * height / width + 0.35, 1, len(keep), squeeze=False)
    for ax, i in zip(axes[0], keep):
        ax.imshow(np.asarray(grids[i]), interpolation="antialiased")
        ax.set_title(f"epoch {epochs[i]}")
        ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100 * value


def judge_per_class_figure(per_class: Mapping[str, Mapping[str, Any]], title: str) -> Figure:
    """Per class the share of samples the judge puts in their class and its recall on real validation
    images, each with its 95% interval; chance (one in the number of classes) is marked."""
    fig, ax = new_figure(COLUMN, 2.4)
    names = list(per_class)
    x = np.arange(len(names))
    series = (("samples", "samples judged their class"), ("real", "judge's recall on real images"))
    for i, ((key, label), color) in enumerate(zip(series, colors(2))):
        share = np.array([_percent(per_class[n][f"{key}_share"]) for n in names], dtype=float)
        ci = np.array([per_class[n][f"{key}_ci95"] or (None, None) for n in names], dtype=float) * 100
        errors = np.clip(np.vstack([share - ci[:, 0], ci[:, 1] - share]), 0, None)
        offset = (i - 0.5) * 0.38
        bars = ax.bar(x + offset, share, 0.38, yerr=errors, capsize=2, color=color, label=label)
        shown = [f"{v:.0f}" if v >= 12 else "" for v in share]  # a short bar has no room inside
        ax.bar_label(bars, shown, fontsize=6, label_type="center", color="white")
    ax.axhline(100 / len(names), color="grey", ls=":", lw=0.8, label=f"chance ({len(names)} classes)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("percent, 95% Wilson interval")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig
