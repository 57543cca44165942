"""Inception features of images and of image folders, read exactly as pytorch-fid reads them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from pcnn.evaluation.fid.weights import ensure_inception_weights

# The file extensions pytorch-fid's `calculate_fid_given_paths` globs for.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})


def inception_model(dims: int = 2048, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (eval mode) returning the block of `dims` features (64, 192, 768, 2048).

    The weights file is made to exist first, so pytorch-fid's loader reads it from the hub cache and
    never touches the network. Inputs are images in [0, 1]; the model resizes to 299 and normalises.
    """
    from pytorch_fid.inception import InceptionV3

    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(f"dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    ensure_inception_weights()
    block = InceptionV3.BLOCK_INDEX_BY_DIM[dims]
    model = InceptionV3([block], resize_input=True, normalize_input=True, use_fid_inception=True)
    return model.eval().to(device)


_MODEL_CACHE: dict[tuple[int, str], torch.nn.Module] = {}


def standard_model(dims: int, device: str | torch.device) -> torch.nn.Module:
    """One Inception per (dims, device) per process: loading the 95 MB weights takes seconds."""
    key = (dims, str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = inception_model(dims, device)
    return _MODEL_CACHE[key]


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder` (no recursion), sorted, as pytorch-fid selects them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def _load_rgb_float(path: Path) -> torch.Tensor:
    """pytorch-fid's loading: PIL, convert("RGB"), pixel / 255 as float32 (3, H, W)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_image_folder(folder: str | Path) -> torch.Tensor:
    """All images of a folder as a uint8 tensor (N, 3, H, W) (they must share one size)."""
    files = list_image_files(folder)
    if not files:
        raise ValueError(f"no image files in {folder}")
    images = []
    for path in files:
        with Image.open(path) as im:
            images.append(
                torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
            )
    sizes = {tuple(t.shape) for t in images}
    if len(sizes) != 1:
        raise ValueError(f"images in {folder} have different sizes: {sorted(sizes)}")
    return torch.stack(images)


def _forward(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    """One batch through the Inception block, spatially averaged where the block is not 1x1."""
    pred = model(batch)[0]
    if pred.shape[2] != 1 or pred.shape[3] != 1:
        pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
    return pred.flatten(1).cpu().numpy().astype(np.float64)


@torch.no_grad()
def image_features(
    images: torch.Tensor | Sequence[str | Path],
    model: torch.nn.Module,
    *,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "Inception features",
) -> np.ndarray:
    """Inception features [N, dims] (float64) of uint8 images (N, 3, H, W) or of image files.

    Files are read as pytorch-fid reads them (RGB, pixel / 255); a uint8 tensor is scaled the same
    way, so a tensor and its losslessly saved files give the same features. Batches go to `device`
    (default: where the model's parameters are).
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    is_tensor = isinstance(images, torch.Tensor)
    if is_tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise TypeError(f"expected a uint8 tensor (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        n = images.shape[0]
    else:
        paths = [Path(p) for p in images]
        n = len(paths)
    if n == 0:
        raise ValueError("no images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.eval()
    out: list[np.ndarray] = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if is_tensor:
                chunk = [images[start:stop].float().div(255.0)]
            else:
                tensors = [_load_rgb_float(p) for p in paths[start:stop]]
                if len({tuple(t.shape) for t in tensors}) == 1:
                    chunk = [torch.stack(tensors)]
                else:  # mixed sizes: the model resizes each image to 299 on its own
                    chunk = [t.unsqueeze(0) for t in tensors]
            for batch in chunk:
                out.append(_forward(model, batch.to(device)))
            bar.update(stop - start)
    return np.concatenate(out, axis=0)


_PATH_FEATURE_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def folder_features(
    folder: str | Path,
    dims: int,
    model: torch.nn.Module | None,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
) -> np.ndarray:
    """Features of a folder's images; with the standard model, cached per process by file identity.

    The course's test folder is scored against every seed's samples; caching avoids recomputing it.
    """
    files = list_image_files(folder)
    if not files:
        raise ValueError(f"no image files (extensions {sorted(IMAGE_EXTENSIONS)}) in {folder}")
    key = None
    if model is None:
        key = (
            dims,
            str(device),
            tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files),
        )
        if key in _PATH_FEATURE_CACHE:
            return _PATH_FEATURE_CACHE[key]
        model = standard_model(dims, device)
    feats = image_features(
        files,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=f"Inception {Path(folder).name}",
    )
    if key is not None:
        _PATH_FEATURE_CACHE[key] = feats
    return feats
