"""Where the data lives: a given folder, ``$PCNN_DATA_DIR``, else the built-in synthetic set."""

from __future__ import annotations

import os
from pathlib import Path

from pcnn.datasets.layout import DataError
from pcnn.datasets.synthetic import make_synthetic, synthetic_data_dir

DATA_DIR_ENV = "PCNN_DATA_DIR"


def default_data_dir() -> Path:
    """``$PCNN_DATA_DIR`` if set, else the built-in synthetic set (generated on first use)."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return make_synthetic(synthetic_data_dir())


def resolve_data_dir(arg: str | Path | None) -> Path:
    """The data root to use: ``arg`` if given, else ``default_data_dir()``; checked for the split files."""
    if arg is not None:
        root, source = Path(arg).expanduser(), "given data directory"
    elif os.environ.get(DATA_DIR_ENV):
        root, source = default_data_dir(), f"${DATA_DIR_ENV}"
    else:
        root, source = default_data_dir(), "default synthetic data directory"
    missing = [name for name in ("train.csv", "validation.csv") if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root} ({source}): no {' or '.join(missing)}; expected the CPEN455 course layout")
    return root
