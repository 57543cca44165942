"""Classify a whole split with the Bayes rule and write what users keep (docs/design.md#what-users-keep).

`evaluate_model` is the one evaluation entry point: the training's metrics lines
(`pcnn.training.review.evaluate_split`), the notebooks (`pcnn.workflow.experiments`) and the ablation all
call it; `score_split` is the scoring it runs on (also used alone for unlabelled or flipped images).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pcnn.core.classify import class_log_likelihoods, posterior
from pcnn.core.likelihood import bits_per_dim, bits_per_dim_scale, dmol_nll
from pcnn.core.model import PixelCNNPP, inference
from pcnn.datasets import CLASS_NAMES, CPEN455Dataset, evenly_spaced_indices
from pcnn.evaluation.metrics import classification_report, reliability


@dataclass
class SplitScores:
    """Per-image class log-likelihoods (nats) of one split, with what follows from them."""

    ids: list[str]
    labels: np.ndarray  # -1 where unknown (test split)
    log_likelihoods: np.ndarray  # (N, K), log p(x | y)
    image_size: int
    prior: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    paths: list[str] | None = None  # image paths as the split CSV lists them (test/0000021.jpg), if known

    @property
    def log_posterior(self) -> np.ndarray:
        prior = None if self.prior is None else torch.as_tensor(self.prior)
        return posterior(torch.as_tensor(self.log_likelihoods), prior).numpy()

    @property
    def predictions(self) -> np.ndarray:
        return self.log_posterior.argmax(axis=1)

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).all()) and self.labels.size > 0

    def bits_per_dim_true_label(self) -> float:
        """Mean bits/dim of each image under its own label (labelled splits only)."""
        nll = -self.log_likelihoods[np.arange(len(self.labels)), self.labels]
        return float(bits_per_dim(nll.mean(), self.image_size))

    def metrics(self) -> dict:
        if not self.labelled:
            return {"n": len(self.ids)}
        report = classification_report(
            self.labels, self.predictions, np.exp(self.log_posterior), self.log_likelihoods.shape[1]
        )
        report["bits_per_dim"] = self.bits_per_dim_true_label()
        return report


def score_split(
    model: PixelCNNPP,
    dataset: CPEN455Dataset,
    *,
    batch_size: int = 64,
    subset: int = 0,
    device: torch.device | str = "cpu",
    tta: bool = False,
    prior: np.ndarray | None = None,
    progress: bool = True,
) -> SplitScores:
    """Class log-likelihoods of every image (or of a fixed, evenly spaced subset of `subset` images)."""
    indices = evenly_spaced_indices(len(dataset), subset)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    paths = getattr(dataset, "paths", None)  # training's IndexedSplit has none; a submission needs them
    scores = []
    with inference(model):
        for x, _ in tqdm(loader, desc=f"classify {dataset.split}", disable=not progress, leave=False):
            x = x.to(device)
            ll = class_log_likelihoods(model, x)
            if tta:
                ll = 0.5 * (ll + class_log_likelihoods(model, x.flip(-1)))
            scores.append(ll.float().cpu())
    return SplitScores(
        ids=[dataset.ids[i] for i in indices],
        labels=np.asarray([dataset.labels[i] for i in indices]),
        log_likelihoods=torch.cat(scores).numpy().astype(np.float64),
        image_size=int(dataset[0][0].shape[-1]),
        prior=prior,
        paths=[paths[i] for i in indices] if paths is not None else None,
    )


def summarize_scores(scores: SplitScores, n_bins: int = 10) -> dict[str, Any]:
    """Headline metrics of a labelled split plus per-class accuracy and bits/dim and the reliability bins."""
    metrics = scores.metrics()
    labels, predictions = scores.labels, scores.predictions
    k = scores.log_likelihoods.shape[1]
    names = [CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c) for c in range(k)]
    nll = -scores.log_likelihoods[np.arange(len(labels)), labels]
    scale = bits_per_dim_scale(scores.image_size)
    per_class_acc, per_class_bpd = {}, {}
    for c, name in enumerate(names):
        members = labels == c
        per_class_acc[name] = float((predictions[members] == c).mean()) if members.any() else None
        per_class_bpd[name] = float(nll[members].mean() * scale) if members.any() else None
    _, bins = reliability(labels, np.exp(scores.log_posterior), n_bins)
    return {
        **metrics,
        "per_class_accuracy": per_class_acc,
        "per_class_bits_per_dim": per_class_bpd,
        "reliability": {
            key: [None if not np.isfinite(v) else float(v) for v in value] for key, value in bins.items()
        },
    }


def _unconditional_bits_per_dim(
    model: PixelCNNPP, dataset: Any, indices: list[int], batch_size: int, device: torch.device | str
) -> float:
    """Mean bits/dim of the images without a label: the unconditional model has no classifier."""
    total, count = 0.0, 0
    with inference(model):
        for start in range(0, len(indices), batch_size):
            x = torch.stack([dataset[i][0] for i in indices[start : start + batch_size]]).to(device)
            total += float(dmol_nll(x, model(x, None)).double().sum())
            count += x.shape[0]
    return total / max(count, 1) * bits_per_dim_scale(model.config.image_size)


def evaluate_model(
    model: PixelCNNPP,
    dataset: CPEN455Dataset,
    *,
    subset: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[SplitScores | None, dict[str, Any]]:
    """Evaluate a model on a labelled split: the Bayes rule's scores and their summary (`summarize_scores`).

    The unconditional model (`conditioning="none"`) has no classifier: no scores (None), and a summary of
    its bits/dim with accuracy and macro F1 None. `model` is a PixelCNNPP or a FastForward around one.
    """
    if model.config.conditioning != "none":
        scores = score_split(
            model, dataset, batch_size=batch_size, subset=subset, device=device, progress=progress
        )
        return scores, summarize_scores(scores)
    indices = evenly_spaced_indices(len(dataset), subset)
    bpd = _unconditional_bits_per_dim(model, dataset, indices, batch_size, device)
    return None, {"n": len(indices), "bits_per_dim": bpd, "accuracy": None, "macro_f1": None}


def write_submission(scores: SplitScores, path: str | Path, fid: float | None = None) -> Path:
    """Write the course leaderboard's submission CSV: ``id,label``, one row per image, then ``fid,<value>``.

    The id is the image's file name (``0000021.jpg``), as in the course README's CSV example and the
    submissions students wrote for its leaderboard; the labels are the predicted class indices; the FID
    row, when given, comes last. LF line endings, as the course's own CSV files have.
    """
    if fid is not None and not (math.isfinite(fid) and fid >= 0):
        raise ValueError(f"an FID is a finite number >= 0, got {fid}")
    if scores.paths is None:
        raise ValueError("a submission names each image's file: score a CPEN455Dataset, which lists them")
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "label"])
        for image_path, pred in zip(scores.paths, scores.predictions):
            writer.writerow([PurePosixPath(image_path).name, int(pred)])
        if fid is not None:
            writer.writerow(["fid", fid])
    return path


def write_outputs(
    scores: SplitScores,
    out_dir: str | Path,
    split: str,
    fid: float | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write metrics JSON, per-class log-likelihoods and posteriors CSV, and (test split) the submission CSV.

    `fid` goes into the submission as its last row (see :func:`write_submission`); `checkpoint` (the epoch
    and step of the weights scored) goes into the metrics JSON, which then says what it measured.
    """
    submission = split == "test" or not scores.labelled
    if fid is not None and not submission:
        raise ValueError(f"an FID row belongs in the test split's submission, not in the {split} outputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / f"{split}_metrics.json", "scores": out / f"{split}_log_likelihoods.csv"}
    metrics = scores.metrics()
    position = {"checkpoint": dict(checkpoint)} if checkpoint is not None else {}
    paths["metrics"].write_text(json.dumps({"split": split, **metrics, **position}, indent=2) + "\n")
    post = np.exp(scores.log_posterior)
    k = scores.log_likelihoods.shape[1]
    with paths["scores"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["id", "label", "prediction"]
            + [f"loglik_{CLASS_NAMES[c] if c < len(CLASS_NAMES) else c}" for c in range(k)]
            + [f"posterior_{CLASS_NAMES[c] if c < len(CLASS_NAMES) else c}" for c in range(k)]
        )
        for i, image_id in enumerate(scores.ids):
            writer.writerow(
                [image_id, int(scores.labels[i]), int(scores.predictions[i])]
                + [repr(float(v)) for v in scores.log_likelihoods[i]]
                + [repr(float(v)) for v in post[i]]
            )
    if submission:
        paths["submission"] = write_submission(scores, out / "submission.csv", fid)
    return paths
