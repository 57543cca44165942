"""Notebook 04's stages (pcnn.workflow.sampling_stages) on a tiny model and a few synthetic images: the
files they write carry the arrays the report reads, and the record they fill validates."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from pcnn.datasets import CLASS_NAMES, make_synthetic
from pcnn.workflow import sampling_stages as stages
from pcnn.workflow.experiments import draw_class_samples
from pcnn.workflow.pipeline import NotebookContext, Paths, stage_sizes
from pcnn.workflow.results import SamplingRecord
from tests.conftest import tiny_model

SIZES = {"grid_per_class": 2, "course_per_class": 2, "nn_per_class": 1, "reference_per_class": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    counts = {"train": 3, "validation": 2, "test": 1}
    return make_synthetic(tmp_path_factory.mktemp("data"), counts=counts, image_size=8)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture
def ctx(tmp_path: Path, data: Path) -> NotebookContext:
    runs = tmp_path / "runs"
    paths = Paths(build=tmp_path, runs=runs, results=runs / "results", figures=tmp_path / "figures").mkdirs()
    return NotebookContext(
        profile="smoke",
        paths=paths,
        sizes=stage_sizes("smoke", SIZES),
        device="cpu",
        data_root=data,
        data_source="synthetic",
        seed=3,
        config=None,
    )


def _npz(ctx: NotebookContext, name: str) -> dict[str, np.ndarray]:
    with np.load(ctx.paths.results / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def test_save_samples_keeps_the_first_of_each_class(tmp_path: Path) -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    images = torch.linspace(-1, 1, len(labels))[:, None, None, None].expand(-1, 3, 2, 2).contiguous()
    assert stages.first_per_class(labels, 2).tolist() == [0, 1, 3, 4, 5, 6, 7]
    path = stages.save_samples(tmp_path, "samples", stages.Drawn(images, labels), 2)
    with np.load(path) as saved:
        assert sorted(saved.files) == ["images", "labels"]
        assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 3, 3]
        assert saved["images"].dtype == np.uint8 and saved["images"].shape == (7, 3, 2, 2)
        assert saved["images"][0].max() == 0 and saved["images"][-1].min() == 255


def test_fid_summaries_have_the_record_shape() -> None:
    floor = {"fid": 5.0, "fid_std": 0.5, "fid_values": [4.5, 5.5], "fid_all_validation": 3.0}
    summary = stages.floor_summary(floor)
    assert summary["mean"] == 5.0 and summary["n"] == 2 and summary["n_samples"] is None

    one = {"fid": 9.0, "kid_mean": 0.1, "kid_std": 0.01, "n_samples": 8, "dims": 2048, "n_reference": 8}
    per_class = {0: {"model": 1.0, "floor": 0.5}, 3: {"model": 2.0, "floor": 0.7}}
    measured = {"model": one, "floor": {**one, "fid": 2.0}, "per_class": per_class}
    matched = stages.matched_summary([measured])
    assert matched["model"]["mean"] == 9.0 and matched["floor"]["mean"] == 2.0
    assert matched["model"]["std"] is None and matched["floor"]["n"] == 1 and matched["model"]["n"] == 1
    assert matched["model"]["kid_std"] == 0.01, "one draw keeps the KID's spread over its subsets"
    assert "dims" not in matched["floor"] and "n_reference" not in matched["model"]
    assert matched["per_class"] == {CLASS_NAMES[0]: per_class[0], CLASS_NAMES[3]: per_class[3]}
    line = stages.MatchedFid(matched, stages.Drawn(torch.zeros(0), torch.zeros(0)), 8).line
    assert "(8 vs 8, dims 2048): FID 9.00 (floor 2.00)" in line


def test_matched_summary_over_draws_reports_their_spread() -> None:
    def draw(fid: float, kid: float, panda: float | None) -> dict:
        model = {"fid": fid, "kid_mean": kid, "kid_std": 0.0, "n_samples": 8, "dims": 2048}
        floor = {"fid": 2.0, "kid_mean": 0.0, "kid_std": 0.0, "n_samples": 8}
        return {"model": model, "floor": floor, "per_class": {1: {"model": panda, "floor": 0.5}}}

    matched = stages.matched_summary([draw(150.0, 0.10, 200.0), draw(156.0, 0.14, 210.0)])
    model = matched["model"]
    assert model["mean"] == 153.0 and model["values"] == [150.0, 156.0] and model["n"] == 2
    assert model["std"] == pytest.approx(np.sqrt(18.0)) and model["kid_mean"] == pytest.approx(0.12)
    assert matched["floor"]["mean"] == 2.0 and matched["floor"]["n"] == 1, "one floor for every draw"
    assert matched["per_class"][CLASS_NAMES[1]] == {"model": 205.0, "floor": 0.5}
    line = stages.MatchedFid(matched, stages.Drawn(torch.zeros(0), torch.zeros(0)), 8).line
    assert "FID 153.00 +- 4.24 over 2 draws (floor 2.00)" in line
    unmeasured = stages.matched_summary([draw(150.0, 0.1, None), draw(156.0, 0.1, 210.0)])
    assert unmeasured["per_class"][CLASS_NAMES[1]]["model"] is None, "a class unmeasured in one draw"
    no_kid = stages.matched_summary([draw(150.0, None, 1.0), draw(156.0, None, 1.0)])
    assert no_kid["model"]["kid_mean"] is None and no_kid["model"]["kid_std"] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        stages.matched_summary([])


def test_matched_fid_draws_once_per_seed_and_judges_the_first(
    ctx: NotebookContext, model, recorded_fid: list[dict]
) -> None:
    ctx.sizes.matched_seeds = [1000, 1001]
    matched = stages.matched_fid(ctx, model, True)
    calls = recorded_fid
    assert matched is not None and len(calls) == 2 and matched.record["model"]["n"] == 2
    assert not torch.equal(calls[0]["images"], calls[1]["images"]), "each seed draws its own samples"
    assert calls[0]["real_features"] is calls[1]["real_features"], "the real images' features are shared"
    assert calls[0]["model"] is calls[1]["model"], "one Inception network for every draw"
    first = draw_class_samples(model, ctx.sizes.matched_per_class, seed=ctx.seed + 1000)
    assert torch.equal(matched.samples.images, first[0]), "the judge scores the first draw"
    assert matched.record["model"]["values"] == [float(c["images"].float().mean()) for c in calls]
    assert matched.record["temperature"] == 1.0


def _record_protocol(calls: list[dict]):
    """A stand-in for `fid.matched_protocol` whose FID is the samples' mean pixel: it records each call."""

    def protocol(images, labels, data_root, per_class, dims, **kwargs) -> dict:
        calls.append({"images": images, "real_features": kwargs["real_features"], "model": kwargs["model"]})
        model_fid = {"fid": float(images.float().mean()), "kid_mean": 0.0, "kid_std": 0.0}
        shared = {"n_samples": len(images), "dims": dims, "n_reference": len(images)}
        return {
            "model": {**model_fid, **shared},
            "floor": {"fid": 1.0, "kid_mean": 0.0, "kid_std": 0.0, **shared},
            "per_class": {},
        }

    return protocol


