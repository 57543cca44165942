"""The conditioning ablation (docs/design.md#conditioning): each variant on one budget and seed, compared.

A row's name is a conditioning variant (`pcnn.config.CONDITIONING_VARIANTS`), optionally with modifiers:
`+polyak` (evaluated with Polyak-averaged weights), `+hybrid` (trained with the hybrid objective,
`disc_weight` = `HYBRID_WEIGHT` unless the base config already sets one) and `+generative` (the plain
generative objective, `disc_weight` = 0). Each row is an ordinary training run in `<out_dir>/<name>/`;
the comparison uses the weights at the end of the budget (for `+polyak` the average), never a checkpoint
selected on validation, so that the validation numbers compare the variants without a selection bias.
Rows go to `<out_dir>/ablation.json` after every variant; a finished variant (its `row.json` matches the
settings) is not retrained, an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pcnn.config import CONDITIONING_VARIANTS, RunConfig, apply_overrides
from pcnn.datasets import CPEN455Dataset, resolve_data_dir
from pcnn.training.checkpoint import load_model

HYBRID_WEIGHT = 0.01  # disc_weight of `+hybrid` rows when the base config has none
MODIFIERS = ("polyak", "hybrid", "generative")
_BUDGET_KEYS = {"max_steps": "steps", "max_minutes": "min", "epochs": "epochs"}


def default_variants(base: RunConfig) -> tuple[str, ...]:
    """Every conditioning variant, `+polyak`, and the other objective than the base profile's.

    A profile that trains with the hybrid objective is compared with `gated-bias+generative`, one that
    trains generatively with `gated-bias+hybrid`.
    """
    other = "gated-bias+generative" if base.train.disc_weight > 0 else "gated-bias+hybrid"
    return (*CONDITIONING_VARIANTS, "gated-bias+polyak", other)


def describe_budget(budget: Mapping[str, float]) -> str:
    """A short human label of a budget, e.g. `24 steps` or `10 min`."""
    parts = []
    for key, unit in _BUDGET_KEYS.items():
        if budget.get(key):
            value = budget[key]
            parts.append(f"{value:g} {unit}")
    return ", ".join(parts) or "unbounded"


def variant_config(
    base: RunConfig,
    name: str,
    budget: Mapping[str, float],
    *,
    seed: int,
    eval_subset: int,
    polyak_decay: float,
) -> RunConfig:
    """The config of one ablation run: the base profile with the variant, the budget and the seed."""
    variant, *modifiers = name.split("+")
    if variant not in CONDITIONING_VARIANTS or not set(modifiers) <= set(MODIFIERS):
        raise ValueError(
            f"unknown ablation variant {name!r}: a conditioning variant ({', '.join(CONDITIONING_VARIANTS)})"
            f" optionally followed by modifiers +{', +'.join(MODIFIERS)}"
        )
    if {"hybrid", "generative"} <= set(modifiers):
        raise ValueError(f"ablation variant {name!r}: +hybrid and +generative exclude each other")
    unknown = set(budget) - set(_BUDGET_KEYS)
    if unknown:
        raise ValueError(f"budget keys must be among {', '.join(_BUDGET_KEYS)}, got {sorted(unknown)}")
    disc_weight = base.train.disc_weight
    if "hybrid" in modifiers:
        disc_weight = disc_weight or HYBRID_WEIGHT
    if "generative" in modifiers or variant == "none":
        disc_weight = 0.0  # the unconditional model has no posterior to train
    overrides = [
        f"model.conditioning={variant}",
        f"train.seed={seed}",
        f"train.polyak={'polyak' in modifiers}",
        f"train.disc_weight={disc_weight}",
        f"train.polyak_decay={polyak_decay}",
        f"train.max_steps={int(budget.get('max_steps', 0))}",
        f"train.max_minutes={float(budget.get('max_minutes', 0.0))}",
        f"train.epochs={int(budget.get('epochs', 0)) or 1_000_000}",
        "train.eval_every=0",  # evaluate once, at the end of the budget
        f"train.eval_subset={eval_subset}",
        "train.sample_every=0",
        "train.checkpoint_every=0",
    ]
    if disc_weight > 0:  # a short budget never reaches a late start of the base (the `long` profile's 70)
        overrides.append("train.disc_start_epoch=0")
    config = apply_overrides(base, overrides)
    config.name = f"{base.name}-ablation-{name}"
    return config


def _evaluate(
    checkpoint: Path, root: Path, *, eval_subset: int, device: torch.device | str, progress: bool
) -> dict[str, Any]:
    from pcnn.evaluation.evaluate import evaluate_model

    model = load_model(checkpoint, device=device, weights="auto")
    dataset = CPEN455Dataset(root, "validation", image_size=model.config.image_size)
    _, summary = evaluate_model(model, dataset, subset=eval_subset, device=device, progress=progress)
    return {
        "val_accuracy": summary["accuracy"],
        "val_accuracy_ci": summary.get("accuracy_ci95"),  # none without a classifier
        "val_f1": summary["macro_f1"],
        "val_bpd": summary["bits_per_dim"],
        "val_images": summary["n"],
    }


def _fid(
    checkpoint: Path,
    root: Path,
    *,
    per_class: int,
    seeds: Sequence[int],
    device: torch.device | str,
) -> dict[str, Any]:
    from pcnn.workflow.experiments import course_fid_over_seeds, inception_status

    if per_class <= 0 or not seeds:
        return {"fid_course_mean": None, "fid_course_std": None, "fid_note": "not measured at this budget"}
    available, note = inception_status()
    if not available:
        return {
            "fid_course_mean": None,
            "fid_course_std": None,
            "fid_note": "not measured (no Inception weights)",
        }
    model = load_model(checkpoint, device=device, weights="auto")
    summary, _, _ = course_fid_over_seeds(model, root, per_class, seeds, device=device, keep_first=False)
    return {
        "fid_course_mean": summary["mean"],
        "fid_course_std": summary["std"],
        "fid_note": f"{per_class * model.config.num_classes} samples x {len(seeds)} seeds",
    }


def run_ablation(
    base: RunConfig,
    *,
    out_dir: str | Path,
    budget: Mapping[str, float],
    data_dir: str | Path | None = None,
    variants: Sequence[str] | None = None,
    seed: int = 0,
    eval_subset: int = 0,
    fid_per_class: int = 0,
    fid_seeds: Sequence[int] = (0,),
    polyak_decay: float = 0.9995,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train and evaluate every variant (resuming; finished ones are kept) and write `ablation.json`.

    `variants` defaults to `default_variants(base)`. Row keys: name, variant, polyak, objective,
    disc_weight, val_accuracy (None for `none`), val_accuracy_ci, val_f1, val_bpd, fid_course_mean,
    fid_course_std, budget, steps, run_dir (the variant's run folder relative to `out_dir`, the folder
    holding `ablation.json`: the rows are committed, so they name no folder of this machine).
    """
    from pcnn.training.device import resolve_device
    from pcnn.training.engine import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_dir(data_dir)
    device = resolve_device(str(device) if device is not None else base.train.device)
    label = describe_budget(budget)
    settings = {
        "budget": label,
        "seed": seed,
        "eval_subset": eval_subset,
        "fid_per_class": fid_per_class,
        "fid_seeds": list(fid_seeds),
        "polyak_decay": polyak_decay,
        "data_dir": str(root),
    }
    rows: list[dict[str, Any]] = []
    for name in variants if variants is not None else default_variants(base):
        run_dir = out / name
        relative = run_dir.relative_to(out).as_posix()
        config = variant_config(
            base, name, budget, seed=seed, eval_subset=eval_subset, polyak_decay=polyak_decay
        )
        row_settings = {**settings, "config": config.to_dict()}
        row_path = run_dir / "row.json"
        if row_path.is_file():
            saved = json.loads(row_path.read_text())
            if saved.get("settings") == row_settings:
                rows.append({**saved["row"], "run_dir": relative})  # rows saved before it was relative
                _write(out, rows)
                continue
        _set_aside_if_stale(run_dir, config)
        result = train(config, data_dir=root, run_dir=run_dir, resume=True, progress=progress, device=device)
        checkpoint = result.last_checkpoint
        if checkpoint is None:
            raise RuntimeError(f"ablation variant {name}: training wrote no checkpoint in {run_dir}")
        row: dict[str, Any] = {
            "name": name,
            "variant": config.model.conditioning,
            "polyak": config.train.polyak,
            "objective": "hybrid" if config.train.disc_weight > 0 else "generative",
            "disc_weight": config.train.disc_weight,
            "budget": label,
            "steps": result.step,
            "run_dir": relative,
        }
        row.update(_evaluate(checkpoint, root, eval_subset=eval_subset, device=device, progress=progress))
        row.update(_fid(checkpoint, root, per_class=fid_per_class, seeds=fid_seeds, device=device))
        row_path.write_text(json.dumps({"settings": row_settings, "row": row}, indent=2) + "\n")
        rows.append(row)
        _write(out, rows)
    return rows


