"""The package layout: old module paths are the new modules (imports, `-m`, patches, pickles), importing
`pcnn` stays light, and the thin core holds no machinery."""

from __future__ import annotations

import importlib
import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pcnn import _aliases

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "pcnn" / "core"
# What `pcnn.core` must not pull in: compilation, C calls, plotting, processes.
FORBIDDEN = (
    "torch._dynamo",
    "torch._inductor",
    "ctypes",
    "matplotlib",
    "multiprocessing",
    "torch.multiprocessing",
)


def _python(code: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, "-c", code] if code else [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize("old", sorted(_aliases.ALIASES))
def test_an_old_path_is_the_new_module(old: str) -> None:
    new = _aliases.ALIASES[old]
    module = importlib.import_module(old)
    assert module is importlib.import_module(new) is sys.modules[old] is sys.modules[new]
    assert module.__name__ == new and module.__spec__.name == new, "the module keeps its own name and spec"
    parent, _, child = old.rpartition(".")
    assert getattr(sys.modules[parent], child) is module


def test_submodules_of_an_old_package_path_follow_it() -> None:
    import pcnn.fid.course

    import pcnn.evaluation.fid.course

    assert pcnn.fid.course is pcnn.evaluation.fid.course
    assert _aliases.resolve("pcnn.fid.weights") == "pcnn.evaluation.fid.weights"
    assert _aliases.resolve("pcnn.config") is None and _aliases.resolve("pcnn.core.model") is None


def test_old_paths_are_attributes_of_the_package() -> None:
    import pcnn

    assert pcnn.sample is importlib.import_module("pcnn.sampling.sample")
    with pytest.raises(AttributeError):
        pcnn.no_such_module  # noqa: B018


def test_a_patch_through_an_old_path_patches_what_the_code_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcnn.fast import convgrad

    monkeypatch.setattr("pcnn.convgrad.MIN_PIXELS", 7)
    assert convgrad.MIN_PIXELS == 7
    monkeypatch.setattr("pcnn.train_data.epoch_order", lambda *args: [0])
    from pcnn.datasets import train_data

    assert train_data.epoch_order() == [0]


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("pcnn.model", "PixelCNNPP", "pcnn.core.model"),
        ("pcnn.train", "_helper_part", "pcnn.training.step"),
        ("pcnn.core_parallel", "CoreParallel", "pcnn.fast.core_parallel"),
        ("pcnn.fid.weights", "ensure_inception_weights", "pcnn.evaluation.fid.weights"),
    ],
)
def test_pickles_naming_an_old_path_load(old: str, name: str, new: str) -> None:
    loaded = pickle.loads(f"c{old}\n{name}\n.".encode())  # a GLOBAL reference, as older pickles hold
    assert loaded is getattr(importlib.import_module(new), name)


def test_importing_pcnn_imports_no_more_than_before() -> None:
    result = _python("import json, sys, pcnn; print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    ours = {name for name in modules if name.startswith("pcnn")}
    assert ours == {
        "pcnn",
        "pcnn._aliases",
        "pcnn.config",
        "pcnn.core",
        "pcnn.core.layers",
        "pcnn.core.model",
        "pcnn.training",
        "pcnn.training.checkpoint",
    }
    assert "matplotlib" not in modules and "torch._dynamo" not in modules


def test_the_core_imports_no_machinery() -> None:
    names = sorted(f"pcnn.core.{path.stem}" for path in CORE.glob("*.py"))
    code = (
        "import json, sys, torch, pcnn; before = set(sys.modules); "
        f"[__import__(name) for name in {names!r}]; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    assert [name for name in added if name.startswith(FORBIDDEN)] == []
    assert {name for name in added if name.startswith("pcnn")} == set(names) - {
        "pcnn.core.layers",
        "pcnn.core.model",
    }


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda path: path.name)
def test_the_core_sources_use_no_machinery(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"torch\.compile\s*\(", text), "torch.compile belongs in pcnn.fast or pcnn.training"
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", text, flags=re.M)
    assert [name for name in imports if name.startswith(FORBIDDEN)] == []
    ours = [name for name in imports if name.startswith("pcnn")]
    assert all(name.startswith(("pcnn.core", "pcnn.config")) for name in ours), ours


@pytest.mark.parametrize(
    "module",
    ["pcnn.pipeline", "pcnn.runrecord", "pcnn.report", "pcnn.temperature_sweep", "pcnn.gpu_smoke", "pcnn"],
)
def test_old_paths_run_with_dash_m(module: str) -> None:
    result = _python("", "-m", module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_package_map_runs_with_dash_m() -> None:
    from pcnn.reporting import package_map

    result = _python("", "-m", "pcnn.package_map")
    assert result.returncode == 0, result.stderr
    assert result.stdout == package_map.package_map() + "\n"


def test_colab_runs_with_dash_m(tmp_path: Path) -> None:
    """`python -m pcnn.colab` in a checkout rewrites a stale setup cell."""
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "report").mkdir()
    (tmp_path / "notebooks").mkdir()
    notebook = tmp_path / "notebooks" / "00_data_exploration.py"
    shutil.copy(REPO / "notebooks" / notebook.name, notebook)
    fresh = notebook.read_text()
    notebook.write_text(fresh.replace("import setup_runtime", "import  setup_runtime"))
    result = _python("", "-m", "pcnn.colab", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert notebook.read_text() == fresh
