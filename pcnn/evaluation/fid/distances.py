"""The Frechet distance and the kernel inception distance between Inception features, in float64."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root through eigh; negative rounding-error eigenvalues are clipped to 0."""
    sym = 0.5 * (matrix + matrix.T)
    evals, evecs = np.linalg.eigh(sym)
    evals = np.clip(evals, 0.0, None)
    return (evecs * np.sqrt(evals)) @ evecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr((S1 S2)^(1/2))`` is computed as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: the two products have
    the same non-zero eigenvalues, and the second is symmetric PSD, so an eigendecomposition gives a
    real answer even for rank-deficient covariances (100 samples at 192 dims), where ``scipy.linalg.sqrtm``
    of the non-symmetric product returns complex noise. The result is clipped at 0 (rounding only).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    evals = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_covmean = float(np.sum(np.sqrt(np.clip(evals, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018)."""
    d = x.shape[1]
    m = x.shape[0]
    n = y.shape[0]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and standard deviation (ddof 0) of the unbiased polynomial-kernel MMD^2 over subsets.

    Unlike FID, the estimate is unbiased at any sample count, which matters when there are fewer
    samples than feature dimensions. ``subset_size`` is capped by the smaller set; each subset is drawn
    without replacement from each set by a ``numpy`` generator seeded with ``seed``. When the cap makes
    a subset the whole of both sets, every subset gives the same value and the std is 0.
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N, d] arrays of the same d, got {f1.shape} and {f2.shape}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {f1.shape[0]} and {f2.shape[0]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        values[i] = _polynomial_mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (ddof 1) covariance of Inception features in float64, as pytorch-fid computes them."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, d] feature array, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def summarize_over_seeds(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0.0 for one value) of a metric over sampling seeds.

    With 100 samples a single FID is noisy, so the report quotes mean +- std over seeds.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize_over_seeds needs at least one value")
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": vals}


def feature_metrics(
    f1: np.ndarray, f2: np.ndarray, *, kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0
) -> dict[str, Any]:
    """FID plus KID (when both sets have >= 2 images) between two feature sets."""
    mu1, s1 = statistics(f1)
    mu2, s2 = statistics(f2)
    result: dict[str, Any] = {
        "fid": frechet_distance(mu1, s1, mu2, s2),
        "kid_mean": None,
        "kid_std": None,
        "n_samples": int(f1.shape[0]),
        "n_reference": int(f2.shape[0]),
        "dims": int(f1.shape[1]),
    }
    if min(f1.shape[0], f2.shape[0], kid_subset_size) >= 2:
        result["kid_mean"], result["kid_std"] = kernel_inception_distance(
            f1, f2, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
    return result


def per_class_fid(
    features: np.ndarray, labels: Sequence[int], reference: np.ndarray, reference_labels: Sequence[int]
) -> dict[int, float]:
    """FID of each class's features against the same class's reference features.

    With a few hundred images per class and 2048 dimensions the covariances are rank-deficient and the
    values are biased upwards: compare them with the same computation on two real sets, not with the
    all-class FID.
    """
    labels, reference_labels = np.asarray(labels), np.asarray(reference_labels)
    out: dict[int, float] = {}
    for cls in sorted(set(labels.tolist()) & set(reference_labels.tolist())):
        mu1, s1 = statistics(features[labels == cls])
        mu2, s2 = statistics(reference[reference_labels == cls])
        out[int(cls)] = frechet_distance(mu1, s1, mu2, s2)
    return out
