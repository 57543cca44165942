"""The notebooks' setup cell: what it decides on Colab (mocked) and elsewhere, and the cell itself run in
a fresh environment against a local clone, where notebook 02 finds 01's results in the persistent folder."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import jupytext
import pytest
import torch

from pcnn import datasets as data
from pcnn.datasets import download, synthetic
from pcnn.workflow import colab

REPO = Path(__file__).resolve().parents[1]
SMALL = {"train": 4, "validation": 2, "test": 2}


@pytest.fixture
def on_colab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """A Colab kernel: `google.colab.drive` importable (mounts recorded), Drive and /content under tmp."""
    mounts: list[str] = []
    drive = types.SimpleNamespace(mount=lambda path: mounts.append(path) or Path(path).mkdir(parents=True))
    package = types.ModuleType("google.colab")
    package.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setattr(colab, "DRIVE_MOUNT", tmp_path / "drive")
    monkeypatch.setattr(colab, "COLAB_DATA_DIR", tmp_path / "content" / "data" / "cpen455")
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    return mounts


def fake_fetch(calls: list[Path], *, broken: bool = False):
    """Stands in for `pcnn.datasets.fetch` (no network): writes a small course-layout set where asked."""

    def fetch(dest: Path, **_) -> Path:
        calls.append(Path(dest))
        root = data.make_synthetic(dest, counts=SMALL)
        if broken:
            (root / "validation.csv").write_text("validation/missing.jpg,0\n")
        return root

    return fetch


def test_profile_is_seed_with_a_cuda_gpu_and_smoke_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert colab.default_profile("auto")[0] == "seed"
    assert colab.default_profile("cpu")[0] == "smoke"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    profile, why = colab.default_profile("auto")
    assert profile == "smoke" and "needs a CUDA GPU" in why


def test_on_colab_the_course_data_is_fetched_checked_and_drive_is_the_build_root(
    on_colab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(download, "fetch", fake_fetch(calls))
    runtime = colab.setup_runtime("smoke", device="cpu")
    assert calls == [colab.COLAB_DATA_DIR] and runtime.data_dir == str(colab.COLAB_DATA_DIR)
    assert on_colab == [str(colab.DRIVE_MOUNT)]
    build = colab.DRIVE_MOUNT / "MyDrive" / "pcnn" / "build" / "smoke"
    assert (runtime.run_dir, runtime.figures_dir) == (str(build / "runs"), str(build / "figures"))


def test_on_colab_a_failed_fetch_stops_rather_than_using_the_synthetic_set(
    on_colab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(dest: Path, **_) -> Path:
        raise data.DataError("no network")

    monkeypatch.setattr(download, "fetch", offline)
    monkeypatch.setattr(synthetic, "make_synthetic", lambda *a, **k: pytest.fail("fell back to synthetic"))
    with pytest.raises(data.DataError, match=r'no network.*data_dir = "synthetic"'):
        colab.setup_runtime("smoke", device="cpu")


def test_on_colab_problems_in_the_fetched_data_stop_the_notebook(
    on_colab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "fetch", fake_fetch([], broken=True))
    with pytest.raises(data.DataError, match=r"problem\(s\) in the fetched course data"):
        colab.setup_runtime("smoke", device="cpu")


def test_on_colab_a_given_data_root_or_build_root_is_used_as_given(
    on_colab: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(download, "fetch", lambda *a, **k: pytest.fail("fetched although data_dir was given"))
    runtime = colab.setup_runtime(
        "cpu", data_dir=str(tmp_path / "mine"), build_root=str(tmp_path / "b"), figures_dir="f", device="cpu"
    )
    assert on_colab == [], "Drive is not mounted when a build root is given"
    assert runtime == ("cpu", str(tmp_path / "mine"), str(tmp_path / "b" / "cpu" / "runs"), "f")
    monkeypatch.setattr(download, "fetch", fake_fetch([]))
    assert colab.setup_runtime("cpu", run_dir="r", figures_dir="f", device="cpu")[2:] == ("r", "f")
    assert on_colab == [], "nor when both of its folders are"


def test_synthetic_is_a_choice_by_name_and_elsewhere_none_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(colab, "on_colab", lambda: False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(synthetic, "synthetic_data_dir", lambda: tmp_path / "synthetic")
    monkeypatch.setattr(synthetic, "make_synthetic", lambda root: Path(root))
    assert colab.setup_runtime("smoke", data_dir=colab.SYNTHETIC, device="cpu").data_dir == str(
        tmp_path / "synthetic"
    )
    assert colab.setup_runtime("smoke", device="cpu") == ("smoke", None, None, None)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert colab.resolve_data(None, colab=True) == (None, f"${data.DATA_DIR_ENV}")


def test_the_setup_cell_names_the_placeholder_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = colab.SETUP_CELL.replace(colab.REPOSITORY_URL, "https://github.com/OWNER/pcnn")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # a runtime without pcnn
    with pytest.raises(RuntimeError, match="REPO_URL is still the placeholder .*your fork"):
        exec(cell, {})  # noqa: S102 - our own cell


def test_write_setup_cells_rewrites_stale_cells_and_requires_one(tmp_path: Path) -> None:
    stale = '# %% tags=["parameters"]\nprofile = None\n\n# %% tags=["setup"]\nold = 1\n\n# %%\nx = 1\n'
    (tmp_path / "00_a.py").write_text(stale)
    assert colab.write_setup_cells(tmp_path) == [tmp_path / "00_a.py"]
    cells = jupytext.read(tmp_path / "00_a.py").cells
    assert [c.source for c in cells] == ["profile = None", colab.SETUP_CELL, "x = 1"]
    assert colab.write_setup_cells(tmp_path) == []
    (tmp_path / "01_b.py").write_text("# %%\nx = 1\n")
    with pytest.raises(ValueError, match="01_b.py: expected one cell tagged 'setup'"):
        colab.write_setup_cells(tmp_path)


# ------------------------------------------------------------------- the cell in a fresh environment


def snapshot_checkout(dest: Path) -> str:
    """A git repository holding this working tree (tracked and untracked, not ignored): the 'published'
    repository that the setup cell clones, as a file:// URL."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *args], cwd=dest, check=True)
    return dest.as_uri()


