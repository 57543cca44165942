"""Committed records hold no absolute path of the machine that wrote them; the runs index matches the runs.

`figures/` and `checkpoints/` are committed: a path like `/home/me/pcnn/build/cpu/runs/main` in them says
nothing to a reader and leaks the builder's machine. The writers name folders instead (`<build>`,
`<checkout>`, `<CPEN455 data>`, relative paths; `pcnn.workflow.runrecord.portable`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from pcnn.training.checkpoint import load_checkpoint, model_state, save_checkpoint
from pcnn.workflow.runrecord import data_label, local_path, machine_roots, portable, provenance, runs_index
from tests.conftest import tiny_model

from ._pipeline import tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
# Absolute paths as they appear in text: a machine's usual top folders, or a Windows drive.
MACHINE_PATH = re.compile(
    r"(?<![\w.~<>-])(/(?:home|root|tmp|work|Users|var|mnt|content|opt|private)/|[A-Za-z]:\\)"
)


def absolute_paths(value: Any, extra: tuple[str, ...] = ()) -> list[str]:
    """Every string in a JSON-like value that is, or contains, an absolute path (or one of `extra`)."""
    found: list[str] = []
    if isinstance(value, str):
        if value.startswith("/") or MACHINE_PATH.search(value) or any(text in value for text in extra):
            found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            found += absolute_paths(item, extra)
    elif isinstance(value, list):
        for item in value:
            found += absolute_paths(item, extra)
    return found


def record_paths(folder: Path, extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Absolute paths in every JSON, JSON-lines, CSV, Markdown and TeX file under `folder`, by file."""
    problems: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".json":
            found = absolute_paths(json.loads(path.read_text()), extra)
        elif path.suffix in (".jsonl", ".csv", ".md", ".tex"):
            text = path.read_text()
            found = MACHINE_PATH.findall(text) + [t for t in extra if t in text]
        else:
            continue
        if found:
            problems[str(path.relative_to(folder))] = found[:3]
    return problems


# ------------------------------------------------------------------------------------------- portable


def test_portable_names_each_folder_and_keeps_other_values() -> None:
    roots = {
        "/srv/me/pcnn/build/cpu": "<build>",
        "/srv/me/pcnn": "<checkout>",
        "/data/cpen455": "<CPEN455 data>",
        "/srv/cwd": "",
    }
    record = {
        "checkpoint": "/srv/me/pcnn/build/cpu/runs/main/checkpoints/best.pt",
        "reference": "/srv/me/pcnn/checkpoints/reference.pt",
        "data": ["/data/cpen455", "/data/cpen455/test", "--data-dir=/data/cpen455"],
        "note": "resuming /srv/me/pcnn/build/cpu/runs/main at step 3",
        "typed": "/srv/cwd/runs/a",
        "cwd": "/srv/cwd",
        "other": "/opt/elsewhere/kernel.json",
        "not_inside": "/srv/me/pcnn2/x and /x/srv/me/pcnn/y",
        "numbers": [1, 2.5, None, True],
        "unit": "img/s",
    }
    out = portable(record, roots)
    assert out["checkpoint"] == "<build>/runs/main/checkpoints/best.pt"
    assert out["reference"] == "<checkout>/checkpoints/reference.pt"
    assert out["data"] == ["<CPEN455 data>", "<CPEN455 data>/test", "--data-dir=<CPEN455 data>"]
    assert out["note"] == "resuming <build>/runs/main at step 3"
    assert out["typed"] == "runs/a" and out["cwd"] == "."
    assert out["other"] == "<elsewhere>/kernel.json"
    assert out["not_inside"] == record["not_inside"], "a root matches whole path components only"
    assert out["numbers"] == [1, 2.5, None, True] and out["unit"] == "img/s"


def test_local_path_finds_again_what_portable_labelled(tmp_path: Path) -> None:
    roots = machine_roots(checkout=tmp_path / "pcnn", build=tmp_path / "pcnn" / "build")
    for folder in (
        tmp_path / "pcnn" / "figures" / "runs" / "a",
        tmp_path / "pcnn" / "build" / "r",
        tmp_path / "pcnn",
    ):
        assert local_path(portable(str(folder), roots), roots) == folder
    assert local_path("figures/runs/a", roots) == Path("figures/runs/a"), "a relative path stays relative"
    assert local_path("<checkout>x/a", roots) == Path("<checkout>x/a"), "a label is a whole path component"


def test_data_label_says_which_data(tmp_path: Path) -> None:
    from pcnn.datasets import make_synthetic

    synthetic = make_synthetic(tmp_path / "synth", counts={"train": 1, "validation": 1, "test": 1})
    assert data_label(synthetic) == "<synthetic data>"
    assert data_label(tmp_path / "course") == "<CPEN455 data>"
    roots = machine_roots(synthetic, build=tmp_path / "build")
    assert portable(str(tmp_path / "build" / "runs"), roots) == "<build>/runs"


