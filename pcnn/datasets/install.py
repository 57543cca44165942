"""Putting a finished data folder in place: a rename, so that a root is never seen half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pcnn.datasets.layout import DataError


def install_folder(staging: Path, root: Path, replaceable: Callable[[Path], bool]) -> None:
    """Rename ``staging`` to ``root``, replacing an empty or ``replaceable`` root, tolerating races."""
    if root.exists():
        if any(root.iterdir()):
            if not replaceable(root):
                raise DataError(f"{root}: folder is not empty; refusing to overwrite it")
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / "data")
            shutil.rmtree(old, ignore_errors=True)
        else:
            root.rmdir()
    try:
        os.replace(staging, root)
    except OSError:
        if not root.exists():  # a concurrent writer may have installed the same set first
            raise
