"""The committed .ipynb (for Colab) must match the reviewed jupytext sources cell for cell."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_in_sync_with_py(source: Path) -> None:
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `make notebooks`"
    expected = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    actual = [(c.cell_type, c.source) for c in jupytext.read(paired).cells]
    assert actual == expected, f"{paired.name} has drifted from {source.name}: run `make notebooks`"
