"""A synthetic stand-in for the course data: four drawn classes in the course layout, for offline runs."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pcnn.datasets.install import install_folder
from pcnn.datasets.layout import NUM_CLASSES, SPLITS, TEST_LABEL, DataError

SYNTHETIC_VERSION = 1
SYNTHETIC_MARKER = ".complete"
_SYNTHETIC_README_TITLE = "# Synthetic CPEN455-layout data set (pcnn)"
_DEFAULT_SYNTHETIC_COUNTS = {"train": 100, "validation": 25, "test": 25}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: (rows, columns)."""
    centres = (np.arange(size) + 0.5) / size
    return centres[:, None], centres[None, :]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: float = 18.0) -> np.ndarray:
    return np.clip(np.asarray(colour, dtype=np.float64) + rng.normal(0.0, amount, 3), 0, 255)


def _draw_burger(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stacked horizontal bands: domed bun, lettuce, cheese, patty, bun on a light background."""
    yy, xx = _grid(size)
    image = np.empty((size, size, 3))
    image[:] = _jitter(rng, (225, 225, 215), 15)
    left, right = rng.uniform(0.08, 0.2), rng.uniform(0.8, 0.92)
    colours = [(205, 140, 60), (70, 170, 50), (245, 205, 40), (95, 55, 30), (200, 135, 60)]
    thickness = np.array([0.22, 0.08, 0.08, 0.16, 0.12]) * rng.uniform(0.85, 1.15, len(colours))
    edges = rng.uniform(0.12, 0.95 - thickness.sum()) + np.concatenate([[0.0], np.cumsum(thickness)])
    wavy_top = edges[:, None] + rng.uniform(0.005, 0.02) * np.sin(6 * np.pi * xx + rng.uniform(0, 2 * np.pi))
    inside = (xx >= left) & (xx <= right)
    # the bun reaches below the lettuce's wavy top edge so that no background shows between them
    dome = _ellipse(yy, xx, edges[1], (left + right) / 2, thickness[0], (right - left) / 2) & (yy < edges[1])
    image[dome | (inside & (yy >= edges[1]) & (yy < edges[1] + 0.03))] = _jitter(rng, colours[0])
    for index, colour in enumerate(colours[1:], start=1):  # each band is painted over by the ones below
        image[inside & (yy >= wavy_top[index]) & (yy < edges[-1])] = _jitter(rng, colour)
    return image


def _draw_panda(rng: np.random.Generator, size: int) -> np.ndarray:
    """White face on a white background with black ears, eye patches and nose."""
    yy, xx = _grid(size)
    image = np.empty((size, size, 3))
    image[:] = _jitter(rng, (240, 240, 235), 8)
    cy, cx, r = rng.uniform(0.45, 0.58), rng.uniform(0.42, 0.58), rng.uniform(0.26, 0.34)
    black = _jitter(rng, (25, 25, 25), 8)
    for side in (-1, 1):
        image[_ellipse(yy, xx, cy - 0.85 * r, cx + side * 0.8 * r, 0.3 * r, 0.3 * r)] = black
    image[_ellipse(yy, xx, cy, cx, r, 1.1 * r)] = _jitter(rng, (250, 250, 250), 5)
    tilt = rng.uniform(0.0, 0.1)
    for side in (-1, 1):
        image[_ellipse(yy, xx, cy - (0.12 - side * tilt) * r, cx + side * 0.42 * r, 0.3 * r, 0.22 * r)] = (
            black
        )
    image[_ellipse(yy, xx, cy + 0.35 * r, cx, 0.1 * r, 0.14 * r)] = black
    return image


def _draw_koala(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey round face with big pale-lined ears and a large dark nose, on a blue-green background."""
    yy, xx = _grid(size)
    image = np.empty((size, size, 3))
    image[:] = _jitter(rng, (60, 150, 140), 20)
    cy, cx, r = rng.uniform(0.5, 0.6), rng.uniform(0.42, 0.58), rng.uniform(0.25, 0.32)
    grey = _jitter(rng, (140, 140, 145), 15)
    for side in (-1, 1):
        ear_y, ear_x = cy - 0.7 * r, cx + side * r
        image[_ellipse(yy, xx, ear_y, ear_x, 0.5 * r, 0.5 * r)] = grey
        image[_ellipse(yy, xx, ear_y, ear_x, 0.3 * r, 0.3 * r)] = _jitter(rng, (215, 210, 210), 10)
    image[_ellipse(yy, xx, cy, cx, r, 1.15 * r)] = grey
    for side in (-1, 1):
        image[_ellipse(yy, xx, cy - 0.2 * r, cx + side * 0.5 * r, 0.07 * r, 0.07 * r)] = 20
    image[_ellipse(yy, xx, cy + 0.2 * r, cx, rng.uniform(0.3, 0.4) * r, 0.22 * r)] = _jitter(
        rng, (35, 30, 35), 8
    )
    return image


def _draw_pizza(rng: np.random.Generator, size: int) -> np.ndarray:
    """Orange-red disc with a golden crust and darker pepperoni dots, on a wooden-brown background."""
    yy, xx = _grid(size)
    image = np.empty((size, size, 3))
    image[:] = _jitter(rng, (150, 105, 65), 20)
    cy, cx, radius = rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58), rng.uniform(0.34, 0.42)
    image[_ellipse(yy, xx, cy, cx, radius, radius)] = _jitter(rng, (225, 175, 85), 12)
    inner = 0.85 * radius
    image[_ellipse(yy, xx, cy, cx, inner, inner)] = _jitter(rng, (235, 95, 35), 15)
    for _ in range(int(rng.integers(5, 10))):
        angle, distance = rng.uniform(0, 2 * np.pi), inner * np.sqrt(rng.uniform(0.0, 0.6))
        dot = rng.uniform(0.09, 0.14) * radius
        image[_ellipse(yy, xx, cy + distance * np.sin(angle), cx + distance * np.cos(angle), dot, dot)] = (
            _jitter(rng, (140, 25, 20), 12)
        )
    return image


