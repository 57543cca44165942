"""Where a run stands and how it ended: its resumable counters, the stop reasons and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Stop reasons. A run that stopped for a FINAL reason is finished; the others can be resumed.
FINAL_REASONS = ("epochs", "max_steps", "max_minutes", "early_stop")
RESUMABLE_REASONS = ("session_budget", "callback")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    """What a call to `train` produced."""

    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    status: str = "finished"  # a FINAL_REASONS / RESUMABLE_REASONS entry, or "already_finished"
    step: int = 0
    epochs_completed: int = 0


@dataclass
class Progress:
    """The resumable counters of a run (stored in every checkpoint)."""

    epoch: int = 0  # 0-based index of the epoch in progress (= epochs completed at an epoch boundary)
    batch: int = 0  # batches of that epoch already consumed
    step: int = 0  # optimiser steps taken
    skipped: int = 0  # batches skipped for a non-finite loss or gradient
    consecutive_bad: int = 0
    elapsed_s: float = 0.0  # training wall time of earlier sessions
    best_value: float | None = None
    best_epoch: int = 0
    evals_since_best: int = 0
    stop_reason: str | None = None
    # accumulators of the current evaluation window
    window_loss: float = 0.0
    window_bpd: float = 0.0
    window_steps: int = 0
    window_images: int = 0
    window_seconds: float = 0.0
