"""Checkpoints: one file with the config, the weights and the training state, written atomically.

Files are read with `torch.load(..., weights_only=True)`, so a crafted pickle cannot run code; everything
stored is therefore tensors, numbers, strings, lists and dicts (numpy RNG state is converted to lists).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pcnn.config import ModelConfig
from pcnn.core.model import PixelCNNPP, build_model, unwrap

FORMAT = "pcnn-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not one of ours."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (must hold `model_config` and `model`) to `path` atomically: temp file, fsync, rename."""
    path = Path(path)
    if "model_config" not in state or "model" not in state:
        raise ValueError("a checkpoint needs at least 'model_config' and 'model'")
    return save_atomic(path, {"format": FORMAT, **state})


def save_atomic(path: str | Path, payload: dict[str, Any]) -> Path:
    """`torch.save` to `path` so that a crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) and check that it is a pcnn checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and RuntimeError variants
        raise CheckpointError(f"refusing to load {path}: not a safe pcnn checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    return state


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a model, unwrapped from torch.compile / DistributedDataParallel wrappers."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def trained_position(state: dict[str, Any]) -> dict[str, Any]:
    """The epoch and step at which a checkpoint (`load_checkpoint`'s state) was written: what a measurement
    of it names, since a run folder's last line may be later than the checkpoint measured."""
    return {"epoch": state.get("epoch"), "step": state.get("step")}


def load_model(path: str | Path, device: str | torch.device = "cpu", weights: str = "auto") -> PixelCNNPP:
    """Rebuild the model from a checkpoint file alone, in eval mode.

    `weights`: "auto" uses the Polyak-averaged (EMA) weights when the checkpoint has them, "ema" requires
    them, "raw" uses the trained weights.
    """
    return model_from_state(load_checkpoint(path), device, weights, source=path)


def model_from_state(
    state: dict[str, Any], device: str | torch.device = "cpu", weights: str = "auto", source: str | Path = ""
) -> PixelCNNPP:
    """`load_model` of a state already read (`source`: where it came from, for the error message)."""
    model = build_model(ModelConfig(**state["model_config"]))
    if weights not in ("auto", "ema", "raw"):
        raise ValueError(f"weights must be auto, ema or raw, got {weights!r}")
    ema = state.get("ema")
    if weights == "ema" and ema is None:
        raise CheckpointError(f"{source} has no EMA weights")
    chosen = ema if (ema is not None and weights != "raw") else state["model"]
    model.load_state_dict(chosen)
    return model.to(device).eval()
