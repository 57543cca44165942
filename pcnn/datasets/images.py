"""Image decoding: every file fully decoded to uint8 RGB, and corrupt or truncated files named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pcnn.datasets.layout import DataError


def decode_rgb(path: Path) -> np.ndarray:
    """Fully decode an image file to an (H, W, 3) uint8 array; DataError(reason) on any failure."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("image file is missing") from None
    except OSError as exc:
        raise DataError(f"cannot read image file ({exc})") from exc
    # PIL accepts a baseline JPEG whose end-of-image marker is cut off without complaint, so check it.
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise DataError("truncated JPEG (no end-of-image marker)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    return np.asarray(rgb, dtype=np.uint8)


def load_image_uint8(path: Path | str) -> torch.Tensor:
    """Decode an image to a (3, H, W) uint8 RGB tensor; grayscale and alpha images become plain RGB.

    The alpha channel, if any, is dropped. Corrupt or truncated files raise DataError naming the path.
    """
    path = Path(path)
    try:
        array = decode_rgb(path)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