_DRAWERS = (_draw_burger, _draw_panda, _draw_koala, _draw_pizza)


def _synthetic_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    image = _DRAWERS[label](rng, size)
    image += rng.normal(0.0, rng.uniform(3.0, 8.0), image.shape)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), mode="RGB")


def _synthetic_params(seed: int, counts: dict[str, int], image_size: int) -> dict[str, object]:
    return {"version": SYNTHETIC_VERSION, "seed": seed, "counts": counts, "image_size": image_size}


def _is_complete_synthetic(root: Path, params: dict[str, object]) -> bool:
    try:
        return json.loads((root / SYNTHETIC_MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def _is_synthetic(root: Path) -> bool:
    """Whether a folder was written by make_synthetic (complete or not), so it may be replaced."""
    try:
        return (root / "README.md").read_text().startswith(_SYNTHETIC_README_TITLE)
    except OSError:
        return (root / SYNTHETIC_MARKER).exists()


def _write_synthetic(root: Path, seed: int, counts: dict[str, int], image_size: int) -> None:
    rng = np.random.default_rng(seed)
    entries = [
        (split, label) for split in SPLITS for label in range(NUM_CLASSES) for _ in range(counts[split])
    ]
    ids = rng.permutation(len(entries)) + 1
    per_split: dict[str, list[tuple[int, int]]] = {split: [] for split in SPLITS}
    for image_id, (split, label) in zip(ids.tolist(), entries):
        per_split[split].append((image_id, label))
    rows = []
    for split in SPLITS:
        (root / split).mkdir()
        lines = []
        for image_id, label in sorted(per_split[split]):
            relative = f"{split}/{image_id:07d}.jpg"
            _synthetic_image(rng, label, image_size).save(root / relative, format="JPEG", quality=90)
            lines.append(f"{relative},{TEST_LABEL if split == 'test' else label}\r\n")
        (root / f"{split}.csv").write_bytes("".join(lines).encode("ascii"))
        rows.append(f"- `{split}`: {len(lines)} images ({counts[split]} per class)")
    readme = "\n".join(
        [
            _SYNTHETIC_README_TITLE,
            "",
            "SYNTHETIC images, not the course data: four drawn classes in the CPEN455 course layout",
            "(0 burger: stacked bands, 1 panda: black ears and eye patches on white, 2 koala: grey face",
            "with a big dark nose on blue-green, 3 pizza: orange-red disc with dark dots), for tests and",
            f"offline runs. Generated by `pcnn.data.make_synthetic` with seed {seed}; images are",
            f"{image_size}x{image_size} RGB JPEGs. Test labels are -1 as in the course files.",
            "",
            *rows,
            "",
        ]
    )
    (root / "README.md").write_text(readme)


def make_synthetic(
    root: Path | str, *, seed: int = 0, counts: dict[str, int] | None = None, image_size: int = 64
) -> Path:
    """Write a deterministic synthetic four-class set in the course layout and return its root.

    It lets everything run without the course data: same seed and counts give byte-identical files.
    ``counts`` maps a split to images per class (defaults: train 100, validation 25, test 25). The set
    is built in a sibling temporary folder, marked complete last and renamed into place, so an
    interrupted run leaves no half-written root; re-running on a complete root with the same
    parameters returns at once. A different earlier synthetic set is replaced; a folder with other
    content is never overwritten.
    """
    root = Path(root).expanduser()
    unknown = set(counts or {}) - set(SPLITS)
    if unknown:
        raise DataError(f"counts has unknown split(s) {sorted(unknown)}; expected {', '.join(SPLITS)}")
    full_counts = {
        split: int((counts or {}).get(split, _DEFAULT_SYNTHETIC_COUNTS[split])) for split in SPLITS
    }
    if any(count < 0 for count in full_counts.values()):
        raise DataError(f"counts must be non-negative, got {full_counts}")
    params = _synthetic_params(seed, full_counts, image_size)
    if _is_complete_synthetic(root, params):
        return root
    if root.exists() and any(root.iterdir()) and not _is_synthetic(root):
        raise DataError(f"{root}: folder exists with other content; refusing to write a synthetic set there")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.synth-", dir=root.parent))
    staging.chmod(0o755)  # it becomes the root; mkdtemp makes it private
    try:
        _write_synthetic(staging, seed, full_counts, image_size)
        (staging / SYNTHETIC_MARKER).write_text(json.dumps(params, sort_keys=True) + "\n")
        if not _is_complete_synthetic(root, params):  # another process may have finished first
            install_folder(staging, root, replaceable=_is_synthetic)
        if not _is_complete_synthetic(root, params):
            raise DataError(f"{root}: another process wrote a different synthetic set concurrently")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def synthetic_data_dir() -> Path:
    """The built-in synthetic set: ``$XDG_CACHE_HOME/pcnn/synthetic-v1`` (XDG default ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "pcnn" / f"synthetic-v{SYNTHETIC_VERSION}"
