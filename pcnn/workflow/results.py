"""The results records: one dataclass per notebook record, the only definition of what the notebooks write
into `results/<name>.json` and what the report reads from them (docs/design.md#results-records).

Each notebook fills its record (`DataRecord` in 00, `TrainingRecord` in 01, `FinetuneRecord` in 02, a list
of `AblationRow` in 03, `SamplingRecord` in 04); `pcnn.workflow.pipeline.write_result` and `read_result`
and `pcnn.reporting.report.merge_results` validate it. Every field is one the notebook always writes (None
where its stage was skipped): a record that lacks one fails with a message that names the record, the
field and the notebook to run again. `REPORT_KEYS` declares every key below a record's top level that
the report reads (a test checks the report reads no other), so renaming a key fails a fast test, not only
the slow pipeline. Records are the same JSON as before the schema, so results written earlier still read;
keys a record does not declare travel along unchanged in `extra`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

T = TypeVar("T", bound="Record")


class ResultError(ValueError):
    """A results record lacks a field the report needs, or holds a value of the wrong type."""


@dataclass
class Record:
    """Base of the results records: dict round trip and validation; `extra` keeps undeclared keys."""

    NAME: ClassVar[str] = ""
    NOTEBOOK: ClassVar[str] = ""
    # Key paths below the top level that the report reads ("." between keys, "*" for every key or item).
    REPORT_KEYS: ClassVar[tuple[str, ...]] = ()

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Validate one record's JSON and return it as this dataclass."""
        if not isinstance(data, Mapping):
            raise ResultError(f"{cls._where()} must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name in names
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in data
        ]
        if missing:
            raise ResultError(
                f"{cls._where()} lacks {', '.join(repr(m) for m in missing)}, which the report needs: "
                f"run {cls.NOTEBOOK} again"
            )
        hints = typing.get_type_hints(cls)
        for name in names:
            if name in data and not _matches(data[name], hints[name]):
                raise ResultError(
                    f"{cls._where()}: {name!r} should be {_describe(hints[name])}, "
                    f"got {type(data[name]).__name__}"
                )
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**{k: data[k] for k in names if k in data}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON object: its declared fields, then any extra keys."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**values, **self.extra}

    @classmethod
    def _where(cls) -> str:
        return f"results record '{cls.NAME}' (results/{cls.NAME}.json, written by notebooks/{cls.NOTEBOOK})"


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's annotation (checked one level deep)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    return str(hint).replace("typing.", "")


Summary = dict[str, Any]  # an evaluation summary (`pcnn.evaluation.evaluate.summarize_scores`)


@dataclass
class DataRecord(Record):
    """00_data_exploration: the splits, image sizes and modes, grayscale images and pixel statistics."""

    NAME: ClassVar[str] = "data"
    NOTEBOOK: ClassVar[str] = "00_data_exploration"
    REPORT_KEYS: ClassVar[tuple[str, ...]] = ("splits.*.images",)

    data_source: str
    root: str
    splits: dict[str, Any]
    image_sizes: dict[str, int]
    modes: dict[str, int]
    grayscale: int
    single_channel: int
    grayscale_examples: list[dict[str, Any]]
    pixel_stats: dict[str, Any]
    stats_images: int


@dataclass
class TrainingRecord(Record):
    """01_training: the run, its selected checkpoint, its validation evaluation and the test submission
    (`tta_prior` None when the profile skips it, `submission` None when no submission was written)."""

    NAME: ClassVar[str] = "training"
    NOTEBOOK: ClassVar[str] = "01_training"
    REPORT_KEYS: ClassVar[tuple[str, ...]] = (
        "config.name",
        "config.model.*",
        "config.train.*",
        "loss_curve.step",
        "loss_curve.loss",
        "metrics.*.*",
        "validation.n",
        "validation.accuracy",
        "validation.accuracy_ci95",
        "validation.macro_f1",
        "validation.ece",
        "validation.bits_per_dim",
        "validation.confusion_matrix",
        "validation.per_class_accuracy.*",
        "validation.per_class_bits_per_dim.*",
        "validation.reliability.*",
        "prefix.*",
        "tta_prior.*.*",
    )

    config: dict[str, Any]
    checkpoint: str
    device: str
    metrics: list[dict[str, Any]]
    loss_curve: dict[str, list[Any]]
    steps: int | None
    epochs: int | None
    wall_time_s: float | None
    selected_epoch: int | None
    selected_on: str
    parameters: int
    validation: Summary
    tta_prior: list[dict[str, Any]] | None
    prefix: dict[str, Any]
    submission: str | None


# The evaluation summary keys that the fine-tuning record keeps for the base and the fine-tuned model.
COMPARED = ("accuracy", "accuracy_ci95", "macro_f1", "bits_per_dim", "n", "per_class_accuracy")


