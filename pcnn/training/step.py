"""The training step: forward, loss (likelihood, optionally hybrid), backward, guard, clipping, Adam, EMA."""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcnn.config import TrainConfig
from pcnn.core.classify import posterior
from pcnn.core.likelihood import bits_per_dim_scale, dmol_nll, dmol_nll_fused
from pcnn.core.model import check_labels, unwrap
from pcnn.fast.core_parallel import CoreParallel, scored_count
from pcnn.fast.fastpath import FastForward
from pcnn.fast.precision import choose_precision
from pcnn.training import distributed
from pcnn.training.device import keep_freed_memory
from pcnn.training.distributed import DistInfo
from pcnn.training.ema import EMA
from pcnn.training.policy import resolve_compile, resolve_processes, training_module


class TrainStep:
    """One optimiser step: forward, loss, backward, non-finite guard, clipping, Adam, EMA.

    Call it with a batch `(x, labels)`; it returns the loss (averaged over processes under torchrun).
    On a CPU it may share each batch with helper processes (`resolve_processes`, `pcnn.fast.core_parallel`),
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
        if optimizer is None:  # gradients only (a helper of `pcnn.fast.core_parallel`)
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
        # The share of the hybrid term's weight this step trains with (`TrainConfig.disc_ramp`, set by the
        # trainer each step); applied outside the compiled objective, so a changing share recompiles nothing.
        self.disc_scale = 1.0

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
        """Process ids of the helpers that share the step's work (`pcnn.fast.core_parallel`), once started."""
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
            loss, bpd = self.part_backward(x, labels, 1.0, self.disc_scale)
        else:
            loss, bpd = self.cores.backward(x, labels, self.part_backward, ce_scale=self.disc_scale)
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
    """In a helper process of `pcnn.fast.core_parallel`: the part-gradient function of a gradient-only step
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