def test_provenance_names_no_folder_of_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "cpen455"
    monkeypatch.chdir(tmp_path)
    program = str(tmp_path / "venv" / "bin" / "pcnn")
    argv = [program, "train", "--data-dir", str(data), "--run-dir", str(tmp_path / "r")]
    monkeypatch.setattr(sys, "argv", argv)
    entry = provenance(torch.device("cpu"), {"data_dir": str(data)})
    assert entry["command"] == ["pcnn", "train", "--data-dir", "<CPEN455 data>", "--run-dir", "r"]
    assert entry["data_dir"] == "<CPEN455 data>"
    assert absolute_paths(entry, (str(tmp_path),)) == []


def test_export_sidecar_names_its_source_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pcnn.reporting.export import export_checkpoint

    model = tiny_model()
    run = tmp_path / "build" / "run"
    run_config = {"train": {"init_checkpoint": str(tmp_path / "build" / "base" / "best.pt")}}
    state = {"model_config": asdict(model.config), "model": model_state(model), "run_config": run_config}
    save_checkpoint(run / "checkpoints" / "best.pt", state)
    monkeypatch.chdir(tmp_path)
    sidecar = export_checkpoint(run.resolve(), tmp_path / "out" / "ref.pt")
    assert sidecar["source"] == "build/run/checkpoints/best.pt"
    exported = load_checkpoint(tmp_path / "out" / "ref.pt")["run_config"]
    assert exported["train"]["init_checkpoint"] == "build/base/best.pt"
    saved = json.loads((tmp_path / "out" / "ref.json").read_text())
    assert absolute_paths(saved, (str(tmp_path),)) == []


def test_publish_rewrites_old_records_and_copies_the_rest_as_they_are(tmp_path: Path) -> None:
    from pcnn.workflow.pipeline import publish

    build = tmp_path / "build" / "cpu"
    (build / "figures").mkdir(parents=True)
    (build / "figures" / "manifest.json").write_text("{}")
    main = build / "runs" / "main"
    main.mkdir(parents=True)
    session = {"command": ["pcnn", "--run-dir", str(main)], "data_dir": str(tmp_path / "elsewhere")}
    old = {"sessions": [session]}
    (main / "provenance.json").write_text(json.dumps(old))
    (main / "train_loss.csv").write_text("step,loss\n1,0.5\n")
    (build / "runs" / "ablation").mkdir()
    (build / "runs" / "ablation" / "ablation.json").write_text('[{"run_dir": "none"}]')
    dest = publish("cpu", tmp_path / "build", tmp_path / "published")
    published = json.loads((dest / "reference_run" / "provenance.json").read_text())["sessions"][0]
    assert published["command"] == ["pcnn", "--run-dir", "<build>/runs/main"]
    assert published["data_dir"] == "<elsewhere>/elsewhere"
    assert (dest / "reference_run" / "train_loss.csv").read_text() == "step,loss\n1,0.5\n"
    unchanged = '[{"run_dir": "none"}]'
    assert (dest / "ablation.json").read_text() == unchanged, "a record without paths keeps its bytes"