def fresh_runtime(root: Path) -> Path:
    """A new virtual environment without pcnn; torch and the other dependencies come from this one's
    site-packages through a path file (its pcnn is an editable finder that such a path does not load)."""
    root.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


# A valid training record (the committed one) naming a checkpoint that notebook 02 only prints.
TRAINING_RECORD = {
    **json.loads((REPO / "figures" / "results.json").read_text())["training"],
    "checkpoint": "written-by-01",
}


def notebook_script(name: str, repo_url: str, parameters: dict[str, str], then: str) -> str:
    """The parameters cell, the injected parameters (as papermill writes them), the setup cell with the
    repository URL set, and the notebook's first code cell, followed by `then`."""
    cells = [c for c in jupytext.read(REPO / "notebooks" / f"{name}.py").cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in cells]
    assert tags[:2] == [["parameters"], ["setup"]]
    assert cells[1].source == colab.SETUP_CELL
    setup = cells[1].source.replace(colab.REPOSITORY_URL, repo_url)
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    return "\n\n".join([cells[0].source, injected, setup, cells[2].source, then]) + "\n"


def run_in(python: Path, cwd: Path, script: str) -> str:
    cwd.mkdir(exist_ok=True)
    (cwd / "notebook.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
        PIP_NO_INDEX="1",  # no network: every dependency is installed already
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this as --no-build-isolation; setuptools is installed
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        OMP_WAIT_POLICY="PASSIVE",
        MPLBACKEND="Agg",
    )
    done = subprocess.run(
        [str(python), "notebook.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_setup_cell_clones_installs_and_carries_results_between_runtimes(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    url = snapshot_checkout(tmp_path / "published")
    drive = tmp_path / "drive"  # the persistent folder; everything else belongs to one runtime

    first = fresh_runtime(tmp_path / "runtime1")
    output = run_in(
        first,
        tmp_path / "runtime1" / "content",
        notebook_script(
            "01_training",
            url,
            {"data_dir": colab.SYNTHETIC, "build_root": str(drive)},
            f'write_result(ctx.paths, "training", {TRAINING_RECORD!r})\nprint(ctx.data_root)',
        ),
    )
    print(output)  # the setup cell's output, for the record
    checkout = tmp_path / "runtime1" / "content" / colab.CHECKOUT
    assert f"setup: pcnn 0.1.0 from {checkout}" in output, "pcnn was not installed from the fresh clone"
    assert "setup: profile smoke (device cpu: the seed profile needs a CUDA GPU)" in output
    assert f"setup: runs {drive / 'smoke' / 'runs'} (under the build root given)" in output
    assert "setup: data " in output and "(the synthetic set, chosen explicitly)" in output
    assert (drive / "smoke" / "runs" / "results" / "training.json").is_file()
    synthetic = output.strip().splitlines()[-1]

    second = fresh_runtime(tmp_path / "runtime2")  # a reconnect: a new machine, the same Drive
    output = run_in(
        second,
        tmp_path / "runtime2" / "content",
        notebook_script("02_finetuning", url, {"data_dir": synthetic, "build_root": str(drive)}, ""),
    )
    assert f"from {tmp_path / 'runtime2' / 'content' / colab.CHECKOUT}" in output
    assert "base checkpoint: written-by-01" in output
