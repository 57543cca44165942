"""The training engine: `pcnn train`, `pcnn finetune` and `train(config)` for notebooks.

The loss is the mean negative log-likelihood of the batch in **bits per dimension** (nats per image divided
by 3*H*W*ln 2), so the number in the logs is directly the bits/dim; with the hybrid objective
(`disc_weight` > 0) the cross-entropy of the Bayes posterior (nats per image) on the first
`disc_fraction` of the batch is added, weighted by `disc_weight` (its class log-likelihoods divided by
`disc_temperature`), from epoch `disc_start_epoch` on (likelihood first).

Exact resume: a run's randomness is the model initialisation and dropout (torch's global generator,
seeded from `seed`) and the data order and augmentation (pure functions of seed, epoch and position, see
`pcnn.train_data`). A checkpoint holds the model, optimiser, EMA, the random states of torch, numpy and
Python, and the position in the epoch, so on the CPU a resumed run repeats the losses of an uninterrupted
one bit for bit. The learning rate is a pure function of the epoch (`lr_at`), so the schedule needs no
state of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pcnn import distributed
from pcnn.checkpoint import load_checkpoint, model_state, save_checkpoint
from pcnn.classify import posterior
from pcnn.config import ModelConfig, RunConfig, TrainConfig
from pcnn.core_parallel import CoreParallel, helps_on_this_cpu, scored_count
from pcnn.data import (
    CLASS_NAMES,
    CPEN455Dataset,
    eval_transform,
    evenly_spaced_indices,
    resolve_data_dir,
    train_transform,
)
from pcnn.device import keep_freed_memory, resolve_device
from pcnn.distributed import DistInfo
from pcnn.ema import EMA
from pcnn.evaluate import score_split
from pcnn.fastpath import FastForward
from pcnn.likelihood import bits_per_dim_scale, dmol_nll, dmol_nll_fused
from pcnn.model import build_model, check_labels, unwrap
from pcnn.precision import choose_precision
from pcnn.runrecord import RunRecord, provenance, read_metrics
from pcnn.sample import sample, sample_grid_figure
from pcnn.train_data import (
    AugmentedView,
    BatchKeys,
    IndexedSplit,
    focus_weights,
    holdout_split,
    parse_classes,
    passthrough,
    subset_indices,
)

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


# ------------------------------------------------------------------------------------- device policy
def resolve_precision(train_config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training step (None: plain float32); the likelihood is always float32.
    `pcnn.precision` says how `auto` chooses, from the hardware's native arithmetic."""
    return choose_precision(train_config.precision, device).dtype


def describe_precision(train_config: TrainConfig, device: torch.device) -> str:
    """One line for a person: the precision the step will use on `device` and why (e.g. in a notebook)."""
    return choose_precision(train_config.precision, device).describe()


# On the 2-core CPU compiling costs 1.5-3.5 minutes and then saves 12-17% of every step: it repays itself
# after about 17 minutes or 1000 steps, so `auto` compiles CPU runs whose budget is at least this long.
_CPU_COMPILE_MIN_STEPS = 1000
_CPU_COMPILE_MIN_MINUTES = 20.0


def resolve_compile(train_config: TrainConfig, device: torch.device) -> bool:
    """Whether to torch.compile the step's forward and loss.

    `auto` compiles on CUDA, and on the CPU only a run whose budget says it is long enough to repay the
    minutes of compiling (`benchmarks/train_step.py --compile on`): a step budget of at least 1000 steps,
    or, without one, a wall-clock budget of at least 20 minutes. A run without a budget (tests, a quick
    look in a notebook) is not compiled on the CPU; `on` forces it.
    """
    tc = train_config
    if tc.compile != "auto":
        return tc.compile == "on"
    if device.type == "cuda":
        return True
    if tc.max_steps:
        return tc.max_steps >= _CPU_COMPILE_MIN_STEPS
    return tc.max_minutes >= _CPU_COMPILE_MIN_MINUTES


