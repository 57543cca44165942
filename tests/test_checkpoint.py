"""Checkpoints: an exact round trip, atomic writes, and refusal of pickles that would run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import pcnn
from pcnn.training.checkpoint import CheckpointError, load_checkpoint, model_state, save_checkpoint
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


def test_export_keeps_one_set_of_weights_and_a_verified_sha256(tmp_path: Path) -> None:
    from pcnn.reporting.export import export_checkpoint, verify_export

    model = tiny_model()
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model_state(model).items()}
    run = tmp_path / "run"
    _save(
        model,
        run / "checkpoints" / "best.pt",
        ema=ema,
        optimizer={"big": torch.zeros(1000)},
        metrics={"val_accuracy": 0.5},
        step=3,
    )
    out = tmp_path / "ref" / "reference.pt"
    sidecar = export_checkpoint(run, out, extra={"command": "pcnn train ..."})
    assert sidecar["weights"] == "ema" and sidecar["metrics"] == {"val_accuracy": 0.5}
    assert sidecar["command"] == "pcnn train ..." and sidecar["step"] == 3
    state = load_checkpoint(out)
    assert "optimizer" not in state and state["ema"] is None
    assert torch.equal(pcnn.load_model(out).out.bias, ema["out.bias"])
    assert verify_export(out)["sha256"] == sidecar["sha256"]
    raw = export_checkpoint(run, tmp_path / "raw.pt", weights="raw")
    assert raw["weights"] == "raw" and torch.equal(
        pcnn.load_model(tmp_path / "raw.pt").out.bias, model.out.bias
    )
    with open(out, "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(CheckpointError, match="sha256"):
        verify_export(out)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "x.pt")


def test_committed_checkpoints_match_their_sha256() -> None:
    """checkpoints/reference.pt (the reference build) and any earlier reference kept beside it."""
    from pcnn.reporting.export import verify_export

    folder = Path(__file__).resolve().parents[1] / "checkpoints"
    if not (folder / "reference.pt").is_file():
        pytest.skip("no committed checkpoints/reference.pt in this clone")
    for path in sorted(folder.glob("*.pt")):
        sidecar = verify_export(path)
        assert sidecar["file"] == path.name
        # float32 weights as trained (the likelihoods stay exact): 6.06M parameters of the `deep` build
        assert sidecar["bytes"] <= 32 * 1024 * 1024, f"{path.name}: a committed checkpoint stays under 32 MB"
        model = pcnn.load_model(path)
        assert model.config.conditioning != "none"