def _finished_run(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A run folder, an evaluation folder and a sweep folder inside a checkout `tmp_path/repo`, whose
    records name the checkout and the data folder `tmp_path/data` by their absolute paths."""
    checkout, data = tmp_path / "repo", tmp_path / "data"
    run = checkout / "build" / "run"
    run.mkdir(parents=True)
    command = ["pcnn", "finetune", "--checkpoint", str(checkout / "checkpoints" / "reference.pt")]
    (run / "provenance.json").write_text(
        json.dumps({"sessions": [{"command": command, "data_dir": str(data)}]})
    )
    (run / "config.json").write_text(json.dumps({"train": {"init_checkpoint": str(checkout / "c.pt")}}))
    (run / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "val_accuracy": 0.5, "data": str(data)}) + "\n"
    )
    (run / "train_loss.csv").write_text("step,loss\n1,0.5\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    evaluation, sweep = checkout / "build" / "eval", checkout / "build" / "judged"
    evaluation.mkdir()
    (evaluation / "validation_metrics.json").write_text(
        json.dumps({"accuracy": 0.75, "checkpoint": str(run)})
    )
    (evaluation / "validation_log_likelihoods.csv").write_text("image,ll\n")
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"checkpoint": str(run / "checkpoints" / "last.pt")}))
    (sweep / "samples_T1.png").write_bytes(b"png")
    return checkout, run, evaluation, sweep


def test_publish_run_copies_the_records_portable_and_refreshes_the_index(tmp_path: Path) -> None:
    from pcnn.workflow.publish import publish_run

    checkout, run, evaluation, sweep = _finished_run(tmp_path)
    runs = tmp_path / "figures" / "runs"
    (runs / "older").mkdir(parents=True)
    (runs / "older" / "metrics.jsonl").write_text(json.dumps({"epoch": 3}) + "\n")
    (runs / "README.md").write_text(runs_index(runs))
    dest = runs / "new_run"
    publish_run(
        run,
        dest,
        evaluation=evaluation,
        sweep=sweep,
        data_root=tmp_path / "data",
        checkout=checkout,
        title="A test",
    )
    names = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert names == sorted(
        [
            "README.md",
            "config.json",
            "provenance.json",
            "metrics.jsonl",
            "train_loss.csv",
            "validation_metrics.json",
            "judged/sweep.json",
            "judged/samples_T1.png",
        ]
    ), "records only: no checkpoint, no per-image log-likelihoods"
    assert record_paths(dest, (str(tmp_path),)) == {}
    session = json.loads((dest / "provenance.json").read_text())["sessions"][0]
    assert session["command"][-1] == "checkpoints/reference.pt" and session["data_dir"] == "<CPEN455 data>"
    assert json.loads((dest / "metrics.jsonl").read_text())["data"] == "<CPEN455 data>"
    assert (
        json.loads((dest / "judged" / "sweep.json").read_text())["checkpoint"]
        == "build/run/checkpoints/last.pt"
    )
    assert (dest / "train_loss.csv").read_bytes() == (run / "train_loss.csv").read_bytes()
    readme = (dest / "README.md").read_text()
    assert readme.startswith("# A test\n") and "pcnn finetune --checkpoint checkpoints/reference.pt" in readme
    index = (runs / "README.md").read_text()
    assert index == runs_index(runs) and "[`new_run/`]" in index and "75.0" in index

    (dest / "README.md").write_text("# Written by hand\n")
    publish_run(run, dest, checkout=checkout)
    assert (dest / "README.md").read_text() == "# Written by hand\n", "an existing README is the author's"


def test_publish_run_refuses_folders_that_are_not_what_they_claim(tmp_path: Path) -> None:
    from pcnn.workflow.publish import PublishError, publish_run

    checkout, run, evaluation, sweep = _finished_run(tmp_path)
    with pytest.raises(PublishError, match="not a run folder"):
        publish_run(evaluation, tmp_path / "out", checkout=checkout)
    with pytest.raises(PublishError, match="temperature_sweep"):
        publish_run(run, tmp_path / "out", sweep=evaluation, checkout=checkout)
    with pytest.raises(PublishError, match="pcnn evaluate"):
        publish_run(run, tmp_path / "out", evaluation=sweep, checkout=checkout)
    proc = subprocess.run(
        [sys.executable, "-m", "pcnn.runrecord", "publish", str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "is not a run folder" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for a refused publish"


# ---------------------------------------------------------------------------------- committed records


def test_committed_records_hold_no_absolute_path() -> None:
    problems = {
        **{f"figures/{k}": v for k, v in record_paths(ROOT / "figures").items()},
        **{f"checkpoints/{k}": v for k, v in record_paths(ROOT / "checkpoints").items()},
    }
    assert problems == {}


def test_committed_manifest_hashes_match_the_files() -> None:
    import hashlib

    manifest = json.loads((ROOT / "figures" / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((ROOT / "figures" / name).read_bytes()).hexdigest() == digest, name


def test_runs_index_is_generated_from_the_runs() -> None:
    folder = ROOT / "figures" / "runs"
    assert (folder / "README.md").read_text() == runs_index(folder), (
        "figures/runs/README.md drifted from the runs' records: python -m pcnn.runrecord figures/runs"
    )
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert runs and all((p / "metrics.jsonl").is_file() and (p / "README.md").is_file() for p in runs)
    assert not list((ROOT / "figures").glob("cpu_run_*")), "training runs live under figures/runs/"


def test_runs_index_refuses_a_missing_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pcnn.runrecord", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "is not a folder" in proc.stderr


# ------------------------------------------------------------------------------------------- pipeline


@pytest.mark.slow
def test_pipeline_records_hold_no_absolute_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pcnn.workflow.pipeline import publish

    build = tiny_pipeline(tmp_path_factory.mktemp("pipeline"))
    machine = (str(Path(build["build"]).parents[1]), str(Path.home()))  # the test's tmp root and home
    figures = Path(build["figures"])
    assert record_paths(figures, machine) == {}
    runs = Path(build["build"]) / "runs"
    for record in (runs / "ablation" / "ablation.json", runs / "main" / "provenance.json"):
        assert absolute_paths(json.loads(record.read_text()), machine) == [], record
    results = json.loads((figures / "results.json").read_text())
    assert results["meta"]["data_dir"] == "<synthetic data>"
    assert results["training"]["checkpoint"].startswith("<build>/runs/")
    published = publish("smoke", Path(build["build"]).parent, tmp_path_factory.mktemp("published"))
    assert record_paths(published, machine) == {}