def resolve_processes(
    train_config: TrainConfig, device: torch.device, compiled: bool, dist_info: DistInfo
) -> int:
    """Processes sharing each CPU step (`pcnn.core_parallel`): `cpu_processes` if set (> 0); auto (0) uses
    two on a CPU with at least two intra-op threads when the step is compiled, i.e. in a run long enough
    to repay the helper's start and compile (a minute), and where a second process was measured to help
    (`core_parallel.helps_on_this_cpu`); one under torchrun or on a GPU."""
    tc = train_config
    if device.type != "cpu" or dist_info.enabled or tc.batch_size < 2:
        return 1
    if tc.cpu_processes > 0:
        return min(tc.cpu_processes, tc.batch_size)
    return 2 if compiled and torch.get_num_threads() >= 2 and helps_on_this_cpu() else 1


def training_module(model: nn.Module, train_config: TrainConfig) -> nn.Module:
    """What the step calls for the forward pass: `FastForward` around the model (fast path), or the model.

    Channels-last activations (`auto`: on) suit tensor-core convolutions, and with torch 2.14 oneDNN's
    CPU convolutions too: the 2-core CPU's step ran 3-5% faster than in NCHW at both benchmark settings.
    """
    inner = unwrap(model)
    if train_config.fast_path == "off":
        return inner
    return FastForward(inner, channels_last=train_config.channels_last != "off")


def resolve_workers(train_config: TrainConfig, device: torch.device) -> int:
    """DataLoader worker processes: `num_workers` if set (>= 0); auto (-1) is 0 on a CPU, whose cores are
    busy training, and up to 8 on a GPU machine, so that augmentation keeps up with the GPU."""
    if train_config.num_workers >= 0:
        return train_config.num_workers
    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def lr_at(train_config: TrainConfig, epoch: int) -> float:
    """Learning rate of the epoch with 0-based index `epoch` (epoch `epoch + 1` in the logs)."""
    tc = train_config
    if tc.lr_switch_epoch and epoch >= tc.lr_switch_epoch:
        return tc.lr_after_switch * tc.lr_decay_after_switch ** (epoch - tc.lr_switch_epoch)
    return tc.lr * tc.lr_decay**epoch


def build_optimizer(model: nn.Module, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the model's parameters (the fused kernel where torch has one for the device)."""
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    device = params[0].device
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, lr=train_config.lr, fused=fused)