@dataclass
class FinetuneRecord(Record):
    """02_finetuning: the fine-tuned checkpoint beside its base, on the validation split."""

    NAME: ClassVar[str] = "finetune"
    NOTEBOOK: ClassVar[str] = "02_finetuning"
    REPORT_KEYS: ClassVar[tuple[str, ...]] = (
        *(f"{which}.{key}" for which in ("base", "finetuned") for key in COMPARED),
        "base.per_class_accuracy.*",
        "finetuned.per_class_accuracy.*",
        "config.train.focus_share",
    )

    base_checkpoint: str
    checkpoint: str
    config: dict[str, Any]
    budget: str
    lr_factor: float
    holdout: float
    focus_classes: list[int]
    focus_names: list[str]
    train_per_class_accuracy: dict[str, float | None]
    steps: int
    metrics: list[dict[str, Any]]
    base: Summary
    finetuned: Summary

    @staticmethod
    def compared(summary: Mapping[str, Any]) -> Summary:
        """The part of an evaluation summary that the record keeps for `base` and `finetuned`."""
        return {key: summary[key] for key in COMPARED}


@dataclass
class AblationRow(Record):
    """03_ablations: one conditioning variant (the record is a list of rows, `pcnn.workflow.ablate`);
    the accuracy fields are None for `none` (no classifier), the FID fields when FID was not measured."""

    NAME: ClassVar[str] = "ablation"
    NOTEBOOK: ClassVar[str] = "03_ablations"

    name: str
    variant: str
    polyak: bool
    objective: str
    disc_weight: float
    budget: str
    steps: int
    run_dir: str
    val_accuracy: float | None
    val_accuracy_ci: list[float] | None
    val_f1: float | None
    val_bpd: float
    val_images: int
    fid_course_mean: float | None
    fid_course_std: float | None
    fid_note: str | None


@dataclass
class SamplingRecord(Record):
    """04_sampling_and_fid: FID under both protocols (`fid.course` and `fid.matched` only when
    `fid.available`), the reviewer's checks, the sampler's speed, the sizes it ran with and the sampling
    temperature with how it was chosen (records before the choice have none: they sampled at T = 1)."""

    NAME: ClassVar[str] = "sampling"
    NOTEBOOK: ClassVar[str] = "04_sampling_and_fid"
    REPORT_KEYS: ClassVar[tuple[str, ...]] = (
        "fid.available",
        "fid.*.model.*",
        "fid.*.floor.*",
        "fid.matched.per_class.*.*",
        "checks.baseline.*",
        "checks.class_consistency.*",
        "checks.class_consistency.per_class.*",
        "checks.nearest_neighbour_distance.*",
        "checks.judge_per_class.*.*",
        "speed.*.*",
        "temperature.*",
        # keyed by the temperature as written ("0.95"), whose dot the key path splits on
        "temperature.candidates.*.*.*",
    )

    checkpoint: str
    fid: dict[str, Any]
    reference_checkpoint: str | None
    checks: dict[str, Any]
    speed: list[dict[str, Any]]
    sizes: dict[str, Any]
    temperature: dict[str, Any] | None = None


RECORDS: dict[str, type[Record]] = {
    record.NAME: record
    for record in (DataRecord, TrainingRecord, FinetuneRecord, AblationRow, SamplingRecord)
}
LIST_RECORDS = ("ablation",)  # records written as a list of rows


def validate_record(name: str, data: Any) -> Any:
    """Check a record's JSON against its schema (a list of rows for `ablation`) and return it unchanged;
    raises `ResultError`. Names without a schema (`ablation_effects`) pass as they are."""
    schema = RECORDS.get(name)
    if schema is None:
        return data
    if name in LIST_RECORDS:
        if not isinstance(data, list):
            raise ResultError(f"{schema._where()} must be a list of rows, got {type(data).__name__}")
        for row in data:
            schema.from_dict(row)
    else:
        schema.from_dict(data)
    return data


def as_json(data: Any) -> Any:
    """A record (or a list of records) as its JSON value; anything else unchanged."""
    if isinstance(data, Record):
        return data.to_dict()
    if isinstance(data, list) and data and all(isinstance(row, Record) for row in data):
        return [row.to_dict() for row in data]
    return data


def declares(name: str, path: str) -> bool:
    """Whether record `name`'s schema declares the key path `path` ("splits.train.images"; for the list
    record `ablation` "*.name"): a field, a `REPORT_KEYS` entry ("*" matching any key) or a step on the way
    to one."""
    schema = RECORDS[name]
    prefix = "*." if name in LIST_RECORDS else ""
    fields = [f"{prefix}{f.name}" for f in dataclasses.fields(schema) if f.name != "extra"]
    keys = path.split(".")
    for pattern in fields + [f"{prefix}{key}" for key in schema.REPORT_KEYS]:
        steps = pattern.split(".")
        if len(keys) <= len(steps) and all(fnmatch.fnmatchcase(k, s) for k, s in zip(keys, steps)):
            return True
    return False
