"""Fine-tuning: config derivation, class-focused draws, holdout selection and early stopping, CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

import pcnn.datasets.train_data
from pcnn.commands.train_cli import add_train_parser
from pcnn.datasets.train_data import epoch_order, focus_weights
from pcnn.training.checkpoint import load_checkpoint, save_checkpoint
from pcnn.training.engine import lr_at, train
from pcnn.training.finetune import LR_FACTOR, finetune, finetune_config
from pcnn.workflow.runrecord import read_metrics
from tests.test_train import data_dir, one_thread, tiny_config  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def base_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("base") / "run"
    train(tiny_config(epochs=1), data_dir=data_dir, run_dir=run, progress=False)
    return run


def test_focus_weights_give_the_chosen_classes_their_share() -> None:
    labels = np.repeat(np.arange(4), 25)
    weights = focus_weights(labels, [0, 3], 0.9)
    assert weights[labels == 0].sum() + weights[labels == 3].sum() == pytest.approx(0.9)
    draws = np.concatenate([epoch_order(100, e, seed=0, weights=weights) for e in range(50)])
    share = np.isin(labels[draws], [0, 3]).mean()
    assert 0.88 < share < 0.92
    with pytest.raises(ValueError, match="no training image"):
        focus_weights(np.zeros(4, dtype=int), [2], 0.9)


def test_finetune_config_lowers_the_lr_and_adds_augmentation(base_run: Path) -> None:
    checkpoint = base_run / "checkpoints" / "last.pt"
    config = finetune_config(checkpoint, ["train.epochs=2"], classes="0,3", holdout=0.25, patience=2)
    base = tiny_config(epochs=1).train
    assert config.train.lr == pytest.approx(lr_at(base, 0) * LR_FACTOR)
    assert config.train.finetune_augment and config.train.lr_switch_epoch == 0
    assert config.train.init_checkpoint == str(checkpoint.resolve())
    assert (config.train.focus_classes, config.train.focus_share, config.train.holdout_fraction) == (
        "0,3",
        0.9,
        0.25,
    )
    assert config.train.epochs == 2 and config.model == tiny_config().model


def test_a_fine_tune_counts_the_hybrid_start_in_its_own_epochs(base_run: Path, tmp_path: Path) -> None:
    """The reference run's `disc_start_epoch` 70 counted its own 80 epochs; inherited by a 20-epoch
    fine-tune it silently kept the hybrid term off for the whole run."""
    state = load_checkpoint(base_run / "checkpoints" / "last.pt")
    state["run_config"]["train"].update(epochs=80, disc_start_epoch=70, disc_end_epoch=75)
    checkpoint = save_checkpoint(tmp_path / "late_start.pt", state)
    config = finetune_config(checkpoint, ["train.disc_weight=0.01"])
    assert config.train.disc_start_epoch == 0 and config.train.objective_at(0).disc_weight == 0.01
    assert config.train.disc_end_epoch == 0, "the original run's anneal counted its own epochs too"
    with pytest.raises(ValueError, match="would never join"):
        finetune_config(checkpoint, ["train.disc_weight=0.01", "train.disc_start_epoch=70"])
    assert finetune_config(checkpoint, ["train.disc_start_epoch=70"]).train.disc_weight == 0  # inert: allowed


def test_finetune_selects_on_the_holdout_and_stops_early(
    base_run: Path,
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen_weights = []
    original = pcnn.datasets.train_data.epoch_order

    def spy(n, epoch, seed, weights=None):
        seen_weights.append(weights)
        return original(n, epoch, seed, weights)

    monkeypatch.setattr(pcnn.datasets.train_data, "epoch_order", spy)
    checkpoint = base_run / "checkpoints" / "last.pt"
    start = load_checkpoint(checkpoint)["model"]
    result = finetune(
        checkpoint,
        run_dir=tmp_path / "ft",
        overrides=["train.epochs=8"],
        classes="1",
        holdout=0.25,
        patience=1,
        data_dir=data_dir,
        progress=False,
    )
    assert result.status == "early_stop" and result.epochs_completed < 8
    metrics = read_metrics(result.run_dir)
    assert all(m["holdout_accuracy"] is not None and m["val_accuracy"] is not None for m in metrics)
    best = load_checkpoint(result.best_checkpoint)
    assert best["selected_on"] == "holdout_accuracy"
    # 24 training images remain (2 of 8 per class held out); class 1 gets 90% of the draws
    weights = seen_weights[0]
    assert len(weights) == 24 and sorted(np.round(weights * 6 / 0.9, 6))[-1] == pytest.approx(1.0)
    tuned = load_checkpoint(result.last_checkpoint)["model"]
    assert any(not torch.equal(start[k], tuned[k]) for k in start)


def test_a_fine_tune_may_change_the_dropout_rate_but_not_the_network(
    base_run: Path,
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    checkpoint = base_run / "checkpoints" / "last.pt"
    base = load_checkpoint(checkpoint)["model_config"]
    dropout = 0.3 if base["dropout"] != 0.3 else 0.1
    kwargs = {"data_dir": data_dir, "progress": False}
    result = finetune(
        checkpoint,
        run_dir=tmp_path / "a",
        overrides=["train.max_steps=1", f"model.dropout={dropout}"],
        **kwargs,
    )
    assert load_checkpoint(result.last_checkpoint)["model_config"]["dropout"] == dropout
    wider = f"model.nr_filters={base['nr_filters'] + 1}"
    with pytest.raises(ValueError, match="only model.dropout may change"):
        finetune(checkpoint, run_dir=tmp_path / "b", overrides=["train.max_steps=1", wider], **kwargs)


def test_finetune_cli(base_run: Path, data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    parser = argparse.ArgumentParser(prog="pcnn")
    add_train_parser(parser.add_subparsers())
    checkpoint = str(base_run / "checkpoints" / "last.pt")
    run = tmp_path / "ft"
    argv = [
        "finetune",
        "--checkpoint",
        checkpoint,
        "--classes",
        "0,3",
        "--class-share",
        "0.8",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run),
        "--set",
        "train.epochs=1",
        "--no-progress",
    ]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert read_metrics(run)[-1]["epoch"] == 1
    args = parser.parse_args(["finetune", "--run-dir", str(run), "--resume", "--data-dir", str(data_dir)])
    assert args.func(args) == 0  # already finished
    args = parser.parse_args(["finetune", "--run-dir", str(tmp_path / "none")])
    assert args.func(args) == 2