# ------------------------------------------------------------------------------------------- the step
class TrainStep:
    """One optimiser step: forward, loss, backward, non-finite guard, clipping, Adam, EMA.

    Call it with a batch `(x, labels)`; it returns the loss (averaged over processes under torchrun).
    On a CPU it may share each batch with helper processes (`resolve_processes`, `pcnn.core_parallel`),
    started at the first call; `optimizer=None` builds a step that only computes gradients. After a
    call, `skipped` says whether the update was skipped because the loss or the gradient was not finite
    (the parameters are then untouched) and `bits_per_dim` holds the NLL part of the loss.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        train_config: TrainConfig,
        *,
        ema: EMA | None = None,
        dist_info: DistInfo | None = None,
        compiled: bool | None = None,
    ) -> None:
        # A DistributedDataParallel model already wraps its training module (see `training_module`).
        wrapped = isinstance(model, nn.parallel.DistributedDataParallel)
        self.model = model if wrapped else training_module(model, train_config)
        self.inner = unwrap(model)
        fast = isinstance(unwrap(self.model, keep=FastForward), FastForward)  # DDP may wrap the FastForward
        self.nll = dmol_nll_fused if fast else dmol_nll
        self.optimizer = optimizer
        self.config = train_config
        self.ema = ema
        self.dist = dist_info or DistInfo()
        self.device = next(self.inner.parameters()).device
        self.precision = choose_precision(train_config.precision, self.device)
        self.autocast_dtype = self.precision.dtype
        # fp16 gradients underflow without loss scaling (the scaler is checkpointed with the optimiser)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision.scales_loss else None
        if self.device.type == "cpu":
            keep_freed_memory()  # the step's activations stay in the heap, not faulted in anew each step
        if optimizer is None:  # gradients only (a helper of `pcnn.core_parallel`)
            self.params = [p for p in self.inner.parameters() if p.requires_grad]
        else:
            self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.conditional = self.inner.config.conditioning != "none"
        if train_config.disc_weight > 0 and not self.conditional:
            raise ValueError("the hybrid objective (disc_weight > 0) needs a conditional model")
        compiled = resolve_compile(train_config, self.device) if compiled is None else compiled
        self.objective = torch.compile(self._objective) if compiled else self._objective
        processes = resolve_processes(train_config, self.device, compiled, self.dist)
        if self.scaler is not None:
            processes = 1  # the helpers' parts would need the scaler's factor; fp16 is for GPUs anyway
        self.processes = processes
        self.cores = None
        if processes > 1:
            self.cores = CoreParallel(
                self.inner,
                self.params,
                functools.partial(_helper_part, train_config=train_config, compiled=compiled),
                processes,
                threads=max(1, torch.get_num_threads() // processes),
                disc_fraction=train_config.disc_fraction if train_config.disc_weight > 0 else None,
                batch_size=train_config.batch_size,
            )
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        self.skipped = False
        self.bits_per_dim = math.nan

    def _objective(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, NLL in bits/dim) of the batch; the hybrid term shares the forward pass."""
        scale = bits_per_dim_scale(x.shape[-1])
        weight = self.config.disc_weight
        if weight <= 0:
            bpd = self.nll(x, self.model(x, labels)).mean() * scale
            return bpd, bpd
        b, k = x.shape[0], self.inner.config.num_classes
        nd = scored_count(b, self.config.disc_fraction)
        # The first nd images are scored under every class, the rest under their own label only.
        x_all = torch.cat([x[:nd].repeat_interleave(k, dim=0), x[nd:]])
        labels_all = torch.cat([torch.arange(k, device=x.device).repeat(nd), labels[nd:]])
        nll = self.nll(x_all, self.model(x_all, labels_all))
        class_ll = -nll[: nd * k].view(nd, k)
        own = torch.cat([-class_ll.gather(1, labels[:nd, None]).squeeze(1), nll[nd * k :]])
        bpd = own.mean() * scale
        cross_entropy = F.nll_loss(posterior(class_ll / self.config.disc_temperature), labels[:nd])
        return bpd + weight * cross_entropy, bpd

    @property
    def compiled(self) -> bool:
        """Whether the step runs the compiled objective (False again after a compiler failure)."""
        return self.objective != self._objective

    def _run_objective(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The objective, compiled when asked; a compiler that fails (no C++ toolchain, an unsupported
        backend) fails at the first call, and then the step says so and continues eagerly."""
        try:
            return self.objective(x, labels)
        except Exception as error:  # noqa: BLE001 - any compiler failure; a real bug re-raises eagerly
            if not self.compiled:
                raise
            print(
                f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]});"
                " training without it",
                file=sys.stderr,
            )
            self.objective = self._objective
            return self.objective(x, labels)

    def part_backward(
        self, x: Tensor, labels: Tensor, bpd_weight: float = 1.0, ce_weight: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Backward of a batch part's share of the batch's loss: its bits/dim weighted by `bpd_weight` and
        its cross-entropy by `ce_weight` (both 1 for a whole batch). Returns (the share, the part's own
        bits/dim), detached; the gradient accumulates in the parameters' `.grad`."""
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            loss, bpd = self._run_objective(x, labels)
        if (bpd_weight, ce_weight) != (1.0, 1.0):
            loss = bpd_weight * bpd + ce_weight * (loss - bpd)  # loss - bpd: the weighted cross-entropy
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return loss.detach(), bpd.detach()

    def close(self) -> None:
        """Stop the step's helper processes (a new step replaces this one)."""
        if self.cores is not None:
            self.cores.close()

    @property
    def helper_pids(self) -> list[int]:
        """Process ids of the helpers that share the step's work (`pcnn.core_parallel`), once started."""
        return self.cores.pids if self.cores is not None else []

    def __call__(self, x: Tensor, labels: Tensor) -> float:
        if self.optimizer is None:
            raise TypeError("this step was built without an optimiser: it only computes gradients")
        if self.conditional and (self.compiled or self.cores is not None):
            # the compiled model skips its own check (a graph break), and a helper should not fail alone
            check_labels(labels, self.inner.config.num_classes)  # before the copy: no device sync
        x = x.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        if self.cores is None:
            loss, bpd = self.part_backward(x, labels)
        else:
            loss, bpd = self.cores.backward(x, labels, self.part_backward)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # the norm, the clipping and the guard see true gradients
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)  # equal on every process: gradients are averaged
        summary = torch.stack([loss.detach().float(), bpd.detach().float(), norm.float()])
        loss_value, bpd_value, norm_value = distributed.mean_across(summary, self.dist).tolist()  # one sync
        self.bits_per_dim = bpd_value
        self.skipped = not (math.isfinite(loss_value) and math.isfinite(norm_value))
        if self.skipped:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()  # an overflow lowers the loss scale; no step is taken
            return loss_value
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.config.grad_clip, norm)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.inner)
        return loss_value


