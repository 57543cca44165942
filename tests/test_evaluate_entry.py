"""`pcnn.evaluation.evaluate.evaluate_model` is the one evaluation entry point: the training's metrics
lines, the notebooks' import path and the ablation all reach it."""

from __future__ import annotations

import numpy as np
import torch

from pcnn.core.likelihood import bits_per_dim, dmol_nll
from pcnn.evaluation.evaluate import evaluate_model, score_split
from tests.conftest import grid_images, tiny_model


class _Split:
    """Eight labelled 8x8 images with the attributes `score_split` reads."""

    split = "validation"

    def __init__(self) -> None:
        self.images = grid_images(8, 8)
        self.labels = [k % 4 for k in range(8)]
        self.ids = [f"{k:07d}" for k in range(8)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.labels[i]


def test_conditional_model_is_scored_by_bayes_rule_and_summarised() -> None:
    model, split = tiny_model("gated-bias"), _Split()
    scores, summary = evaluate_model(model, split, subset=6, progress=False)
    reference = score_split(model, split, subset=6, progress=False)
    assert scores is not None and np.array_equal(scores.log_likelihoods, reference.log_likelihoods)
    assert summary["n"] == 6 and set(summary["per_class_accuracy"]) == {"burger", "panda", "koala", "pizza"}
    assert summary["bits_per_dim"] == reference.metrics()["bits_per_dim"]


def test_unconditional_model_has_bits_per_dim_and_no_classifier() -> None:
    model, split = tiny_model("none"), _Split()
    scores, summary = evaluate_model(model, split, progress=False)
    assert scores is None and summary["accuracy"] is None and summary["macro_f1"] is None
    with torch.no_grad():
        expected = float(bits_per_dim(dmol_nll(split.images, model(split.images, None)).double().mean(), 8))
    assert abs(summary["bits_per_dim"] - expected) < 1e-9 and summary["n"] == 8


def test_the_old_names_delegate_to_it() -> None:
    from pcnn.training import engine, review
    from pcnn.workflow import experiments

    assert experiments.evaluate_model is evaluate_model
    assert engine.evaluate is review.evaluate_split
    model, split = tiny_model("gated-bias"), _Split()
    _, summary = evaluate_model(model, split, progress=False)
    line = engine.evaluate(model, split)
    assert line == {key: summary[key] for key in ("bits_per_dim", "accuracy", "macro_f1")}
