"""Class consistency, nearest neighbours (and their figure), and TTA/prior effects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pcnn.evaluation.analysis import (
    class_consistency,
    nearest_neighbour_figure,
    nearest_neighbours,
    tta_and_prior_effects,
)


def _images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen).float() / 127.5 - 1


def test_class_consistency_of_constant_classifier() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    result = class_consistency(lambda x: torch.zeros(len(x), dtype=torch.long), _images(8), labels)
    assert result["per_class"] == {"burger": 1.0, "panda": 0.0, "koala": 0.0, "pizza": 0.0}
    assert result["overall"] == 0.25 and result["n"] == 8
    assert result["confusion_matrix"][1] == [2, 0, 0, 0]


def test_class_consistency_missing_class_is_none() -> None:
    labels = torch.tensor([0, 1, 1])
    result = class_consistency(lambda x: torch.tensor([0, 1, 0]), _images(3), labels)
    assert result["per_class"]["burger"] == 1.0 and result["per_class"]["panda"] == 0.5
    assert result["per_class"]["koala"] is None and result["per_class_n"]["koala"] == 0


def test_nearest_neighbour_finds_duplicate() -> None:
    reference = _images(50, seed=1)
    samples = torch.stack([reference[17], reference[3] + 0.01, _images(1, seed=2)[0]])
    # tiny chunks exercise the running top-k across reference blocks
    indices, distances = nearest_neighbours(samples, reference, k=3, chunk=2, reference_chunk=7)
    assert indices.shape == distances.shape == (3, 3)
    assert indices[0, 0] == 17 and distances[0, 0] == 0.0
    assert indices[1, 0] == 3 and distances[1, 0] == pytest.approx(0.01 * np.sqrt(3 * 64))
    assert (np.diff(distances, axis=1) >= 0).all()
    brute = torch.cdist(samples.flatten(1).double(), reference.flatten(1).double())
    np.testing.assert_array_equal(indices, brute.argsort(dim=1)[:, :3].numpy())
    with pytest.raises(ValueError):
        nearest_neighbours(samples, reference, k=51)


def test_nearest_neighbour_figure(tmp_path: Path) -> None:
    reference = _images(10, seed=1)
    samples = reference[[2, 5]]
    indices, _ = nearest_neighbours(samples, reference, k=2)
    paths = nearest_neighbour_figure(samples, reference, indices, tmp_path / "nn", labels=[0, 3])
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_tta_and_prior_effects() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 40)
    plain = rng.normal(size=(40, 4)) * 3 - 300
    plain[np.arange(40), labels] += 2.0
    rows = tta_and_prior_effects(plain, plain.copy(), labels, [1, 1, 1, 1])
    assert [row["setting"] for row in rows] == ["plain", "tta", "train prior", "tta + train prior"]
    assert len({(row["accuracy"], row["macro_f1"]) for row in rows}) == 1  # identical scores, uniform prior
    assert all(row["changed_vs_plain"] == 0 for row in rows)
    for row in rows:
        low, high = row["accuracy_ci95"]
        assert low <= row["accuracy"] <= high

    # a prior that overwhelms the likelihoods predicts its mode everywhere
    flipped = plain + rng.normal(size=plain.shape)
    rows = tta_and_prior_effects(plain, flipped, labels, [0.0, 0.0, 1.0, 0.0])
    by_name = {row["setting"]: row for row in rows}
    assert by_name["train prior"]["accuracy"] == pytest.approx(np.mean(labels == 2))
    assert by_name["tta + train prior"]["accuracy"] == by_name["train prior"]["accuracy"]
    tta_predictions = flipped.argmax(axis=1)
    assert by_name["tta"]["accuracy"] == pytest.approx(np.mean(tta_predictions == labels))
    assert by_name["tta"]["changed_vs_plain"] == int((tta_predictions != plain.argmax(axis=1)).sum())
