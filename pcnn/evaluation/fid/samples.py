"""Sample files as the course saves and reads them: naming, writing, and keeping the folder clean."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

# The names `save_course_samples` writes: the course's JPEGs, and their lossless PNG copies.
COURSE_SAMPLE_NAME = re.compile(r"^Class(\d+)_image_(\d+)\.(jpg|png)$")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images pass through; floats are taken to be on the [-1, 1] grid the sampler returns."""
    if images.dtype == torch.uint8:
        return images
    if not torch.is_floating_point(images):
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(f"float images must lie in [-1, 1], got range [{lo:.4f}, {hi:.4f}]")
    return ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def is_course_sample_name(name: str) -> bool:
    """Whether a file name is one :func:`save_course_samples` writes (the JPEG or its lossless PNG copy)."""
    return COURSE_SAMPLE_NAME.match(name) is not None


def non_sample_entries(folder: str | Path) -> list[Path]:
    """Everything directly in `folder` that is not a course sample file, sorted (sub-folders included).

    The course scores every image file of its samples folder (and counts every entry it lists), so a
    grid, a notes file or a stray folder there is scored or counted as a sample.
    """
    return sorted(p for p in Path(folder).iterdir() if not (p.is_file() and is_course_sample_name(p.name)))


def list_entries(paths: Sequence[Path], limit: int = 10) -> str:
    """Name entries for an error message: at most `limit` names (folders end in /), then how many more."""
    named = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:limit])
    return named + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies below it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_output_folder(folder: str | Path) -> None:
    """Refuse (ValueError naming them) a samples folder that holds anything but sample files.

    New samples are not mixed with other files, which the course would score or count as samples;
    sample files of an earlier run are allowed (:func:`remove_samples` clears them).
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    foreign = non_sample_entries(folder)
    if foreign:
        raise ValueError(
            f"{folder} holds entries that are not samples ({list_entries(foreign)}); choose an empty folder"
            " or move them out"
        )


def remove_samples(folder: str | Path) -> None:
    """Delete the sample files in `folder`, so that a smaller new set leaves none of an earlier one behind."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and is_course_sample_name(path.name):
                path.unlink()


def save_course_samples(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    out_dir: str | Path,
    *,
    png_dir: str | Path | None = None,
) -> list[Path]:
    """Write samples as the course does: ``<out_dir>/Class{k}_image_{nn}.jpg``, nn 1-based per class.

    `images` are uint8 (N, 3, H, W) or float on the [-1, 1] grid (the sampler's output; mapped with
    ``round((x + 1) * 127.5)`` as ``torchvision.utils.save_image`` maps x/2 + 0.5). JPEGs use PIL's
    default quality (75), what ``save_image`` writes. With `png_dir` lossless copies (same names, .png)
    go there; it must lie outside `out_dir`, which the course reads whole. Returns the JPEG paths,
    then the PNG paths.
    """
    imgs = to_uint8(images)
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(imgs.shape)}")
    label_list = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(label_list) != imgs.shape[0]:
        raise ValueError(f"{imgs.shape[0]} images but {len(label_list)} labels")
    out = Path(out_dir)
    png = Path(png_dir) if png_dir is not None else None
    if png is not None and is_inside(png, out):
        raise ValueError(f"the PNG copies ({png}) must lie outside the samples folder {out}")
    out.mkdir(parents=True, exist_ok=True)
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
    counters: dict[int, int] = {}
    jpgs: list[Path] = []
    pngs: list[Path] = []
    arrays = imgs.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    for arr, label in zip(arrays, label_list):
        counters[label] = counters.get(label, 0) + 1
        stem = f"Class{label}_image_{counters[label]:02d}"
        im = Image.fromarray(arr)
        jpg = out / f"{stem}.jpg"
        im.save(jpg)
        jpgs.append(jpg)
        if png is not None:
            path = png / f"{stem}.png"
            im.save(path)
            pngs.append(path)
    return jpgs + pngs
