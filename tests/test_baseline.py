"""The discriminative baseline trains on the synthetic set, reports what it should and beats chance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pcnn.datasets import make_synthetic
from pcnn.evaluation import baseline
from pcnn.evaluation.baseline import BaselineCNN, baseline_predict, cached_baseline, train_baseline


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline") / "data"
    return make_synthetic(root, seed=0, counts={"train": 8, "validation": 4, "test": 2})


@pytest.mark.parametrize("image_size, stages", [(16, 2), (32, 3)])
def test_model_shapes(image_size: int, stages: int) -> None:
    model = BaselineCNN(num_classes=4, width=8, image_size=image_size)
    assert len(model.features) == stages
    x = torch.rand(5, 3, image_size, image_size) * 2 - 1
    assert model(x).shape == (5, 4)
    model.train()
    predictions = baseline_predict(model, x)
    assert predictions.shape == (5,) and predictions.dtype == torch.long
    assert model.training  # prediction leaves the mode as it was


def test_train_outputs(synthetic_root: Path) -> None:
    model, info = train_baseline(synthetic_root, epochs=2, image_size=16, batch_size=16, progress=False)
    assert isinstance(model, BaselineCNN)
    assert "baseline" in info["model"]
    assert info["split"] == "validation" and info["n"] == 16
    assert 0.0 <= info["accuracy"] <= 1.0 and 0.0 <= info["macro_f1"] <= 1.0
    low, high = info["accuracy_ci95"]
    assert 0.0 <= low <= info["accuracy"] <= high <= 1.0
    assert info["epochs"] == 2 and info["stopped_by"] == "epochs" and info["steps"] == 4
    assert len(info["train_loss"]) == 2 and all(math.isfinite(v) for v in info["train_loss"])
    assert info["train_images"] == 32 and info["train_seconds"] > 0
    assert sum(map(sum, info["confusion_matrix"])) == 16


def test_seeded_and_budgeted(synthetic_root: Path) -> None:
    kwargs = dict(epochs=1, image_size=16, batch_size=8, progress=False, max_train_images=16)
    first, info = train_baseline(synthetic_root, **kwargs)
    second, _ = train_baseline(synthetic_root, **kwargs)
    assert info["train_images"] == 16
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    _, cut = train_baseline(synthetic_root, **{**kwargs, "epochs": 50, "max_minutes": 1e-6})
    assert cut["stopped_by"] == "max_minutes" and cut["steps"] == 1 and cut["epochs"] == 0.5


def test_beats_chance_on_separable_data(synthetic_root: Path) -> None:
    _, info = train_baseline(synthetic_root, epochs=8, image_size=16, batch_size=8, width=16, progress=False)
    assert info["accuracy"] >= 0.5  # chance is 0.25 on the 16 balanced validation images


def test_a_kept_judge_is_the_same_judge_and_is_not_trained_again(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dict(seed=1, epochs=1, image_size=16)
    trained, report = cached_baseline(tmp_path / "judges", synthetic_root, **settings)
    assert len(list((tmp_path / "judges").glob("*.pt"))) == 1 and "train_loss" not in report

    def no_training(*args, **kwargs):
        raise AssertionError("the kept judge should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr(baseline, "train_baseline", no_training)
        kept, kept_report = cached_baseline(tmp_path / "judges", synthetic_root, **settings)
    assert kept_report == report and not kept.training
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    assert torch.equal(baseline_predict(kept, x), baseline_predict(trained, x))
    calls = []
    monkeypatch.setattr(
        baseline, "train_baseline", lambda *a, **k: calls.append(k) or train_baseline(*a, **k)
    )
    cached_baseline(tmp_path / "judges", synthetic_root, **{**settings, "seed": 2})  # another judge
    other_data = make_synthetic(tmp_path / "other", seed=1, counts={"train": 8, "validation": 4, "test": 2})
    cached_baseline(tmp_path / "judges", other_data, **settings)  # same file name, other data: retrained
    cached_baseline(None, synthetic_root, **settings)  # nothing kept
    assert [k["seed"] for k in calls] == [2, 1, 1]
