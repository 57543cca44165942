"""A small discriminative CNN: a BASELINE that puts the Bayes-rule classifier's accuracy in context.

It is not part of PixelCNN++G. It learns p(y|x) directly with cross-entropy on the same training split,
transform and image size as the generative model, so the gap between the two says how much accuracy the
generative route costs or gains. Whether it gets the same epochs or the same minutes is the caller's
choice; the result records both. It is evaluated once, on the validation split, after training: there is
no checkpoint selection on validation, so its validation accuracy is not optimistically biased.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pcnn.core.model import inference
from pcnn.datasets import CLASS_NAMES, NUM_CLASSES, CPEN455Dataset, eval_transform, train_transform
from pcnn.datasets.train_data import subset_indices
from pcnn.evaluation.metrics import classification_report
from pcnn.training.checkpoint import save_atomic
from pcnn.training.device import resolve_device
from pcnn.training.engine import seed_everything

MIN_FEATURE_SIZE = 4  # stop halving the resolution here; a global average pool follows


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two conv-BN-ReLU layers then a 2x2 max-pool: the usual small-image CNN stage."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class BaselineCNN(nn.Module):
    """Baseline discriminative classifier: conv-BN-ReLU-pool stages, global average pool, linear head.

    The number of stages halves `image_size` down to 4x4 (3 stages at 32x32), doubling the width each
    time, so the same class serves the 32x32 runs and tiny test images.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 32, image_size: int = 32) -> None:
        super().__init__()
        if image_size < MIN_FEATURE_SIZE:
            raise ValueError(f"image_size must be at least {MIN_FEATURE_SIZE}, got {image_size}")
        self.image_size = image_size
        stages = max(1, int(math.log2(image_size / MIN_FEATURE_SIZE)))
        layers, c_in = [], 3
        for stage in range(stages):
            c_out = width * 2**stage
            layers.append(_block(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(c_in, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K) of images (B, 3, S, S) in [-1, 1]."""
        return self.head(self.features(x))


def baseline_logits(model: BaselineCNN, images: Tensor, batch_size: int = 256) -> Tensor:
    """Logits (B, K) on the CPU, in eval mode and in chunks, so any number of images fits in memory."""
    device = next(model.parameters()).device
    with inference(model):
        parts = [
            model(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)
        ]
    return torch.cat(parts) if parts else torch.empty(0, model.head[-1].out_features)


def baseline_predict(model: BaselineCNN, images: Tensor) -> Tensor:
    """The baseline's predicted class (B,) of images in [-1, 1], e.g. to score generated samples."""
    return baseline_logits(model, images).argmax(dim=1)


def _evaluate(model: BaselineCNN, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = [], []
    for x, y in loader:
        logits.append(baseline_logits(model, x))
        labels.append(np.asarray(y))
    return torch.cat(logits).softmax(dim=1).numpy(), np.concatenate(labels)


def train_baseline(
    data_dir: Path | str,
    *,
    epochs: int = 30,
    max_minutes: float | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    image_size: int = 32,
    progress: bool = True,
    max_train_images: int = 0,
    width: int = 32,
) -> tuple[BaselineCNN, dict[str, Any]]:
    """Train the baseline CNN on the training split and report its validation accuracy (a baseline).

    Uses the generative model's training transform (flip, small rotation) and, for `max_train_images`, the
    same seeded subset of the training split (`pcnn.datasets.train_data.subset_indices`). Training stops after
    `epochs` or, checked after every step, once `max_minutes` of wall time are spent; the dict says which
    (`stopped_by`) and how many epochs ran (fractional when the budget cut an epoch short).
    """
    seed_everything(seed)
    dev = resolve_device(device)
    train_set = CPEN455Dataset(
        data_dir, "train", transform=train_transform(image_size), image_size=image_size, cache=True
    )
    val_set = CPEN455Dataset(
        data_dir, "validation", transform=eval_transform(image_size), image_size=image_size, cache=True
    )
    chosen = subset_indices(train_set.labels, max_train_images, seed)
    loader = DataLoader(
        Subset(train_set, chosen.tolist()),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(chosen) > batch_size,  # no 1-image batch for BatchNorm unless the split is tiny
        generator=torch.Generator().manual_seed(seed),
    )
    model = BaselineCNN(NUM_CLASSES, width, image_size).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    total_steps = max(1, epochs * len(loader))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    start = time.monotonic()  # the budget covers training only, not decoding the images
    budget_s = max_minutes * 60 if max_minutes else math.inf
    losses: list[float] = []
    steps, stopped_by = 0, "epochs"
    bar = tqdm(total=total_steps, desc="baseline CNN", disable=not progress, leave=False)
    model.train()
    for _ in range(epochs):
        epoch_loss, seen = 0.0, 0
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            steps += 1
            epoch_loss += loss.item() * len(y)
            seen += len(y)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if time.monotonic() - start >= budget_s:
                stopped_by = "max_minutes"
                break
        losses.append(epoch_loss / max(seen, 1))
        if stopped_by == "max_minutes":
            break
    bar.close()
    train_seconds = time.monotonic() - start
    probabilities, labels = _evaluate(model, DataLoader(val_set, batch_size=256))
    report = classification_report(labels, probabilities.argmax(axis=1), probabilities, NUM_CLASSES)
    return model, {
        "model": "baseline CNN (discriminative, not PixelCNN++G)",
        "split": "validation",
        **report,
        "class_names": list(CLASS_NAMES),
        "epochs": steps / len(loader),
        "epochs_requested": epochs,
        "max_minutes": max_minutes,
        "stopped_by": stopped_by,
        "steps": steps,
        "train_loss": losses,
        "train_images": len(chosen),
        "train_seconds": train_seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "image_size": image_size,
        "device": str(dev),
    }


def cached_baseline(
    cache_dir: Path | str | None,
    data_dir: Path | str,
    *,
    seed: int = 0,
    epochs: int = 30,
    max_minutes: float | None = None,
    image_size: int = 32,
    progress: bool = False,
) -> tuple[BaselineCNN, dict[str, Any]]:
    """`train_baseline`, trained once and kept in `cache_dir` (None: not kept), so that samples of several
    models are judged by the very same judge, and a rerun does not spend minutes retraining it.

    A kept judge is reused only for the same data folder, seed, epochs, cap and image size; it is read with
    `weights_only=True` (tensors and plain values, nothing unpickled).
    """
    settings = {
        "data_dir": str(Path(data_dir).resolve()),
        "seed": seed,
        "epochs": epochs,
        "max_minutes": max_minutes,
        "image_size": image_size,
    }
    path = Path(cache_dir) / f"judge_seed{seed}_epochs{epochs}_{image_size}px.pt" if cache_dir else None
    if path is not None and path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("settings") == settings:
            model = BaselineCNN(NUM_CLASSES, state["width"], image_size)
            model.load_state_dict(state["model"])
            print(f"judge of seed {seed}: kept in {path}", flush=True)
            return model.eval(), state["report"]
    model, report = train_baseline(
        data_dir, epochs=epochs, max_minutes=max_minutes, seed=seed, image_size=image_size, progress=progress
    )
    report = {k: v for k, v in report.items() if k != "train_loss"}
    if path is not None:
        width = model.features[0][0].out_channels
        kept = {"settings": settings, "width": width, "model": model.state_dict(), "report": report}
        save_atomic(path, kept)
    return model, report
