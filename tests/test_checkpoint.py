"""Checkpoints: an exact round trip, atomic writes, and refusal of pickles that would run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.checkpoint import CheckpointError, load_checkpoint, model_state, save_checkpoint
from tests.conftest import grid_images, tiny_model


def _save(model, path: Path, **extra) -> Path:
    from dataclasses import asdict

    return save_checkpoint(path, {"model_config": asdict(model.config), "model": model_state(model), **extra})


def test_round_trip_identical_outputs(tmp_path: Path) -> None:
    model = tiny_model("film")
    path = _save(model, tmp_path / "ckpt.pt", step=7)
    loaded = pcnn.load_model(path)
    x, y = grid_images(2, 8), torch.tensor([1, 2])
    assert torch.equal(loaded(x, y), model(x, y))
    assert not loaded.training
    assert load_checkpoint(path)["step"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_ema_weights_preferred(tmp_path: Path) -> None:
    model = tiny_model()
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model_state(model).items()}
    path = _save(model, tmp_path / "c.pt", ema=ema)
    auto, raw = pcnn.load_model(path), pcnn.load_model(path, weights="raw")
    assert torch.equal(auto.out.bias, ema["out.bias"])
    assert torch.equal(raw.out.bias, model.out.bias)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "pcnn-checkpoint-v1", "model_config": {}, "model": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        pcnn.load_model(path)
    assert not marker.exists()


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a pcnn"):
        load_checkpoint(tmp_path / "other.pt")


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    model = tiny_model()

    def _unpicklable() -> None: ...

    path = _save(model, tmp_path / "c.pt")
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # unpicklable: a local function
        save_checkpoint(path, {"model_config": {}, "model": model_state(model), "bad": _unpicklable})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
