"""The training loop: setup, epochs of steps, stops, checkpoints and exact resume; `train` runs it."""

from __future__ import annotations

import dataclasses
import functools
import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pcnn.config import ModelConfig, RunConfig, TrainConfig
from pcnn.core.model import build_model
from pcnn.training import distributed
from pcnn.training.checkpoint import load_checkpoint, model_state, save_checkpoint
from pcnn.training.device import resolve_device
from pcnn.training.distributed import DistInfo
from pcnn.training.ema import EMA
from pcnn.training.optimizer import build_optimizer, lr_at
from pcnn.training.policy import training_module
from pcnn.training.review import Review
from pcnn.training.rng_state import capture_rng, restore_rng, seed_everything
from pcnn.training.run_data import load_run_data
from pcnn.training.state import FINAL_REASONS, NonFiniteLossError, Progress, TrainResult
from pcnn.training.step import TrainStep, make_train_step
from pcnn.workflow.runrecord import RunRecord, provenance, read_metrics


def _say(message: str, info: DistInfo) -> None:
    """Print a line for the person watching, once (on the main process), without breaking the bars."""
    if info.is_main:
        tqdm.write(message, file=sys.stdout)


class _Trainer:
    def __init__(
        self,
        config: RunConfig,
        *,
        data_dir: str | Path | None,
        run_dir: str | Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
        device: torch.device,
        info: DistInfo,
        on_step: Callable[[int, float], bool | None] | None,
    ) -> None:
        self.config = config
        self.tc, self.mc = config.train, config.model
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.session_seconds = max_minutes * 60 if max_minutes else 0.0
        self.progress = progress and info.is_main
        self.device = device
        self.info = info
        self.on_step = on_step
        self.record = RunRecord(self.run_dir) if info.is_main else None
        self.metrics: list[dict[str, Any]] = []
        self.state = Progress()
        self.last_save = time.monotonic()
        self.session_start = time.monotonic()
        self.init_ema: dict[str, Tensor] | None = None
        self.tensorboard: Any = None
        self.review: Review | None = None  # on the main process, once the data is loaded
        self.evaluated_at = -1  # the step of this session's latest evaluation (known on every process)

    # -- setup
    def _build(self) -> None:
        tc, mc = self.tc, self.mc
        seed_everything(tc.seed)
        self.model = build_model(mc)
        if tc.init_checkpoint:
            self._load_init_weights(Path(tc.init_checkpoint))
        self.model.to(self.device).train()
        self.ema = EMA(self.model, tc.polyak_decay) if tc.polyak else None
        if self.ema is not None and self.init_ema is not None:
            self.ema.load_state_dict(self.init_ema)
        self.optimizer = build_optimizer(self.model, tc)
        self.wrapped: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(
                training_module(self.model, tc), device_ids=ids
            )
        self.step_fn = self._make_step(tc.objective_at(0))
        _say(f"precision {self.step_fn.precision.describe()}", self.info)
        if self.step_fn.cores is not None:
            cores = self.step_fn.cores
            _say(
                f"each step is shared by {cores.processes} processes of {cores.threads} thread(s) each "
                "(train.cpu_processes; helpers start at the first step)",
                self.info,
            )
        if self.info.rank:  # each process drops out different units
            torch.manual_seed(tc.seed + 7919 * self.info.rank)

    def _make_step(self, train_config: TrainConfig) -> TrainStep:
        return make_train_step(self.wrapped, self.optimizer, train_config, ema=self.ema, dist_info=self.info)

    def _objective_for_epoch(self) -> None:
        """Rebuild the step where the objective changes (`disc_start_epoch`, `disc_end_epoch`); a resumed
        run starts with the objective of its epoch."""
        wanted = self.tc.objective_at(self.state.epoch)
        if wanted.disc_weight == self.step_fn.config.disc_weight:
            return
        self.step_fn.close()
        self.step_fn = self._make_step(wanted)
        if wanted.disc_weight == 0:
            _say(
                f"epoch {self.state.epoch + 1}: the hybrid term ends; the likelihood trains alone", self.info
            )
            return
        warmup = f", reached over {wanted.disc_warmup_epochs:g} epochs" if wanted.disc_warmup_epochs else ""
        _say(
            f"epoch {self.state.epoch + 1}: the hybrid term joins the likelihood (disc_weight "
            f"{wanted.disc_weight:g}{warmup})",
            self.info,
        )

    def _load_init_weights(self, path: Path) -> None:
        state = load_checkpoint(path)
        # Dropout has no weights: a fine-tune may change its rate; anything else changes the network.
        if dataclasses.replace(ModelConfig(**state["model_config"]), dropout=self.mc.dropout) != self.mc:
            raise ValueError(
                f"{path}: its model config differs from this run's; fine-tune the same network"
                " (only model.dropout may change)"
            )
        self.model.load_state_dict(state["model"])
        self.init_ema = state.get("ema")
        _say(f"initialised from {path}", self.info)

    def _data(self, data_dir: str | Path | None) -> None:
        self.data = load_run_data(self.config, data_dir, main=self.info.is_main)
        if self.info.is_main:
            self.review = Review(
                self.config,
                device=self.device,
                progress=self.progress,
                validation=self.data.validation,
                holdout=self.data.holdout,
                record=self.record,
                tensorboard=self.tensorboard,
                say=functools.partial(_say, info=self.info),
            )

    # -- checkpoints
    def _checkpoint_state(self, full: bool) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model_config": dataclasses.asdict(self.mc),
            "run_config": self.config.to_dict(),
            "model": model_state(self.model),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "metrics": self.metrics[-1] if self.metrics else None,
        }
        if full:
            state["optimizer"] = self.optimizer.state_dict()
            if self.step_fn.scaler is not None:
                state["grad_scaler"] = self.step_fn.scaler.state_dict()
            state["progress"] = {**dataclasses.asdict(self.state), "elapsed_s": self._elapsed()}
            state["world_size"] = self.info.world_size
        return state

    def _save_last(self) -> None:
        """Every process contributes its random state; the main process writes `last` atomically."""
        rng = distributed.gather(capture_rng(), self.info)
        if self.record is None:
            return
        self.record.flush()
        state = self._checkpoint_state(full=True)
        state["rng"] = rng
        save_checkpoint(self.record.last, state)
        self.last_save = time.monotonic()

    def _restore(self, state: dict[str, Any]) -> None:
        saved = ModelConfig(**state["model_config"])
        if saved != self.mc:
            raise ValueError(
                f"{self.record_last}: the checkpoint's model {saved} differs from the requested {self.mc}"
            )
        old = TrainConfig(**state["run_config"]["train"])
        changed = [
            f.name
            for f in dataclasses.fields(TrainConfig)
            if getattr(old, f.name) != getattr(self.tc, f.name)
        ]
        if changed:
            _say(f"resuming with changed training settings: {', '.join(changed)}", self.info)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.step_fn.scaler is not None and state.get("grad_scaler") is not None:
            self.step_fn.scaler.load_state_dict(state["grad_scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
            self.ema.updates = state["progress"]["step"]
        self.state = Progress(**state["progress"])
        rngs = state["rng"]
        if state.get("world_size", 1) != self.info.world_size:
            _say("the number of processes changed: random streams are reseeded, not restored", self.info)
            torch.manual_seed(self.tc.seed + 7919 * self.info.rank + self.state.step)
        else:
            restore_rng(rngs[self.info.rank])

    @property
    def record_last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def _finished(self) -> bool:
        s, tc = self.state, self.tc
        return (
            s.epoch >= tc.epochs
            or bool(tc.max_steps and s.step >= tc.max_steps)
            or bool(tc.max_minutes and s.elapsed_s >= tc.max_minutes * 60)
            or s.stop_reason == "early_stop"
        )

    # -- the run
    def run(self, data_dir: str | Path | None) -> TrainResult:
        last = self.record_last
        if not self.resume and last.is_file():
            raise FileExistsError(
                f"{self.run_dir} already holds a run (checkpoints/last.pt); pass --resume to continue it"
                " or choose another --run-dir"
            )
        self._build()
        resuming = False
        if self.resume and last.is_file():
            state = load_checkpoint(last, map_location=self.device)
            self._restore(state)
            resuming = True
            if self._finished():
                self.metrics = read_metrics(self.run_dir) if self.record is not None else []
                _say(
                    f"{self.run_dir}: the run is already finished (epoch {self.state.epoch}, step "
                    f"{self.state.step}); nothing to do",
                    self.info,
                )
                return self._result("already_finished")
            _say(
                f"resuming {self.run_dir} at epoch {self.state.epoch + 1}, batch {self.state.batch}, "
                f"step {self.state.step}",
                self.info,
            )
        elif self.resume:
            _say(f"{self.run_dir}: no checkpoint to resume from; starting a fresh run", self.info)
        self._data(data_dir)
        if self.record is not None:
            self.record.write_config(self.config)
            self.record.add_provenance(
                provenance(
                    self.device,
                    {
                        "resumed_at_step": self.state.step if resuming else None,
                        "world_size": self.info.world_size,
                        "data_dir": str(self.data.root),
                        "precision": self.step_fn.precision.describe(),
                        "compiled": self.step_fn.compiled,
                        "cpu_processes": self.step_fn.processes,
                    },
                )
            )
            self.record.start(self.state.step)
            self.metrics = read_metrics(self.run_dir)
        self.state.stop_reason = None
        self.session_start = time.monotonic()
        try:
            reason = self._loop()
        finally:
            if self.record is not None:
                self.record.close()
        return self._result(reason)

    def _result(self, status: str) -> TrainResult:
        best = self.run_dir / "checkpoints" / "best.pt"
        return TrainResult(
            run_dir=self.run_dir,
            last_checkpoint=self.record_last if self.record_last.is_file() else None,
            best_checkpoint=best if best.is_file() else None,
            metrics=list(self.metrics),
            status=status,
            step=self.state.step,
            epochs_completed=self.state.epoch,
        )

    def _elapsed(self) -> float:
        return self.state.elapsed_s + (time.monotonic() - self.session_start)

    def _stop_reason(self, loss: float) -> str | None:
        tc, s = self.tc, self.state
        reason = None
        if tc.max_steps and s.step >= tc.max_steps:
            reason = "max_steps"
        elif tc.max_minutes and self._elapsed() >= tc.max_minutes * 60:
            reason = "max_minutes"
        elif self.session_seconds and time.monotonic() - self.session_start >= self.session_seconds:
            reason = "session_budget"
        elif self.on_step is not None and self.on_step(s.step, loss):
            reason = "callback"
        return distributed.broadcast(reason, self.info)

    def _loop(self) -> str:
        tc, s = self.tc, self.state
        loader, per_epoch = self.data.loader(tc, s, self.info, self.device)
        batches = iter(loader)
        while s.epoch < tc.epochs:
            self._objective_for_epoch()
            lr = lr_at(tc, s.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            reason = self._epoch(batches, per_epoch)
            if s.batch >= per_epoch:
                s.epoch += 1
                s.batch = 0
                if s.epoch >= tc.epochs and reason is None:
                    reason = "epochs"
                reason = self._epoch_end(reason) or reason
            if reason:
                return self._stop(reason)
        return self._stop("epochs")

    def _epoch(self, batches: Iterator[tuple[Tensor, Tensor]], per_epoch: int) -> str | None:
        """Step through the rest of the epoch; returns the reason to stop when one comes up before its end."""
        tc, s = self.tc, self.state
        bar = tqdm(
            total=per_epoch,
            initial=s.batch,
            desc=f"epoch {s.epoch + 1}/{tc.epochs}",
            unit="batch",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        epoch_bpd, epoch_steps, epoch_images, epoch_start = 0.0, 0, 0, time.monotonic()
        reason = None
        tick = time.monotonic()
        while s.batch < per_epoch and reason is None:
            x, labels = next(batches)
            self.step_fn.disc_scale = tc.disc_ramp(s.epoch, s.batch, per_epoch)
            loss = self.step_fn(x, labels)
            if self._tally(loss):
                epoch_bpd += self.step_fn.bits_per_dim
                epoch_steps += 1
            now = time.monotonic()
            s.window_seconds += now - tick
            tick = now
            s.window_images += tc.batch_size
            epoch_images += tc.batch_size
            bar.update(1)
            bar.set_postfix(
                bpd=f"{epoch_bpd / max(epoch_steps, 1):.4f}",
                img_s=f"{epoch_images / max(now - epoch_start, 1e-9):.1f}",
            )
            reason = self._stop_reason(loss)
        bar.close()
        return reason

    def _tally(self, loss: float) -> bool:
        """Count a batch: a skipped update (False), or a step (True) whose loss joins the log and window."""
        s = self.state
        s.batch += 1
        if self.step_fn.skipped:
            self._non_finite(loss)
            return False
        s.consecutive_bad = 0
        s.step += 1
        if self.record is not None:
            self.record.log_loss(s.step, loss)
        s.window_loss += loss
        s.window_bpd += self.step_fn.bits_per_dim
        s.window_steps += 1
        return True

    def _non_finite(self, loss: float) -> None:
        s = self.state
        s.skipped += 1
        s.consecutive_bad += 1
        _say(
            f"step {s.step + 1}: non-finite loss or gradient (loss {loss}); update skipped "
            f"({s.consecutive_bad} in a row)",
            self.info,
        )
        if s.consecutive_bad > self.tc.max_nonfinite_steps:
            last = self.record_last if self.record_last.is_file() else None
            kept = f"the last good checkpoint {last} is intact" if last else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"{s.consecutive_bad} consecutive steps had a non-finite loss or gradient (limit "
                f"max_nonfinite_steps={self.tc.max_nonfinite_steps}); stopping: {kept}. Try a lower lr, "
                f"grad_clip, or precision=fp32."
            )

    def _epoch_end(self, reason: str | None) -> str | None:
        """Evaluation, samples and checkpoints after an epoch; returns "early_stop" when that triggers."""
        tc, s = self.tc, self.state
        final = reason in FINAL_REASONS
        evaluate_now = final or (tc.eval_every > 0 and s.epoch % tc.eval_every == 0)
        early = None
        if evaluate_now:
            early = self._evaluate_and_select()
        if self.review is not None and tc.sample_every > 0 and s.epoch % tc.sample_every == 0:
            self.review.sample_grid(self._eval_model(), s.epoch)
        if self.record is not None and tc.checkpoint_every > 0 and s.epoch % tc.checkpoint_every == 0:
            save_checkpoint(self.record.epoch_checkpoint(s.epoch), self._checkpoint_state(full=False))
        due = distributed.broadcast(
            time.monotonic() - self.last_save >= tc.last_checkpoint_minutes * 60, self.info
        )
        if not (final or early or reason) and (evaluate_now or due):
            self._save_last()
        return early

    def _stop(self, reason: str) -> str:
        s = self.state
        if reason in FINAL_REASONS and self.evaluated_at != s.step:
            self._evaluate_and_select()
        s.stop_reason = reason
        self._save_last()
        done = "finished" if reason in FINAL_REASONS else "stopped (resume with --resume)"
        _say(
            f"{done}: {reason} at epoch {s.epoch}, step {s.step}; last checkpoint {self.record_last}",
            self.info,
        )
        return reason

    # -- evaluation, selection, samples (the main process's part is `Review`)
    def _eval_model(self) -> nn.Module:
        """The weights that evaluation and sampling use: the EMA when Polyak averaging is on."""
        return self.ema.module if self.ema is not None else self.model

    def _evaluate_and_select(self) -> str | None:
        """Evaluate on rank 0, log a metrics line, update `best`; all ranks learn whether to stop early."""
        s = self.state
        early = None
        if self.review is not None:
            run = {
                "lr": self.optimizer.param_groups[0]["lr"],
                "disc_weight": self.step_fn.config.disc_weight * self.step_fn.disc_scale,
                "wall_time_s": self._elapsed(),
                "weights": "ema" if self.ema is not None else "raw",
            }
            line = self.review.measure(self._eval_model(), s, run)
            self.metrics.append(line)
            self.record.log_metrics(line)
            early = self.review.select(line, s, lambda: self._checkpoint_state(full=False))
            summary = ", ".join(
                f"{k} {line[k]:.4f}"
                for k in ("train_bits_per_dim", "val_bits_per_dim", "val_accuracy")
                if line.get(k) is not None
            )
            _say(f"epoch {line['epoch']} step {s.step}: {summary}", self.info)
        s.window_loss = s.window_bpd = s.window_seconds = 0.0
        s.window_steps = s.window_images = 0
        self.evaluated_at = s.step
        early = distributed.broadcast(early, self.info)
        s.evals_since_best = distributed.broadcast(s.evals_since_best, self.info)
        return early


def train(
    config: RunConfig,
    *,
    data_dir: str | Path | None = None,
    run_dir: str | Path,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    on_step: Callable[[int, float], bool | None] | None = None,
) -> TrainResult:
    """Train (or resume) a run described by `config`, writing everything to `run_dir`.

    `max_minutes` limits this session's wall time (the run stays resumable); `config.train.max_minutes`
    is the budget of the whole run. `on_step(step, loss)` is called after every batch; returning True
    stops the run cleanly with a checkpoint, like the budget does. Under torchrun every process calls
    this; rank 0 evaluates and writes the run folder. Raises NonFiniteLossError when the loss diverges.
    """
    device = resolve_device(str(device) if device is not None else config.train.device)
    started = not torch.distributed.is_initialized()
    info = distributed.setup(device.type)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    trainer = _Trainer(
        config,
        data_dir=data_dir,
        run_dir=run_dir,
        resume=resume,
        max_minutes=max_minutes,
        progress=progress,
        device=device,
        info=info,
        on_step=on_step,
    )
    try:
        if config.train.tensorboard and info.is_main:
            trainer.tensorboard = _tensorboard_writer(Path(run_dir), info)
        return trainer.run(data_dir)
    finally:
        if trainer.tensorboard is not None:
            trainer.tensorboard.close()
        if started:
            # The DistributedDataParallel wrapper holds the process group, and the trainer's reference cycles
            # keep it alive until the collector runs, which may be at interpreter exit, where gloo's threads
            # abort the process (SIGABRT, "terminate called without an active exception"). Free it first.
            del trainer
            gc.collect()
            distributed.teardown(info)


def _tensorboard_writer(run_dir: Path, info: DistInfo) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _say(
            "tensorboard=true but the tensorboard package is not installed; skipping TensorBoard events", info
        )
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