@pytest.fixture
def recorded_fid(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Calls of the matched protocol, measured without Inception weights (an identity network)."""
    from pcnn.evaluation import fid as fid_metrics
    from pcnn.evaluation.fid import features

    calls: list[dict] = []
    monkeypatch.setattr(fid_metrics, "matched_protocol", _record_protocol(calls))
    monkeypatch.setattr(features, "standard_model", lambda dims, device: torch.nn.Identity())
    return calls


def test_temperature_is_chosen_on_a_selection_draw_disjoint_from_the_reported_ones(
    ctx: NotebookContext, model, recorded_fid: list[dict]
) -> None:
    ctx.sizes.temperature_candidates = [1.0, 0.5, 0.25]
    ctx.sizes.matched_seeds = [1000]
    reference = stages.matched_reference(ctx, True)
    chosen = stages.choose_temperature(ctx, model, True, reference)
    assert len(recorded_fid) == 3, "one selection draw per candidate"
    per_class = ctx.sizes.matched_per_class
    for call, temperature in zip(recorded_fid, [1.0, 0.5, 0.25]):
        expected = draw_class_samples(model, per_class, seed=ctx.seed, temperature=temperature)[0]
        assert torch.equal(call["images"], expected), "every candidate is drawn at the notebook seed"
    fids = {t: float(c["images"].float().mean()) for t, c in zip(["1.0", "0.5", "0.25"], recorded_fid)}
    assert chosen.record["candidates"] == {t: {"fid": f, "kid": 0.0} for t, f in fids.items()}
    assert chosen.temperature == float(min(fids, key=fids.get)) == chosen.record["chosen"]
    assert chosen.line.startswith(f"sampling temperature {chosen.temperature:g}")

    matched = stages.matched_fid(ctx, model, True, temperature=chosen.temperature, reference=reference)
    assert matched is not None and matched.record["temperature"] == chosen.temperature
    reported = draw_class_samples(model, per_class, seed=ctx.seed + 1000, temperature=chosen.temperature)
    assert torch.equal(recorded_fid[-1]["images"], reported[0]), "the reported draw is a fresh seed"
    assert recorded_fid[-1]["real_features"] is recorded_fid[0]["real_features"], "real features shared"
    assert recorded_fid[-1]["model"] is recorded_fid[0]["model"] is reference.inception


def test_temperature_ties_keep_the_first_candidate(
    ctx: NotebookContext, model, monkeypatch: pytest.MonkeyPatch, recorded_fid: list[dict]
) -> None:
    from pcnn.evaluation import fid as fid_metrics

    constant = _record_protocol([])
    monkeypatch.setattr(
        fid_metrics,
        "matched_protocol",
        lambda *a, **k: {**constant(*a, **k), "model": {"fid": 7.0, "kid_mean": None}},
    )
    ctx.sizes.temperature_candidates = [0.9, 1.0]
    assert stages.choose_temperature(ctx, model, True).temperature == 0.9


def test_temperature_without_a_choice_draws_nothing(ctx: NotebookContext, model, recorded_fid) -> None:
    ctx.sizes.temperature_candidates = [0.8]
    single = stages.choose_temperature(ctx, model, True)
    assert single.temperature == 0.8 and single.record["candidates"] == {} and "one candidate" in single.line
    ctx.sizes.temperature_candidates = [1.0, 0.9]
    offline = stages.choose_temperature(ctx, model, False)
    assert offline.temperature == 1.0 and "no Inception weights" in offline.record["note"]
    assert recorded_fid == [], "nothing was sampled or measured"
    ctx.sizes.matched_seeds = [0, 1000]
    with pytest.raises(ValueError, match="offset 0"):
        stages.choose_temperature(ctx, model, True)
    ctx.sizes.temperature_candidates = [1.0, 0.0]
    with pytest.raises(ValueError, match="positive"):
        stages.choose_temperature(ctx, model, True)


def test_course_draws_at_the_chosen_temperature(
    ctx: NotebookContext, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pcnn.evaluation import fid as fid_metrics
    from pcnn.workflow import experiments

    monkeypatch.setattr(experiments, "course_metrics", lambda *a, **k: {"fid": 2.0, "kid_mean": None})
    monkeypatch.setattr(
        fid_metrics,
        "course_floor",
        lambda *a, **k: {"fid": 1.0, "fid_std": 0.0, "fid_values": [1.0], "fid_all_validation": 1.0},
    )
    course = stages.course_fid(ctx, model, True, temperature=0.7)
    assert course.fid["course"]["model"]["temperature"] == 0.7
    first_seed = ctx.seeds(ctx.sizes.fid_seeds)[0]
    expected = draw_class_samples(model, ctx.sizes.course_per_class, seed=first_seed, temperature=0.7)
    assert course.first is not None and torch.equal(course.first.images, expected[0])


def test_every_profile_keeps_the_selection_draw_apart() -> None:
    from pcnn.config import PROFILES

    for name in PROFILES:
        sizes = stage_sizes(name)
        assert all(t > 0 for t in sizes.temperature_candidates), name
        if len(sizes.temperature_candidates) > 1:
            assert 0 not in sizes.matched_seeds, f"{name}: a reported draw would be the selection draw"


def test_without_inception_weights_nothing_is_measured(ctx: NotebookContext, model) -> None:
    course = stages.course_fid(ctx, model, False, "not measured (no Inception weights): offline")
    assert course.fid == {"available": False, "note": "not measured (no Inception weights): offline"}
    assert course.first is None and course.line.startswith("FID not measured")
    assert stages.matched_fid(ctx, model, False) is None


def test_grid_reuses_the_course_draw_when_it_has_enough(ctx: NotebookContext, model) -> None:
    fresh = stages.grid_samples(ctx, model, None)
    assert fresh.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert _npz(ctx, "samples")["labels"].tolist() == fresh.labels.tolist()

    course = stages.Drawn(*draw_class_samples(model, 3, seed=99))
    assert stages.grid_samples(ctx, model, course) is course  # 2 course samples per class: enough for 2
    assert len(_npz(ctx, "samples")["labels"]) == 8
    few = stages.Drawn(course.images[::3], course.labels[::3])
    small = ctx.sizes.__class__(**{**asdict(ctx.sizes), "course_per_class": 1})
    assert stages.grid_samples(NotebookContext(**{**vars(ctx), "sizes": small}), model, few) is not few


def test_temperatures_share_one_seed(ctx: NotebookContext, model) -> None:
    drawn = stages.temperature_samples(ctx, model, (1.0, 0.5))
    assert drawn.temperatures == [1.0, 0.5] and drawn.per_class == 2
    saved = _npz(ctx, "samples_temperatures")
    assert saved["images"].shape == (4, 2, 2, 8, 8, 3) and saved["temperatures"].tolist() == [1.0, 0.5]
    at_one = draw_class_samples(model, 2, seed=ctx.seed)[0]
    from pcnn.reporting.plots import to_uint8_hwc

    assert np.array_equal(saved["images"][:, 0], to_uint8_hwc(at_one).reshape(4, 2, 8, 8, 3))


def test_completions_keep_the_top_rows(ctx: NotebookContext, model) -> None:
    completed = stages.completions(ctx, model)
    assert (completed.rows, completed.images) == (4, 4)
    saved = _npz(ctx, "completions")
    assert saved["completions"].shape == (4, stages.COMPLETIONS_PER_IMAGE, 8, 8, 3)
    assert saved["other"].shape == saved["originals"].shape == (4, 8, 8, 3)
    assert np.array_equal(saved["completions"][:, :, :4], np.repeat(saved["originals"][:, None, :4], 3, 1))
    assert np.array_equal(saved["other_labels"], (saved["labels"] + 1) % 4) and int(saved["rows"]) == 4


def test_training_grids_and_a_missing_reference(ctx: NotebookContext, model) -> None:
    checkpoint = ctx.paths.runs / "main" / "checkpoints" / "best.pt"
    assert stages.training_samples(ctx, checkpoint) == []
    saved = _npz(ctx, "training_samples")
    assert saved["grids"].shape == (0, 1, 1, 3) and saved["epochs"].tolist() == []

    stale = ctx.paths.results / "reference_samples.npz"
    stale.write_bytes(b"stale")
    assert stages.reference_samples(ctx, None) is None and not stale.exists()


def test_reference_samples_from_a_checkpoint(ctx: NotebookContext, model) -> None:
    from pcnn.training.checkpoint import model_state, save_checkpoint

    path = save_checkpoint(
        ctx.paths.build / "reference.pt", {"model_config": asdict(model.config), "model": model_state(model)}
    )
    assert stages.reference_samples(ctx, path) == str(path)
    assert _npz(ctx, "reference_samples")["labels"].tolist() == [0, 1, 2, 3]


def test_nearest_neighbours_find_a_copied_sample(ctx: NotebookContext, model) -> None:
    grid = stages.Drawn(*draw_class_samples(model, 2, seed=0))
    train = torch.cat([torch.rand(5, 3, 8, 8) * 2 - 1, grid.images[2:3]])
    distance = stages.nearest_neighbour_check(ctx.paths.results, grid, train, per_class=1, k=4)
    assert distance["min"] == 0.0 and distance["n_samples"] == 4 and distance["n_train"] == 6
    saved = _npz(ctx, "nearest_neighbours")
    assert saved["grid"].shape == (4, 5, 8, 8, 3) and saved["labels"].tolist() == [0, 1, 2, 3]
    assert np.array_equal(saved["grid"][1, 0], saved["grid"][1, 1]), "the copy is its own nearest image"


def test_real_vs_generated_and_the_record(ctx: NotebookContext, model) -> None:
    grid = stages.Drawn(*draw_class_samples(model, 2, seed=0))
    train = torch.rand(12, 3, 8, 8) * 2 - 1
    checks = stages.ReviewerChecks({}, train, [k for k in range(4) for _ in range(3)])
    stages.real_vs_generated(ctx, grid, checks)
    saved = _npz(ctx, "real_vs_generated")
    assert saved["real"].shape == saved["generated"].shape == (4, 2, 8, 8, 3)

    sizes = stages.sampling_sizes(ctx, stages.TemperatureSamples([1.0], 2), stages.Completions(4, 4), [1])
    assert sizes["fid_seeds"] == ctx.seeds(ctx.sizes.fid_seeds) and sizes["completion_rows"] == 4
    course = stages.course_fid(ctx, model, False, "not measured")
    record = SamplingRecord.from_dict(
        {
            "checkpoint": "best.pt",
            "fid": course.fid,
            "reference_checkpoint": None,
            "checks": {},
            "speed": [],
            "sizes": sizes,
        }
    )
    assert record.sizes["temperatures"] == [1.0] and record.extra == {} and record.temperature is None
    chosen = stages.choose_temperature(ctx, model, False)
    with_choice = SamplingRecord.from_dict({**record.to_dict(), "temperature": chosen.record})
    assert with_choice.temperature == chosen.record and with_choice.extra == {}


def test_the_report_draws_what_the_stages_wrote(ctx: NotebookContext, model) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    grid = stages.grid_samples(ctx, model, None)
    stages.temperature_samples(ctx, model, (1.0,))
    stages.completions(ctx, model)
    stages.training_samples(ctx, ctx.paths.runs / "main" / "checkpoints" / "best.pt")
    train = torch.rand(12, 3, 8, 8) * 2 - 1
    stages.nearest_neighbour_check(ctx.paths.results, grid, train, per_class=1)
    stages.real_vs_generated(ctx, grid, stages.ReviewerChecks({}, train, [k // 3 for k in range(12)]))
    for stem in (
        "samples_per_class",
        "samples_temperatures",
        "completions",
        "samples_over_training",
        "nearest_neighbours",
        "real_vs_generated",
    ):
        plt.close(stages.sampling_figure(ctx, stem))
        assert (ctx.paths.figures / f"{stem}.png").is_file()