def _set_aside_if_stale(run_dir: Path, config: RunConfig) -> None:
    """Move a variant's run folder to `superseded/` when it trained another config (a changed profile).

    Resuming it would keep the old run (a finished run does not retrain), so its row would silently
    describe the previous config; moving rather than deleting it loses nothing.
    """
    recorded = run_dir / "config.json"
    if not recorded.is_file() or RunConfig.from_dict(json.loads(recorded.read_text())) == config:
        return
    target = run_dir.parent / "superseded" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    target.parent.mkdir(exist_ok=True)
    run_dir.rename(target)
    print(f"ablation variant {run_dir.name}: its config changed; the old run moved to {target}")


def _write(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")


def paired_effect(rows: Sequence[Mapping[str, Any]], base: str, other: str) -> dict[str, Any] | None:
    """What changing `base` into `other` did: both rows' accuracy and bits/dim and the differences.

    None when either row is missing, so a notebook can say the comparison was skipped.
    """
    by_name = {row["name"]: row for row in rows}
    if base not in by_name or other not in by_name:
        return None
    a, b = by_name[base], by_name[other]

    def diff(key: str) -> float | None:
        return None if a.get(key) is None or b.get(key) is None else b[key] - a[key]

    return {
        "base": base,
        "other": other,
        "val_accuracy": [a.get("val_accuracy"), b.get("val_accuracy")],
        "val_bpd": [a.get("val_bpd"), b.get("val_bpd")],
        "accuracy_change": diff("val_accuracy"),
        "bpd_change": diff("val_bpd"),
    }


# The notebook's paired comparisons: the same model, budget and seed, one change each.
PAIRS = (
    ("gated-bias", "gated-bias+polyak"),
    ("gated-bias", "gated-bias+hybrid"),
    ("gated-bias", "gated-bias+generative"),
)


def paired_effects(
    rows: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]] = PAIRS
) -> dict[str, dict[str, Any]]:
    """`paired_effect` of every pair whose two rows were run, keyed by the changed row's name."""
    effects = {other: paired_effect(rows, base, other) for base, other in pairs}
    return {name: effect for name, effect in effects.items() if effect is not None}


def describe_effect(effect: Mapping[str, Any]) -> str:
    """One line for a paired effect: the accuracy change in points (when both rows classify), bits/dim."""
    head = f"{effect['base']} -> {effect['other']}:"
    bpd = f"bits/dim {effect['bpd_change']:+.4f}"
    acc = effect["accuracy_change"]
    return (
        f"{head} validation accuracy {acc * 100:+.1f} points, {bpd}" if acc is not None else f"{head} {bpd}"
    )
