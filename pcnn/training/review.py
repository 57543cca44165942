"""Between epochs, on the main process: evaluation of the splits, the choice of `best.pt`, sample grids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pcnn.config import RunConfig
from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation.evaluate import evaluate_model
from pcnn.sampling.sample import sample, sample_grid_figure
from pcnn.training.checkpoint import save_checkpoint
from pcnn.training.policy import training_module
from pcnn.training.state import Progress
from pcnn.workflow.runrecord import RunRecord


def evaluate_split(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 64,
    subset: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float | None]:
    """A metrics line's numbers: bits/dim under the true label, Bayes accuracy and macro F1 (None for the
    unconditional model), from the one entry point `pcnn.evaluation.evaluate.evaluate_model`."""
    _, summary = evaluate_model(
        model, dataset, batch_size=batch_size, subset=subset, device=device, progress=progress
    )
    return {key: summary[key] for key in ("bits_per_dim", "accuracy", "macro_f1")}


class Review:
    """What the main process does between epochs with the weights that evaluation uses (the EMA when on).

    It measures a metrics line, keeps `best.pt` and counts evaluations without improvement for early
    stopping, and draws sample grids; both measuring and sampling leave the training random streams as
    they were, so that evaluating does not change the run.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        device: torch.device,
        progress: bool,
        validation: Any,
        holdout: Any,
        record: RunRecord,
        tensorboard: Any,
        say: Callable[[str], None],
    ) -> None:
        self.tc, self.mc = config.train, config.model
        self.device = device
        self.progress = progress
        self.validation = validation
        self.holdout = holdout
        self.record = record
        self.tensorboard = tensorboard
        self.say = say

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def measure(self, weights: nn.Module, state: Progress, run: dict[str, Any]) -> dict[str, Any]:
        """The metrics line of an evaluation; `run` holds what the trainer knows (lr, disc_weight,
        wall_time_s, weights), placed after the training window's and validation's numbers."""
        with torch.random.fork_rng(devices=self._rng_devices()):
            return self._line(weights, state, run)

    def _line(self, weights: nn.Module, state: Progress, run: dict[str, Any]) -> dict[str, Any]:
        tc, s = self.tc, state
        # the fast forward computes the same function faster; it starts in the weights' own mode
        model = training_module(weights, tc).train(weights.training)
        kwargs = {"batch_size": tc.eval_batch_size, "device": self.device, "progress": self.progress}
        val = evaluate_split(model, self.validation, subset=tc.eval_subset, **kwargs)
        line: dict[str, Any] = {
            "epoch": s.epoch,
            "step": s.step,
            "train_loss": s.window_loss / s.window_steps if s.window_steps else None,
            "train_bits_per_dim": s.window_bpd / s.window_steps if s.window_steps else None,
            "val_bits_per_dim": val["bits_per_dim"],
            "val_accuracy": val["accuracy"],
            "val_f1": val["macro_f1"],
            "lr": run["lr"],
            "disc_weight": run["disc_weight"],
            "images_per_s": s.window_images / s.window_seconds if s.window_seconds else None,
            "wall_time_s": run["wall_time_s"],
            "skipped_steps": s.skipped,
            "weights": run["weights"],
            "val_images": len(self.validation)
            if not tc.eval_subset
            else min(tc.eval_subset, len(self.validation)),
        }
        if self.holdout is not None:
            held = evaluate_split(model, self.holdout, **kwargs)
            line.update(
                {
                    "holdout_bits_per_dim": held["bits_per_dim"],
                    "holdout_accuracy": held["accuracy"],
                    "holdout_f1": held["macro_f1"],
                }
            )
        if self.tensorboard is not None:
            for key, value in line.items():
                if isinstance(value, float):
                    self.tensorboard.add_scalar(key, value, s.step)
        return line

    def select(
        self, line: dict[str, Any], state: Progress, checkpoint: Callable[[], dict[str, Any]]
    ) -> str | None:
        """Keep `best.pt` (by holdout accuracy if there is a holdout, else validation accuracy; by bits/dim
        for the unconditional model) and count evaluations without improvement for early stopping.

        `checkpoint()` gives the state to save as `best.pt`; returns "early_stop" when patience ran out.
        """
        s, tc = state, self.tc
        prefix = "holdout" if self.holdout is not None else "val"
        accuracy = line.get(f"{prefix}_accuracy")
        value = accuracy if accuracy is not None else -line[f"{prefix}_bits_per_dim"]
        if s.best_value is None or value > s.best_value:
            s.best_value, s.best_epoch, s.evals_since_best = value, s.epoch, 0
            saved = checkpoint()
            saved["selected_on"] = f"{prefix}_{'accuracy' if accuracy is not None else 'bits_per_dim'}"
            save_checkpoint(self.record.best, saved)
        else:
            s.evals_since_best += 1
        if tc.early_stop_patience and s.evals_since_best >= tc.early_stop_patience:
            self.say(
                f"early stop: no improvement on {prefix} in {s.evals_since_best} evaluations "
                f"(best at epoch {s.best_epoch})"
            )
            return "early_stop"
        return None

    def sample_grid(self, weights: nn.Module, epoch: int) -> None:
        """A grid of `sample_per_class` samples per class, drawn from a fixed seed, for the run folder."""
        tc, k = self.tc, self.mc.num_classes
        labels = torch.arange(k).repeat_interleave(tc.sample_per_class)
        generator = torch.Generator(device=self.device).manual_seed(tc.seed)
        with torch.random.fork_rng(devices=self._rng_devices()):
            conditional = self.mc.conditioning != "none"
            images = sample(
                weights,
                labels if conditional else None,
                generator=generator,
                image_size=self.mc.image_size,
                batch_size=len(labels),
            )
        shown = labels if conditional else torch.zeros_like(labels)
        sample_grid_figure(images, shown, CLASS_NAMES, self.record.sample_grid(epoch))
