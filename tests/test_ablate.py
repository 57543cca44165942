"""The ablation runner: variant names and modifiers, resume without retraining, paired effects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pcnn.config import CONDITIONING_VARIANTS, ModelConfig, RunConfig, TrainConfig, profile
from pcnn.datasets import make_synthetic
from pcnn.training.engine import resolve_compile
from pcnn.workflow.ablate import HYBRID_WEIGHT, default_variants, paired_effect, run_ablation, variant_config


def tiny_base(disc_weight: float = 0.0) -> RunConfig:
    return RunConfig(
        name="tiny",
        model=ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0),
        train=TrainConfig(
            batch_size=4,
            lr=2e-3,
            eval_batch_size=16,
            compile="off",
            precision="fp32",
            disc_weight=disc_weight,
        ),
    )


@pytest.mark.parametrize(
    ("disc_weight", "other"), [(0.0, "gated-bias+hybrid"), (0.01, "gated-bias+generative")]
)
def test_default_variants_compare_every_conditioning_and_the_other_objective(disc_weight, other) -> None:
    variants = default_variants(tiny_base(disc_weight))
    assert set(CONDITIONING_VARIANTS) <= set(variants)
    assert {"gated-bias+polyak", other} <= set(variants)
    assert len(set(variants)) == len(variants)


@pytest.mark.parametrize(
    ("name", "base_weight", "variant", "polyak", "disc_weight"),
    [
        ("film", 0.0, "film", False, 0.0),
        ("gated-bias+polyak", 0.0, "gated-bias", True, 0.0),
        ("gated-bias+hybrid", 0.0, "gated-bias", False, HYBRID_WEIGHT),
        ("gated-bias+hybrid", 0.05, "gated-bias", False, 0.05),  # the profile's own weight is kept
        ("gated-bias+generative", 0.05, "gated-bias", False, 0.0),
        ("gated-bias+polyak+hybrid", 0.0, "gated-bias", True, HYBRID_WEIGHT),
        ("none", 0.05, "none", False, 0.0),  # no posterior to train without a label
    ],
)
def test_variant_config_applies_modifiers(name, base_weight, variant, polyak, disc_weight) -> None:
    config = variant_config(
        tiny_base(base_weight), name, {"max_steps": 5}, seed=7, eval_subset=3, polyak_decay=0.9
    )
    assert config.model.conditioning == variant
    assert config.train.polyak is polyak
    assert config.train.disc_weight == pytest.approx(disc_weight)
    assert (config.train.seed, config.train.max_steps, config.train.eval_subset) == (7, 5, 3)


def test_short_variants_of_the_cpu_profile_are_not_compiled() -> None:
    """Compiling costs minutes on the CPU: a 150-step variant runs eagerly, an hour-long one compiled."""
    cpu, base = torch.device("cpu"), profile("cpu")
    short = variant_config(base, "film", {"max_steps": 150}, seed=0, eval_subset=0, polyak_decay=0.9)
    long = variant_config(base, "film", {"max_minutes": 60}, seed=0, eval_subset=0, polyak_decay=0.9)
    assert not resolve_compile(short.train, cpu) and resolve_compile(long.train, cpu)


def test_the_hybrid_variant_trains_the_hybrid_term_from_its_first_step() -> None:
    """On the `long` base (hybrid start 70 of 80 epochs) a 150-step `+hybrid` row once stayed generative."""
    base = profile("long")
    config = variant_config(
        base, "gated-bias+hybrid", {"max_steps": 150}, seed=0, eval_subset=0, polyak_decay=0.9
    )
    assert (
        config.train.disc_weight == HYBRID_WEIGHT
        and config.train.objective_at(0).disc_weight == HYBRID_WEIGHT
    )


@pytest.mark.parametrize("name", ["gated", "gated-bias+fast", "gated-bias+hybrid+generative"])
def test_variant_config_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="ablation variant"):
        variant_config(tiny_base(), name, {"max_steps": 5}, seed=0, eval_subset=0, polyak_decay=0.9)


def test_budget_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="budget keys"):
        variant_config(tiny_base(), "film", {"hours": 1}, seed=0, eval_subset=0, polyak_decay=0.9)


def test_run_ablation_writes_rows_and_does_not_retrain(tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    data = make_synthetic(
        tmp_path / "data", seed=0, image_size=8, counts={"train": 4, "validation": 2, "test": 1}
    )
    variants = ["none", "gated-bias", "gated-bias+hybrid"]
    kwargs = dict(
        out_dir=tmp_path / "ablation",
        budget={"max_steps": 3},
        data_dir=data,
        variants=variants,
        eval_subset=8,
        device="cpu",
        progress=False,
    )
    rows = run_ablation(tiny_base(), **kwargs)
    assert [row["name"] for row in rows] == variants
    saved = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    assert saved == rows
    none, plain, hybrid = rows
    assert none["val_accuracy"] is None and none["objective"] == "generative"
    assert plain["objective"] == "generative" and hybrid["objective"] == "hybrid"
    assert 0.0 <= plain["val_accuracy"] <= 1.0 and plain["steps"] == 3
    assert all(row["val_bpd"] > 0 for row in rows)

    import pcnn.training.engine

    def refuse(*args, **kwargs):
        raise AssertionError("a finished variant was retrained")

    monkeypatch.setattr(pcnn.training.engine, "train", refuse)
    assert run_ablation(tiny_base(), **kwargs) == rows


def test_paired_effect_reports_differences_and_missing_rows() -> None:
    rows = [
        {"name": "gated-bias", "val_accuracy": 0.5, "val_bpd": 4.0},
        {"name": "gated-bias+hybrid", "val_accuracy": 0.75, "val_bpd": 4.1},
        {"name": "none", "val_accuracy": None, "val_bpd": 3.9},
    ]
    effect = paired_effect(rows, "gated-bias", "gated-bias+hybrid")
    assert effect["accuracy_change"] == pytest.approx(0.25)
    assert effect["bpd_change"] == pytest.approx(0.1)
    assert paired_effect(rows, "gated-bias", "none")["accuracy_change"] is None
    assert paired_effect(rows, "gated-bias", "gated-bias+polyak") is None


def test_run_ablation_retrains_a_variant_whose_base_config_changed(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = make_synthetic(
        tmp_path / "data", seed=0, image_size=8, counts={"train": 4, "validation": 2, "test": 1}
    )
    kwargs = dict(
        out_dir=tmp_path / "ablation",
        budget={"max_steps": 2},
        data_dir=data,
        variants=["gated-bias"],
        eval_subset=8,
        device="cpu",
        progress=False,
    )
    first = run_ablation(tiny_base(), **kwargs)
    changed = tiny_base()
    changed.train.lr = 1e-2
    second = run_ablation(changed, **kwargs)
    recorded = json.loads((tmp_path / "ablation" / "gated-bias" / "config.json").read_text())
    assert recorded["train"]["lr"] == 1e-2 and second[0]["steps"] == first[0]["steps"] == 2
    superseded = list((tmp_path / "ablation" / "superseded").iterdir())
    old_config = json.loads((superseded[0] / "config.json").read_text())
    assert len(superseded) == 1 and old_config["train"]["lr"] == 2e-3
