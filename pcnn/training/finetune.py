"""Fine-tuning from a checkpoint, after the original report's pipeline (docs/design.md#fine-tuning).

A fine-tuning run is an ordinary training run whose config starts from the checkpoint's own and changes:
- the weights start from the checkpoint (`init_checkpoint`), with a fresh Adam optimiser;
- the learning rate is `LR_FACTOR` times the one the checkpoint last trained with, without the switch;
- epochs count from 0, so the hybrid term (if `disc_weight` > 0) trains from the first epoch unless
  `disc_start_epoch` is set again, and to the end unless `disc_end_epoch` is (the checkpoint's own
  schedule counted the original run's epochs);
- colour jitter and random crop join the augmentation (`finetune_augment`);
- optionally the chosen classes are drawn with a fixed share of each epoch (`focus_classes`,
  `focus_share`, 90% by default), and a stratified part of the *training* split is held out to select
  the best checkpoint and stop early (`holdout_fraction`, `early_stop_patience`). The validation split,
  on which results are reported, is never used for that when a holdout exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pcnn.config import ModelConfig, RunConfig, apply_overrides
from pcnn.training.checkpoint import load_checkpoint
from pcnn.training.engine import TrainResult, lr_at, train

LR_FACTOR = 0.1
EPOCHS = 20


def finetune_config(
    checkpoint: str | Path,
    overrides: Sequence[str] = (),
    *,
    classes: str = "",
    share: float = 0.9,
    holdout: float = 0.0,
    patience: int = 0,
) -> RunConfig:
    """The resolved config of a fine-tuning run from `checkpoint` (then `section.field=value` overrides)."""
    state = load_checkpoint(checkpoint)
    if "run_config" in state:
        base = RunConfig.from_dict(state["run_config"])
    else:
        base = RunConfig(model=ModelConfig(**state["model_config"]))
    trained_epochs = int(state.get("epoch", 0))
    last_lr = lr_at(base.train, max(trained_epochs - 1, 0))
    tc = dataclasses.replace(
        base.train,
        lr=last_lr * LR_FACTOR,
        lr_switch_epoch=0,
        disc_start_epoch=0,  # counted in this run's epochs (module docstring)
        disc_end_epoch=0,
        epochs=EPOCHS,
        max_steps=0,
        max_minutes=0.0,
        init_checkpoint=str(Path(checkpoint).resolve()),
        finetune_augment=True,
        focus_classes=classes,
        focus_share=share,
        holdout_fraction=holdout,
        early_stop_patience=patience,
    )
    config = RunConfig(name=f"{base.name}-finetune", model=base.model, train=tc)
    return apply_overrides(config, list(overrides))


def finetune(
    checkpoint: str | Path,
    *,
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    classes: str = "",
    share: float = 0.9,
    holdout: float = 0.0,
    patience: int = 0,
    data_dir: str | Path | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune the model of `checkpoint`, writing an ordinary run folder to `run_dir`."""
    config = finetune_config(
        checkpoint, overrides, classes=classes, share=share, holdout=holdout, patience=patience
    )
    return train(
        config, data_dir=data_dir, run_dir=run_dir, resume=resume, max_minutes=max_minutes, progress=progress
    )