def _helper_part(model: nn.Module, train_config: TrainConfig, compiled: bool) -> Callable[..., Any]:
    """In a helper process of `pcnn.core_parallel`: the part-gradient function of a gradient-only step
    over the helper's copy of the model (which shares the main process's parameters)."""
    config = dataclasses.replace(train_config, cpu_processes=1)
    return TrainStep(model.train(), None, config, compiled=compiled).part_backward


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_config: TrainConfig,
    *,
    ema: EMA | None = None,
    dist_info: DistInfo | None = None,
) -> TrainStep:
    """The training step `pcnn train` runs with this config: `step(x, labels) -> float` (the loss).

    It trains the given model's parameters with the given optimiser, with the config's precision,
    compilation, objective and CPU processes, so benchmarks and notebooks time and run exactly what the
    trainer does.
    """
    return TrainStep(model, optimizer, train_config, ema=ema, dist_info=dist_info)


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 64,
    subset: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> dict[str, float | None]:
    """Bits/dim under the true label, Bayes accuracy and macro F1 (None for the unconditional model).

    `model` is a PixelCNNPP or a FastForward around one (the same function, faster on a CPU).
    """
    if model.config.conditioning != "none":
        metrics = score_split(
            model, dataset, batch_size=batch_size, subset=subset, device=device, progress=progress
        ).metrics()
        return {
            "bits_per_dim": metrics["bits_per_dim"],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
        }
    indices = evenly_spaced_indices(len(dataset), subset)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(indices), batch_size):
        x = torch.stack([dataset[i][0] for i in indices[start : start + batch_size]]).to(device)
        total += float(dmol_nll(x, model(x, None)).double().sum())
        count += x.shape[0]
    model.train(was_training)
    return {
        "bits_per_dim": total / max(count, 1) * bits_per_dim_scale(model.config.image_size),
        "accuracy": None,
        "macro_f1": None,
    }


