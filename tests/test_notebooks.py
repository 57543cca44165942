"""The six notebooks run headless (papermill) on a tiny smoke profile and write their declared figures."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest

from pcnn.workflow.pipeline import (
    NOTEBOOKS,
    Notebook,
    PipelineError,
    execute_notebook,
    missing_outputs,
    stage_sizes,
)

from ._pipeline import tiny_pipeline

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETERS = {"profile", "data_dir", "build_root", "run_dir", "figures_dir", "seed", "device", "sizes"}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return tiny_pipeline(tmp_path_factory.mktemp("pipeline"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_parameters_cell_declares_the_pipeline_parameters(notebook: Notebook) -> None:
    nb = jupytext.read(NOTEBOOK_DIR / f"{notebook.name}.py")
    cells = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    names: dict = {}
    exec(cells[0].source, {}, names)  # noqa: S102 - our own notebook source
    assert PARAMETERS <= set(names)
    assert names["profile"] is None and names["data_dir"] is None and names["device"] == "auto"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0] is cells[0], "the parameters cell comes first"
    assert code[1].metadata.get("tags") == ["setup"], "the setup cell follows it (it uses the parameters)"


def test_stage_sizes_reject_unknown_names() -> None:
    assert stage_sizes("smoke").ablation_budget == {"max_steps": 24}
    with pytest.raises(ValueError, match="unknown stage size"):
        stage_sizes("smoke", {"no_such_size": 1})


def test_every_profile_carries_its_stage_sizes_in_the_config() -> None:
    from pcnn import config
    from pcnn.workflow import pipeline

    assert pipeline.StageSizes is config.StageSizes and pipeline.stage_sizes is config.stage_sizes
    for name in config.PROFILES:
        assert isinstance(config.stage_sizes(name), config.StageSizes)
    assert config.stage_sizes("long") == config.stage_sizes("cpu"), "long measures its model as cpu does"
    assert config.stage_sizes("smoke", {"eval_subset": 8}).eval_subset == 8
    with pytest.raises(ValueError, match="unknown profile"):
        config.stage_sizes("no_such_profile")


def test_seed_ablation_runs_the_reduced_model_on_an_epoch_budget() -> None:
    from pcnn.config import profile
    from pcnn.workflow.ablate import variant_config
    from pcnn.workflow.pipeline import NotebookContext

    def ablation_base(name: str):
        fields = dict(paths=None, device="cpu", data_root=Path(), data_source="synthetic", seed=0)
        ctx = NotebookContext(profile=name, sizes=stage_sizes(name), config=profile(name), **fields)
        return ctx.ablation_config

    sizes = stage_sizes("seed")
    config = variant_config(
        ablation_base("seed"), "film", sizes.ablation_budget, seed=0, eval_subset=0, polyak_decay=0.999
    )
    assert (config.model.nr_filters, config.model.nr_logistic_mix) == (40, 10)
    assert config.train.epochs <= 50 and config.model.conditioning == "film"
    assert profile("seed").train.max_minutes > 0, "the seed profile has a time budget"
    assert ablation_base("cpu") == profile("cpu") and ablation_base("smoke") == profile("smoke")


def test_wide_and_deep_share_long_schedule_and_ablate_its_40_filter_network() -> None:
    import dataclasses

    from pcnn.config import apply_overrides, profile
    from pcnn.training.optimizer import lr_at

    wide, long = profile("wide"), profile("long")
    assert wide.model == dataclasses.replace(long.model, nr_filters=80)
    changed = {
        f.name
        for f in dataclasses.fields(wide.train)
        if getattr(wide.train, f.name) != getattr(long.train, f.name)
    }
    assert changed == {"epochs", "max_minutes", "last_checkpoint_minutes"}
    # its 60 epochs are the first 60 of long's 80, so a long run with 80 filters stopped at 60 is this profile
    assert wide.train.epochs < long.train.epochs
    assert [lr_at(wide.train, e) for e in range(wide.train.epochs)] == [
        lr_at(long.train, e) for e in range(60)
    ]
    ablated = apply_overrides(wide, stage_sizes("wide").ablation_overrides)
    assert ablated.model == long.model
    # `deep` is `wide` with a second resnet block per stage, trained past the end of long's 80 epochs on the
    # same decay (so its first 80 epochs are long's schedule), with the budget that this takes; its
    # ablation is `wide`'s
    deep = profile("deep")
    assert deep.model == dataclasses.replace(wide.model, nr_resnet=2)
    budget = {"epochs": deep.train.epochs, "max_minutes": deep.train.max_minutes}
    assert deep.train == dataclasses.replace(wide.train, **budget)
    assert deep.train.epochs > long.train.epochs and deep.train.max_minutes > wide.train.max_minutes
    assert [lr_at(deep.train, e) for e in range(long.train.epochs)] == [
        lr_at(long.train, e) for e in range(long.train.epochs)
    ]
    assert apply_overrides(deep, stage_sizes("deep").ablation_overrides).model == long.model


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_ran_and_wrote_its_declared_figures(build: dict, notebook: Notebook) -> None:
    executed = Path(build["build"]) / "notebooks" / f"{notebook.name}.ipynb"
    assert executed.is_file()
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = Path(build["figures"])
    assert missing_outputs(notebook, figures) == []
    for stem in notebook.figures:
        for ext in ("pdf", "png"):
            path = figures / f"{stem}.{ext}"
            assert path.stat().st_size > 0 and path.stat().st_mtime >= build["started_at"] - 1


@pytest.mark.slow
def test_results_hold_no_invented_fid(build: dict) -> None:
    results = json.loads((Path(build["figures"]) / "results.json").read_text())
    assert results["meta"]["profile"] == "smoke" and results["meta"]["data_source"] == "synthetic"
    fid = results["sampling"]["fid"]
    if fid["available"]:
        assert fid["course"]["model"]["mean"] > 0 and fid["course"]["floor"]["mean"] > 0
    else:
        assert "course" not in fid and "no Inception weights" in fid["note"]
    assert {row["name"] for row in results["ablation"]} >= {"none", "gated-bias", "gated-bias+polyak"}
    assert next(r for r in results["ablation"] if r["name"] == "none")["val_accuracy"] is None


@pytest.mark.slow
def test_a_failing_cell_names_the_notebook_and_the_cell(tmp_path: Path) -> None:
    (tmp_path / "99_broken.py").write_text(
        '# %% tags=["parameters"]\nprofile = "smoke"\n\n# %%\nx = 1\n\n# %%\nraise ValueError("boom")\n'
    )
    params = {"profile": "smoke", "figures_dir": str(tmp_path / "figures")}
    with pytest.raises(PipelineError, match=r"notebook 99_broken failed in cell \d+ .*ValueError: boom"):
        execute_notebook(Notebook("99_broken", ()), params, tmp_path / "out", notebooks_dir=tmp_path)
    assert (tmp_path / "out" / "99_broken.ipynb").is_file()


def test_publish_copies_figures_run_record_and_ablation(tmp_path: Path) -> None:
    from pcnn.workflow.pipeline import RUN_RECORD_FILES, publish

    build = tmp_path / "build" / "cpu"
    (build / "figures").mkdir(parents=True)
    (build / "figures" / "manifest.json").write_text("{}")
    (build / "figures" / "ablation.pdf").write_bytes(b"%PDF")
    (build / "runs" / "main").mkdir(parents=True)
    for name in RUN_RECORD_FILES:
        (build / "runs" / "main" / name).write_text(name)
    (build / "runs" / "ablation").mkdir()
    (build / "runs" / "ablation" / "ablation.json").write_text("[]")
    dest = publish("cpu", tmp_path / "build", tmp_path / "published")
    assert (dest / "ablation.pdf").is_file() and (dest / "ablation.json").read_text() == "[]"
    assert sorted(p.name for p in (dest / "reference_run").iterdir()) == sorted(RUN_RECORD_FILES)
    with pytest.raises(PipelineError, match="no finished build"):
        publish("seed", tmp_path / "build", tmp_path / "elsewhere")
