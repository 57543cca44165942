"""Configuration dataclasses and the named profiles (docs/design.md#profiles).

Every profile sets every field, so a run folder's `config.json` alone reproduces a run. A profile is one
entry of `PROFILES`: its run configuration and the stage sizes its notebooks compute with (`stage_sizes`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CONDITIONING_VARIANTS = (
    "none",
    "gated-bias",
    "single-matrix",
    "per-layer-input",
    "spatial",
    "label-channel",
    "film",
)


@dataclass
class ModelConfig:
    """Architecture of one PixelCNN++G network (docs/design.md#model)."""

    nr_resnet: int = 1
    nr_filters: int = 40
    nr_logistic_mix: int = 10
    num_classes: int = 4
    conditioning: str = "gated-bias"
    dropout: float = 0.5
    image_size: int = 32

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONING_VARIANTS:
            raise ValueError(
                f"unknown conditioning {self.conditioning!r};"
                f" choose one of {', '.join(CONDITIONING_VARIANTS)}"
            )
        if self.image_size % 4 or self.image_size < 4:
            raise ValueError(f"image_size must be a positive multiple of 4, got {self.image_size}")
        for name in ("nr_resnet", "nr_filters", "nr_logistic_mix", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and bookkeeping of one training run (docs/design.md#training)."""

    epochs: int = 100
    batch_size: int = 16  # the global batch: split evenly across processes under torchrun
    lr: float = 2e-4
    # Epochs count from 1. Epoch e trains at lr * lr_decay**(e-1) while e <= lr_switch_epoch (or always,
    # when the switch is off), then at lr_after_switch * lr_decay_after_switch**(e-1-lr_switch_epoch).
    lr_decay: float = 0.99995  # multiplied into the learning rate once per epoch
    lr_switch_epoch: int = 0  # 0 disables the switch; the `seed` profile switches after epoch 501
    lr_after_switch: float = 1e-4
    lr_decay_after_switch: float = 0.997
    seed: int = 0
    max_minutes: float = 0.0  # wall-clock budget of the whole run, summed over resumed sessions; 0 = none
    max_steps: int = 0  # 0 means no step budget
    max_train_images: int = 0  # 0 means the whole training split
    augment: bool = True
    polyak: bool = False
    polyak_decay: float = 0.9995
    eval_every: int = 1  # epochs
    eval_subset: int = 0  # 0 means the whole validation split
    sample_every: int = 0  # epochs; 0 disables sample grids
    sample_per_class: int = 4
    checkpoint_every: int = 0  # epochs; 0 keeps only `last` and `best`
    eval_batch_size: int = 64
    num_workers: int = -1  # DataLoader workers; -1 = auto (0 on a CPU, up to 8 on a GPU machine)
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (with loss scaling); auto: see pcnn.fast.precision
    # auto | on | off. auto: on for CUDA; on the CPU, where compiling takes minutes, only for a run whose
    # budget (max_steps >= 1000, or else max_minutes >= 20) repays them
    compile: str = "auto"
    fast_path: str = "auto"  # auto | on | off: the restructured training forward and fused likelihood
    channels_last: str = "auto"  # auto | on | off: activation layout of the fast path (auto: on)
    # Processes sharing each CPU step, each taking a part of the batch (`pcnn.fast.core_parallel`); 0 = auto:
    # 2 when the CPU step is compiled and torch has >= 2 threads, else 1. Threads are divided among them.
    cpu_processes: int = 0
    max_nonfinite_steps: int = 10
    disc_weight: float = 0.0  # weight of the hybrid objective's cross-entropy term
    disc_fraction: float = 0.25  # share of each batch that the discriminative term scores
    # Divides the class log-likelihoods (nats) inside the training cross-entropy only: at 1 the posterior
    # is nearly one-hot (classes differ by hundreds of nats) and only misclassified images give gradient;
    # a larger temperature gives every image a graded margin. Prediction is unchanged (the argmax).
    disc_temperature: float = 1.0
    # Likelihood first: the hybrid term joins at this 0-based epoch (0 = from the start). Trained from the
    # start it costs the samples their class (27% against 46.5% judged in class at equal steps); joining a
    # trained likelihood model at full weight it raised the training loss from 3.99 to 5.81
    # (docs/runs.md#likelihood-first), so no profile uses it.
    disc_start_epoch: int = 0
    # Warm-up of the hybrid term: its weight rises linearly from 0 to `disc_weight` over this many epochs
    # from `disc_start_epoch` on (step by step, so the compiled step is not rebuilt); 0 = full weight at once.
    disc_warmup_epochs: float = 0.0
    # Anneal: from this 0-based epoch on the likelihood trains alone again (0 = the hybrid term stays to the
    # end). Four likelihood epochs after ten hybrid ones took the wide build back to 69.5% judged and 83.6%
    # accuracy (from 55.2% and 85.7%); 14 likelihood epochs alone reached 67.3%, so most of that is the
    # epochs' (docs/runs.md, the anneal's 14-epoch control). No profile uses it.
    disc_end_epoch: int = 0
    grad_clip: float = 0.0  # 0 disables clipping
    last_checkpoint_minutes: float = 0.0  # write `last` at an epoch end at most this often; 0 = every epoch
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    # Fine-tuning (`pcnn finetune`); all off in a plain run.
    init_checkpoint: str = ""  # start from these weights (with a fresh optimiser)
    finetune_augment: bool = False  # add colour jitter and random crop to the training augmentation
    focus_classes: str = ""  # comma-separated class indices drawn with `focus_share` of each epoch's draws
    focus_share: float = 0.9
    holdout_fraction: float = 0.0  # share of the training split held out to select and early-stop on
    early_stop_patience: int = 0  # evaluations without improvement before stopping; 0 never stops early

    def __post_init__(self) -> None:
        switches = {
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "compile": ("auto", "on", "off"),
            "fast_path": ("auto", "on", "off"),
            "channels_last": ("auto", "on", "off"),
        }
        for name, allowed in switches.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"train.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.cpu_processes < 0:
            raise ValueError(f"train.cpu_processes must be >= 0 (0 = auto), got {self.cpu_processes}")
        if self.batch_size < 1 or self.epochs < 0 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1 and epochs >= 0")
        for name in ("polyak_decay",):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"train.{name} must lie in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.focus_share <= 1.0:
            raise ValueError(f"train.focus_share must lie in (0, 1], got {self.focus_share}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"train.holdout_fraction must lie in [0, 1), got {self.holdout_fraction}")
        if self.disc_weight < 0 or not 0.0 < self.disc_fraction <= 1.0:
            raise ValueError("train.disc_weight must be >= 0 and train.disc_fraction in (0, 1]")
        if self.disc_temperature <= 0:
            raise ValueError(f"train.disc_temperature must be > 0, got {self.disc_temperature}")
        if self.disc_start_epoch < 0:
            raise ValueError(f"train.disc_start_epoch must be >= 0, got {self.disc_start_epoch}")
        if self.disc_weight > 0 and 0 < self.epochs <= self.disc_start_epoch:
            raise ValueError(
                f"train.disc_start_epoch ({self.disc_start_epoch}) is not before train.epochs"
                f" ({self.epochs}): the hybrid term (disc_weight {self.disc_weight:g}) would never join;"
                " lower it (it is 0-based)"
            )
        if self.disc_end_epoch < 0 or (
            self.disc_weight > 0 and 0 < self.disc_end_epoch <= self.disc_start_epoch
        ):
            raise ValueError(
                f"train.disc_end_epoch ({self.disc_end_epoch}) must be 0 (never) or after"
                f" train.disc_start_epoch ({self.disc_start_epoch}): the hybrid term would never train"
            )
        if not self.disc_warmup_epochs >= 0:
            raise ValueError(f"train.disc_warmup_epochs must be >= 0, got {self.disc_warmup_epochs}")

    def objective_at(self, epoch: int) -> TrainConfig:
        """The settings the step trains epoch `epoch` (0-based) with: before `disc_start_epoch` and from
        `disc_end_epoch` on (when set) the likelihood alone."""
        ended = 0 < self.disc_end_epoch <= epoch
        if self.disc_weight > 0 and (epoch < self.disc_start_epoch or ended):
            return dataclasses.replace(self, disc_weight=0.0)
        return self

    def disc_ramp(self, epoch: int, batch: int, per_epoch: int) -> float:
        """The share of `disc_weight` that batch `batch` (0-based) of epoch `epoch` trains with: rising
        linearly over `disc_warmup_epochs` after `disc_start_epoch`, so a new cross-entropy term does not
        jolt a model (and Adam moments) fitted to the likelihood alone."""
        if self.disc_warmup_epochs <= 0:
            return 1.0
        done = epoch - self.disc_start_epoch + (batch + 1) / max(per_epoch, 1)
        return min(1.0, max(0.0, done / self.disc_warmup_epochs))


@dataclass
class RunConfig:
    """A resolved profile: the model and its training."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(
            name=data.get("name", "custom"),
            model=ModelConfig(**data.get("model", {})),
            train=TrainConfig(**data.get("train", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _smoke() -> RunConfig:
    return RunConfig(
        name="smoke",
        model=ModelConfig(nr_resnet=1, nr_filters=16, nr_logistic_mix=5, dropout=0.0),
        train=TrainConfig(
            epochs=7,
            batch_size=16,
            lr=1e-3,
            lr_decay=0.999,
            seed=0,
            max_steps=200,
            max_train_images=512,
            eval_every=7,
            eval_subset=64,
            sample_every=0,
            sample_per_class=2,
            eval_batch_size=16,
        ),
    )


def _cpu() -> RunConfig:
    return RunConfig(
        name="cpu",
        # No dropout: an hour is about eleven epochs, in which the model underfits (with p = 0.5 its training
        # bits/dim stayed above the validation bits/dim all hour); dropping it also skips the masks.
        model=ModelConfig(nr_resnet=1, nr_filters=40, nr_logistic_mix=10, dropout=0.0),
        train=TrainConfig(
            epochs=1000,
            batch_size=16,
            # An hour is about eleven epochs: start at twice the course's 2e-4 and decay by 0.8 per epoch, to
            # 3.4e-5 by the end of the hour (80.3% against 78.2% for a constant 2e-4;
            # docs/runs.md#the-cpu-profiles-choices).
            lr=4e-4,
            lr_decay=0.8,
            seed=0,
            max_minutes=60.0,
            eval_every=1,
            eval_subset=0,
            sample_every=2,
            checkpoint_every=10,
            eval_batch_size=16,
            # The hybrid objective: within the hour it lifts Bayes accuracy far faster than the plain
            # likelihood, at a cost in bits/dim that the ablation's `gated-bias+generative` row shows.
            disc_weight=0.01,
            # Evaluate and sample with a Polyak average over the last ~200 steps: it steadies the epoch to
            # epoch swings of the Bayes accuracy (48-70% without it) and lifts the hour's accuracy.
            polyak=True,
            polyak_decay=0.995,
        ),
    )


def _seed() -> RunConfig:
    return RunConfig(
        name="seed",
        model=ModelConfig(nr_resnet=1, nr_filters=128, nr_logistic_mix=100, dropout=0.5),
        train=TrainConfig(
            epochs=801,
            batch_size=32,
            lr=2e-4,
            lr_decay=0.99995,
            lr_switch_epoch=501,
            lr_after_switch=1e-4,
            lr_decay_after_switch=0.997,
            seed=4399,
            # Three GPU hours, summed over resumed sessions (a Colab runtime is lost on disconnect): 801
            # epochs are ~104k steps, so a slower GPU stops at the budget, with `last` and `best` written.
            max_minutes=180.0,
            eval_every=25,
            sample_every=25,
            checkpoint_every=25,
            eval_batch_size=128,
            num_workers=-1,
            last_checkpoint_minutes=5.0,
        ),
    )


def _long() -> RunConfig:
    """The `cpu` profile's model trained five times as many epochs on the likelihood alone (the course's
    objective): under an hour and a half on a 2-core CPU with native bf16, about two and a half in fp32."""
    cpu = _cpu()
    return RunConfig(
        name="long",
        model=cpu.model,
        train=dataclasses.replace(
            cpu.train,
            epochs=80,
            # 4e-4 decayed to 6.3e-5 by the end
            lr_decay=0.977,
            max_minutes=180.0,
            # No hybrid term: joining the likelihood at epoch 71 (`disc_start_epoch=70`) it raised the
            # training loss from 3.99 to 5.81 within 50 steps (docs/runs.md#likelihood-first)
            disc_weight=0.0,
            eval_every=5,
            sample_every=10,
            checkpoint_every=10,
        ),
    )


def _wide() -> RunConfig:
    """The `long` profile with twice the filters (3.6M parameters against 0.9M), stopped at epoch 60: every
    sample measure and the accuracy beat the 40-filter model at equal epochs
    (docs/runs.md#model-width-80-filters-beside-the-references-40). The learning rate decays per epoch,
    so its 60 epochs are the first 60 of an 80-epoch run."""
    long = _long()
    return RunConfig(
        name="wide",
        model=dataclasses.replace(long.model, nr_filters=80),
        # one step costs 2.1x the 40-filter step (benchmarks/train_step.py): about two hours on 2 idle cores
        train=dataclasses.replace(long.train, epochs=60, max_minutes=300.0, last_checkpoint_minutes=10.0),
    )


def _deep() -> RunConfig:
    """The `wide` profile with two gated resnet blocks per stage instead of one (6.06M parameters against
    3.59M), trained 100 epochs, 20 past the end of `long`'s schedule, whose decay it continues (4e-5 at the
    end): at equal epochs it leads `wide` on bits/dim, accuracy and the matched FID for about 5% more time
    a step, and its bits/dim still fell between epochs 80 and 100
    (docs/runs.md#depth-two-resnet-blocks-per-stage-at-80-filters)."""
    wide = _wide()
    return RunConfig(
        name="deep",
        model=dataclasses.replace(wide.model, nr_resnet=2),
        # about four hours on 2 idle cores: resumable from `last.pt`, written every 10 minutes
        train=dataclasses.replace(wide.train, epochs=100, max_minutes=360.0),
    )


@dataclass
class StageSizes:
    """How much each notebook computes; one set per profile (`stage_sizes`). 0 means all images."""

    train_overrides: list[str] = field(default_factory=list)  # `section.field=value` on the profile
    eval_subset: int = 0  # validation images for the headline evaluation
    prefix_images: int = 0  # validation images for accuracy vs fraction seen
    prefix_points: int = 33
    data_examples_per_class: int = 8
    grid_per_class: int = 8  # samples per class shown (taken from the first FID seed when possible)
    course_per_class: int = 25  # course protocol: samples per class per seed
    fid_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    course_floor_seeds: int = 5
    matched_per_class: int = 250  # matched protocol: samples and real images per class
    # Matched protocol: one draw of `matched_per_class` samples per class per seed offset (added to the
    # notebook seed); the FID is reported as mean +- std over the draws, the judge scores the first. One
    # draw's FID moves by about 5 with the sampling seed at 1000 samples (152.7, 157.6 for one checkpoint).
    matched_seeds: list[int] = field(default_factory=lambda: [1000])
    # Sampling temperature of the course, matched and grid samples: the candidate with the lowest matched
    # FID on one selection draw at the notebook seed (training images only; disjoint from the reported
    # draws). One candidate: no selection. At epoch 100 of `deep`, T = 0.95 gave 145.0 against 148.5 at 1.
    temperature_candidates: list[float] = field(default_factory=lambda: [1.0])
    sample_batch: int = 0  # images per sampling batch (0: all at once)
    speed_batches: list[int] = field(default_factory=lambda: [1, 16])
    naive_speed: str = "full"  # full | estimate (one forward pass x pixels)
    finetune_budget: dict[str, float] = field(default_factory=lambda: {"epochs": 20})
    finetune_holdout: float = 0.1
    ablation_budget: dict[str, float] = field(default_factory=lambda: {"max_minutes": 10.0})
    # `section.field=value` on the profile for the ablation's runs: nine variants of the full model would
    # cost nine main runs, so a large profile compares them on a smaller model
    ablation_overrides: list[str] = field(default_factory=list)
    ablation_variants: list[str] | None = None  # None: every variant
    ablation_eval_subset: int = 0
    ablation_fid_per_class: int = 25
    ablation_fid_seeds: list[int] = field(default_factory=lambda: [0])
    ablation_polyak_decay: float = 0.999
    reference_per_class: int = 8  # samples per class of checkpoints/reference.pt, when it exists
    stats_images: int = 0  # training images for the pixel statistics of 00 (0: all)
    tta_prior: bool = True  # 01 measures flip averaging and the training-frequency prior
    baseline_epochs: int = 30  # the discriminative CNN baseline of 04 (issue: context, not a competitor)
    baseline_minutes: float = 10.0  # its wall-clock cap
    baseline_train_images: int = 0  # 0: the whole training split
    nn_per_class: int = 2  # samples per class shown beside their nearest training images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _smoke_stages() -> dict[str, Any]:
    """Small counts for every stage, so that `make demo` takes minutes on two cores."""
    return dict(
        eval_subset=64,
        prefix_images=32,
        prefix_points=33,
        data_examples_per_class=6,
        grid_per_class=4,
        course_per_class=4,
        fid_seeds=[0, 1],
        course_floor_seeds=2,
        matched_per_class=4,
        matched_seeds=[1000, 1001],
        temperature_candidates=[1.0, 0.9],
        speed_batches=[1, 8],
        naive_speed="estimate",
        finetune_budget={"max_steps": 30},
        ablation_budget={"max_steps": 24},
        ablation_eval_subset=32,
        ablation_fid_per_class=0,
        ablation_fid_seeds=[],
        ablation_polyak_decay=0.9,
        reference_per_class=4,
        stats_images=400,
        baseline_epochs=2,
        baseline_minutes=1.0,
        baseline_train_images=512,
        nn_per_class=1,
    )


def _cpu_stages() -> dict[str, Any]:
    """The `cpu` and `long` profiles train the same model; their pipelines measure it alike."""
    return dict(
        eval_subset=0,
        prefix_images=0,
        grid_per_class=8,
        course_per_class=25,
        fid_seeds=[0, 1, 2],
        course_floor_seeds=5,
        matched_per_class=250,
        matched_seeds=[1000, 1001, 1002],
        temperature_candidates=[1.0, 0.95, 0.9],
        sample_batch=125,
        speed_batches=[1, 16],
        naive_speed="full",
        finetune_budget={"max_minutes": 5.0},
        ablation_budget={"max_steps": 150},
        ablation_eval_subset=0,
        ablation_fid_per_class=25,
        ablation_fid_seeds=[0],
        ablation_polyak_decay=0.999,
        baseline_minutes=5.0,
    )


def _wide_stages() -> dict[str, Any]:
    """Measured as `cpu`, with the ablation on the 40-filter network: nine 80-filter variants cost twice."""
    return {**_cpu_stages(), "ablation_overrides": ["model.nr_filters=40"]}


def _deep_stages() -> dict[str, Any]:
    """As `wide`, the ablation on the `cpu` profile's network (40 filters, one resnet block per stage)."""
    return {**_cpu_stages(), "ablation_overrides": ["model.nr_filters=40", "model.nr_resnet=1"]}


def _seed_stages() -> dict[str, Any]:
    return dict(
        eval_subset=0,
        prefix_images=0,
        grid_per_class=8,
        course_per_class=25,
        fid_seeds=[0, 1, 2, 3, 4],
        course_floor_seeds=5,
        matched_per_class=250,
        matched_seeds=[1000, 1001, 1002],
        temperature_candidates=[1.0, 0.95, 0.9],
        sample_batch=250,
        speed_batches=[1, 32, 256],
        naive_speed="full",
        finetune_budget={"epochs": 20},
        # The original report's reduced model (nf 40, mix 10; about (40/128)^2 of the convolution work per
        # step) for 30 epochs per variant, not nine nf-128 runs of 200 epochs (2.2x the main run's steps).
        ablation_budget={"epochs": 30},
        ablation_overrides=["model.nr_filters=40", "model.nr_logistic_mix=10"],
        ablation_eval_subset=0,
        ablation_fid_per_class=25,
        ablation_fid_seeds=[0, 1, 2],
        ablation_polyak_decay=0.999,  # about the last 1000 of ~3900 steps
    )


@dataclass(frozen=True)
class Profile:
    """One named profile: its run configuration and its notebooks' stage sizes (`StageSizes` fields that
    differ from the defaults), defined side by side so that the two cannot name different profiles."""

    run: Callable[[], RunConfig]
    stages: Callable[[], dict[str, Any]]


PROFILES: dict[str, Profile] = {
    "smoke": Profile(_smoke, _smoke_stages),
    "cpu": Profile(_cpu, _cpu_stages),
    "long": Profile(_long, _cpu_stages),
    "wide": Profile(_wide, _wide_stages),
    "deep": Profile(_deep, _deep_stages),
    "seed": Profile(_seed, _seed_stages),
}


def _known(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def profile(name: str) -> RunConfig:
    """The resolved configuration of a named profile (`smoke`, `cpu`, `long`, `wide`, `deep` or `seed`)."""
    return _known(name).run()


def stage_sizes(name: str, overrides: dict[str, Any] | None = None) -> StageSizes:
    """The stage sizes of a profile, with `overrides` (a dict of StageSizes fields) applied."""
    values = {**_known(name).stages(), **(overrides or {})}
    names = {f.name for f in dataclasses.fields(StageSizes)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown stage size(s) {sorted(unknown)}; known: {', '.join(sorted(names))}")
    return StageSizes(**values)


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def profiles_markdown() -> str:
    """The table of every field on which the profiles differ, run configuration and stage sizes
    (docs/design.md#profiles), generated so it cannot drift."""
    configs = [profile(name) for name in PROFILES]
    sections = {
        "model": [c.model for c in configs],
        "train": [c.train for c in configs],
        "stages": [stage_sizes(name) for name in PROFILES],
    }
    lines = [
        "| field | " + " | ".join(f"`{name}`" for name in PROFILES) + " |",
        "|---" * (len(PROFILES) + 1) + "|",
    ]
    for section, objects in sections.items():
        for f in dataclasses.fields(objects[0]):
            values = [getattr(obj, f.name) for obj in objects]
            if len({repr(v) for v in values}) > 1:
                lines.append(f"| {section}.{f.name} | " + " | ".join(_cell(v) for v in values) + " |")
    return "\n".join(lines)


def _coerce(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return text


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.field=value` overrides (e.g. `train.epochs=3`), type-checked against the field."""
    data = config.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in ("model", "train") or name not in data[section]:
            valid = ", ".join(f"{s}.{n}" for s in ("model", "train") for n in data[s])
            raise ValueError(f"bad override {item!r}: expected section.field=value with one of: {valid}")
        data[section][name] = _coerce(value, data[section][name])
    return RunConfig.from_dict(data)
