"""Classification metrics: accuracy, macro F1, confusion matrix, calibration, confidence intervals."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes on rows and predicted classes on columns."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float((labels == predictions).mean()) if labels.size else float("nan")


def macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes that occur in labels or predictions."""
    cm = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1) + cm.sum(axis=0)
    present = support > 0
    f1 = np.divide(2 * tp, support, out=np.zeros_like(tp), where=present)
    return float(f1[present].mean()) if present.any() else float("nan")


def bootstrap_accuracy_ci(
    labels: np.ndarray, predictions: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (resampling images with replacement)."""
    correct = (np.asarray(labels) == np.asarray(predictions)).astype(float)
    return bootstrap_mean_ci(correct, n_boot=n_boot, level=level, seed=seed)


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean over items resampled with replacement (NaNs when empty).

    Paired differences resample their per-item differences here, so each pair stays together."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def reliability(
    labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10
) -> tuple[float, dict[str, np.ndarray]]:
    """Expected calibration error of the top-class confidence, and the bins of a reliability diagram."""
    probabilities = np.asarray(probabilities, dtype=float)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins).astype(float)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(which, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = conf_sum / counts
        mean_acc = acc_sum / counts
    ece = float(np.nansum(counts / max(counts.sum(), 1) * np.abs(mean_acc - mean_conf)))
    return ece, {"edges": edges, "counts": counts, "confidence": mean_conf, "accuracy": mean_acc}


def classification_report(
    labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray, num_classes: int
) -> dict:
    """All headline classification numbers for a labelled split, JSON-ready."""
    low, high = bootstrap_accuracy_ci(labels, predictions)
    ece, _ = reliability(labels, probabilities)
    return {
        "n": int(np.asarray(labels).size),
        "accuracy": accuracy(labels, predictions),
        "accuracy_ci95": [low, high],
        "macro_f1": macro_f1(labels, predictions, num_classes),
        "ece": ece,
        "confusion_matrix": confusion_matrix(labels, predictions, num_classes).tolist(),
    }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default): unlike the normal approximation it stays
    inside [0, 1] and is not empty at 0 or n successes, which per-class counts of samples often hit."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, not a rounding above 0
    return low, 1.0 if successes == n else min(1.0, centre + half)
