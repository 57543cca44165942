"""The committed .ipynb (for Colab) must match the reviewed jupytext sources cell for cell, ask Colab for a
GPU, and carry the one setup cell generated from pcnn/workflow/colab.py."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

from pcnn.workflow.colab import SETUP_CELL, SETUP_TAG

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))


def test_all_six_notebooks_are_checked() -> None:
    assert len(NOTEBOOKS) == 6


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_in_sync_with_py(source: Path) -> None:
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `make notebooks`"
    expected = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    actual = [(c.cell_type, c.source) for c in jupytext.read(paired).cells]
    assert actual == expected, f"{paired.name} has drifted from {source.name}: run `make notebooks`"


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_asks_colab_for_a_gpu(source: Path) -> None:
    metadata = jupytext.read(source.with_suffix(".ipynb")).metadata
    assert metadata.get("accelerator") == "GPU" and metadata.get("colab", {}).get("gpuType"), (
        f"{source.with_suffix('.ipynb').name} does not request a GPU runtime: run `make notebooks`"
    )


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_is_the_generated_one(source: Path) -> None:
    cells = [c for c in jupytext.read(source).cells if SETUP_TAG in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{source.name}: expected one cell tagged '{SETUP_TAG}'"
    assert cells[0].source == SETUP_CELL, (
        f"{source.name}: the setup cell differs from pcnn/workflow/colab.py: "
        "run `python -m pcnn.workflow.colab` and `make notebooks`"
    )