# ------------------------------------------------------------------------------------- random states
def capture_rng() -> dict[str, Any]:
    """The global random states of torch (CPU and CUDA), numpy and Python, in checkpoint-safe types."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(words), gauss_next],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, words, gauss_next = state["python"]
    random.setstate((version, tuple(words), gauss_next))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- trainer
@dataclass
class _Progress:
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


def _say(message: str, info: DistInfo) -> None:
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
        self.state = _Progress()
        self.last_save = time.monotonic()
        self.session_start = time.monotonic()
        self.init_ema: dict[str, Tensor] | None = None
        self.tensorboard: Any = None
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
        """Rebuild the step where the objective changes (`disc_start_epoch`); a resumed run starts with
        the objective of its epoch."""
        wanted = self.tc.objective_at(self.state.epoch)
        if wanted.disc_weight == self.step_fn.config.disc_weight:
            return
        self.step_fn.close()
        self.step_fn = self._make_step(wanted)
        _say(
            f"epoch {self.state.epoch + 1}: the hybrid term joins the likelihood (disc_weight "
            f"{wanted.disc_weight:g})",
            self.info,
        )

    def _load_init_weights(self, path: Path) -> None:
        state = load_checkpoint(path)
        if ModelConfig(**state["model_config"]) != self.mc:
            raise ValueError(
                f"{path}: its model config differs from this run's; fine-tune with the same model"
            )
        self.model.load_state_dict(state["model"])
        self.init_ema = state.get("ema")
        _say(f"initialised from {path}", self.info)

    def _data(self, data_dir: str | Path | None) -> None:
        tc, size = self.tc, self.mc.image_size
        root = resolve_data_dir(data_dir)
        base = CPEN455Dataset(root, "train", transform=passthrough, image_size=size, cache=True)
        chosen = subset_indices(base.labels, tc.max_train_images, tc.seed)
        keep, held = holdout_split([base.labels[i] for i in chosen], tc.holdout_fraction, tc.seed)
        self.train_indices = chosen[keep]
        if len(self.train_indices) < tc.batch_size:
            raise ValueError(
                f"{len(self.train_indices)} training images cannot fill a batch of {tc.batch_size}"
            )
        self.train_view = AugmentedView(
            base, train_transform(size, augment=tc.augment, finetune=tc.finetune_augment)
        )
        labels = [base.labels[i] for i in self.train_indices]
        classes = parse_classes(tc.focus_classes, self.mc.num_classes)
        self.weights = focus_weights(labels, classes, tc.focus_share) if classes else None
        self.holdout = None
        self.validation = None
        if self.info.is_main:
            if len(held):
                self.holdout = IndexedSplit(base, chosen[held], eval_transform(size), "holdout")
            self.validation = CPEN455Dataset(root, "validation", image_size=size, cache=True)
        self.data_root = root

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
        self.state = _Progress(**state["progress"])
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
                        "data_dir": str(self.data_root),
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

    def _loader(self) -> DataLoader:
        """One loader for the whole session, starting at the resumed position."""
        tc, s = self.tc, self.state
        self.keys = BatchKeys(
            self.train_indices,
            batch_size=tc.batch_size,
            seed=tc.seed,
            epochs=tc.epochs,
            start_epoch=s.epoch,
            start_batch=s.batch,
            weights=self.weights,
            rank=self.info.rank,
            world_size=self.info.world_size,
        )
        workers = resolve_workers(tc, self.device)
        return DataLoader(
            self.train_view,
            batch_sampler=self.keys,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(tc.seed),
        )

    def _loop(self) -> str:
        tc, s = self.tc, self.state
        batches = iter(self._loader())
        per_epoch = self.keys.batches_per_epoch
        while s.epoch < tc.epochs:
            self._objective_for_epoch()
            lr = lr_at(tc, s.epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
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
                loss = self.step_fn(x, labels)
                s.batch += 1
                if self.step_fn.skipped:
                    self._non_finite(loss)
                else:
                    s.consecutive_bad = 0
                    s.step += 1
                    if self.record is not None:
                        self.record.log_loss(s.step, loss)
                    s.window_loss += loss
                    s.window_bpd += self.step_fn.bits_per_dim
                    s.window_steps += 1
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
            if s.batch >= per_epoch:
                s.epoch += 1
                s.batch = 0
                if s.epoch >= tc.epochs and reason is None:
                    reason = "epochs"
                reason = self._epoch_end(reason) or reason
            if reason:
                return self._stop(reason)
        return self._stop("epochs")

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
        if tc.sample_every > 0 and s.epoch % tc.sample_every == 0:
            self._sample_grid()
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

    # -- evaluation, selection, samples
    def _eval_model(self) -> nn.Module:
        """The weights that evaluation and sampling use: the EMA when Polyak averaging is on."""
        return self.ema.module if self.ema is not None else self.model

    def _evaluate_and_select(self) -> str | None:
        """Evaluate on rank 0, log a metrics line, update `best`; all ranks learn whether to stop early."""
        s = self.state
        early = None
        if self.info.is_main:
            with torch.random.fork_rng(devices=self._rng_devices()):
                line = self._metrics_line()
            self.metrics.append(line)
            self.record.log_metrics(line)
            early = self._select(line)
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

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _metrics_line(self) -> dict[str, Any]:
        tc, s = self.tc, self.state
        weights = self._eval_model()
        # the fast forward computes the same function faster; it starts in the weights' own mode
        model = training_module(weights, tc).train(weights.training)
        kwargs = {"batch_size": tc.eval_batch_size, "device": self.device, "progress": self.progress}
        val = evaluate(model, self.validation, subset=tc.eval_subset, **kwargs)
        line: dict[str, Any] = {
            "epoch": s.epoch,
            "step": s.step,
            "train_loss": s.window_loss / s.window_steps if s.window_steps else None,
            "train_bits_per_dim": s.window_bpd / s.window_steps if s.window_steps else None,
            "val_bits_per_dim": val["bits_per_dim"],
            "val_accuracy": val["accuracy"],
            "val_f1": val["macro_f1"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "disc_weight": self.step_fn.config.disc_weight,
            "images_per_s": s.window_images / s.window_seconds if s.window_seconds else None,
            "wall_time_s": self._elapsed(),
            "skipped_steps": s.skipped,
            "weights": "ema" if self.ema is not None else "raw",
            "val_images": len(self.validation)
            if not tc.eval_subset
            else min(tc.eval_subset, len(self.validation)),
        }
        if self.holdout is not None:
            held = evaluate(model, self.holdout, **kwargs)
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

    def _select(self, line: dict[str, Any]) -> str | None:
        """Keep `best.pt` (by holdout accuracy if there is a holdout, else validation accuracy; by bits/dim
        for the unconditional model) and count evaluations without improvement for early stopping."""
        s, tc = self.state, self.tc
        prefix = "holdout" if self.holdout is not None else "val"
        accuracy = line.get(f"{prefix}_accuracy")
        value = accuracy if accuracy is not None else -line[f"{prefix}_bits_per_dim"]
        if s.best_value is None or value > s.best_value:
            s.best_value, s.best_epoch, s.evals_since_best = value, s.epoch, 0
            state = self._checkpoint_state(full=False)
            state["selected_on"] = f"{prefix}_{'accuracy' if accuracy is not None else 'bits_per_dim'}"
            save_checkpoint(self.record.best, state)
        else:
            s.evals_since_best += 1
        if tc.early_stop_patience and s.evals_since_best >= tc.early_stop_patience:
            _say(
                f"early stop: no improvement on {prefix} in {s.evals_since_best} evaluations "
                f"(best at epoch {s.best_epoch})",
                self.info,
            )
            return "early_stop"
        return None

    def _sample_grid(self) -> None:
        if not self.info.is_main:
            return
        tc, k = self.tc, self.mc.num_classes
        labels = torch.arange(k).repeat_interleave(tc.sample_per_class)
        generator = torch.Generator(device=self.device).manual_seed(tc.seed)
        with torch.random.fork_rng(devices=self._rng_devices()):
            conditional = self.mc.conditioning != "none"
            images = sample(
                self._eval_model(),
                labels if conditional else None,
                generator=generator,
                image_size=self.mc.image_size,
                batch_size=len(labels),
            )
        shown = labels if conditional else torch.zeros_like(labels)
        sample_grid_figure(images, shown, CLASS_NAMES, self.record.sample_grid(self.state.epoch))


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
