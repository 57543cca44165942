"""CPEN455 data: the course layout, image decoding, transforms, a synthetic stand-in and a downloader.

The course layout is ``<root>/{train,validation,test}.csv`` with rows ``split/xxxxxxx.jpg,label`` (no
header; LF or CRLF line endings), and ``<root>/{train,validation,test}/`` folders of 64x64 JPEGs.
Labels are 0..3 (burger, panda, koala, pizza); the test split is unlabelled and carries -1.

Every image is kept as uint8 through decoding, resizing and augmentation and is scaled to the 256-level
grid ``k/127.5 - 1`` last (docs/design.md#likelihood): the discretized-logistic likelihood assumes that each
sub-pixel is exactly one of the 256 bin centres, which resizing or rotating float tensors would break.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import math
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

CLASS_NAMES: tuple[str, ...] = ("burger", "panda", "koala", "pizza")
NUM_CLASSES = 4
SPLITS = ("train", "validation", "test")
LABELLED_SPLITS = ("train", "validation")
TEST_LABEL = -1

COURSE_ARCHIVE_URL = "https://github.com/DSL-Lab/CPEN455HW-2023W2/archive/refs/heads/main.zip"
# SHA-256 of the course's validation and test split files, byte for byte. The archive itself is
# not pinned (its hash changes with every commit upstream); these pin the splits that results refer to.
KNOWN_CSV_SHA256: dict[str, str] = {
    "validation.csv": "3ced154651940daf01a950c69757b7cd1673be5d89fe14ca713b43af17efccd6",
    "test.csv": "7da66cb83cc32c103327bf66c9e4406be9991eeeb3a5a8b6bffbbeb6a8f6e1fd",
}

DATA_DIR_ENV = "PCNN_DATA_DIR"
SYNTHETIC_VERSION = 1
SYNTHETIC_MARKER = ".complete"
_SYNTHETIC_README_TITLE = "# Synthetic CPEN455-layout data set (pcnn)"
_DEFAULT_SYNTHETIC_COUNTS = {"train": 100, "validation": 25, "test": 25}
_MAX_LISTED = 5


class DataError(ValueError):
    """A data set input is missing or malformed; the message names the file (and CSV line) concerned."""


@dataclass(frozen=True)
class _Row:
    line: int
    path: str
    label: int


# ----------------------------------------------------------------------------------------------- CSV


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _parse_line(text: str, line: int, split: str) -> _Row:
    """Parse one CSV row, raising DataError(reason) without the file name (the caller adds it)."""
    fields = text.split(",")
    if len(fields) != 2:
        raise DataError(f"expected 2 columns (path,label), found {len(fields)}: {text!r}")
    path, label_text = fields[0].strip(), fields[1].strip()
    try:
        label: int | None = int(label_text)
    except ValueError:
        if line == 1:
            raise DataError(f"looks like a header row ({text!r}); course CSV files have none") from None
        label = None
    if not path:
        raise DataError("empty image path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise DataError(f"image path {path!r} must be relative to the data root")
    # A bad label names its image too: the line number alone sends a user to count lines.
    if label is None:
        raise DataError(f"{path}: label {label_text!r} is not an integer")
    if split == "test":
        if label != TEST_LABEL and not 0 <= label < NUM_CLASSES:
            raise DataError(
                f"{path}: label {label} is neither {TEST_LABEL} (unlabelled) nor in 0..{NUM_CLASSES - 1}"
            )
    elif not 0 <= label < NUM_CLASSES:
        raise DataError(
            f"{path}: label {label} is outside 0..{NUM_CLASSES - 1} in the labelled {split} split"
        )
    return _Row(line, path, label)


def _csv_lines(csv_path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; accepts LF and CRLF (and a UTF-8 byte-order mark)."""
    try:
        raw = csv_path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{csv_path}: split file is missing") from None
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read ({exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not UTF-8 text ({exc})") from exc
    lines = (line.rstrip("\r") for line in text.split("\n"))
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _parse_csv(root: Path, split: str) -> tuple[list[_Row], list[str]]:
    """All valid rows of a split's CSV plus one problem string per bad row (the file itself must exist)."""
    csv_path = root / f"{split}.csv"
    rows: list[_Row] = []
    problems: list[str] = []
    for number, text in _csv_lines(csv_path):
        try:
            rows.append(_parse_line(text, number, split))
        except DataError as exc:
            problems.append(f"{csv_path} line {number}: {exc}")
    return rows, problems


def _read_rows(root: Path | str, split: str) -> list[_Row]:
    _check_split(split)
    rows, problems = _parse_csv(Path(root), split)
    if problems:
        more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    return rows


def read_split_csv(root: Path | str, split: str) -> list[tuple[str, int]]:
    """Read ``<root>/<split>.csv`` as ``(relative image path, label)`` pairs, validating every row.

    Strict so that a malformed file fails loudly here rather than as a wrong label during training.
    """
    return [(row.path, row.label) for row in _read_rows(root, split)]


# -------------------------------------------------------------------------------------------- images


def _decode_rgb(path: Path) -> np.ndarray:
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
        array = _decode_rgb(path)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------- transforms


class ToGrid(torch.nn.Module):
    """Scale a uint8 image to float32 ``k/127.5 - 1``: the 256 bin centres the likelihood expects.

    Refuses non-uint8 input, because anything else has already left the grid.
    """

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8:
            raise TypeError(f"ToGrid expects a uint8 image, got {image.dtype}")
        return image.to(torch.float32) / 127.5 - 1.0


def _resize(image_size: int) -> v2.Resize:
    return v2.Resize((image_size, image_size), antialias=True)


def _random_rotation(image_size: int, degrees: float) -> v2.Compose:
    """Rotation whose corners are filled from the image's own mirrored border, not a constant.

    The image is reflect-padded by just enough that a rotation by at most ``degrees`` never samples
    outside the padded image, rotated with nearest-neighbour interpolation (values stay on the grid)
    and centre-cropped back. A constant fill would add grey triangles that the density model would
    have to learn; the fill value 128 below is therefore never visible.
    """
    theta = math.radians(degrees)
    pad = math.ceil(image_size / 2 * (math.cos(theta) + math.sin(theta) - 1)) + 1
    return v2.Compose(
        [
            v2.Pad(pad, padding_mode="reflect"),
            v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.NEAREST, fill=128),
            v2.CenterCrop(image_size),
        ]
    )


def train_transform(image_size: int = 32, augment: bool = True, finetune: bool = False) -> v2.Compose:
    """Training transform on uint8 (3, H, W) tensors, scaled to the grid last.

    ``augment``: random horizontal flip and rotation in [-10, 10] degrees (reflect-filled corners, see
    ``_random_rotation``). ``finetune``: additionally colour jitter (uint8 in, uint8 out) and a random
    crop from a reflect-padded image (padding image_size // 8). With both off it equals
    ``eval_transform``.
    """
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = [_resize(image_size)]
    if augment:
        steps += [v2.RandomHorizontalFlip(), _random_rotation(image_size, 10.0)]
    if finetune:
        steps += [
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            v2.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode="reflect"),
        ]
    steps.append(ToGrid())
    return v2.Compose(steps)


def eval_transform(image_size: int = 32) -> v2.Compose:
    """Deterministic transform for evaluation: antialiased resize of the uint8 image, then the grid."""
    return v2.Compose([_resize(image_size), ToGrid()])


# ------------------------------------------------------------------------------------------- dataset


def _missing_images(root: Path, split: str, rows: list[_Row]) -> DataError | None:
    missing = [row for row in rows if not (root / row.path).is_file()]
    if not missing:
        return None
    listed = "; ".join(f"line {row.line}: {row.path}" for row in missing[:_MAX_LISTED])
    more = f"; and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return DataError(f"{root / f'{split}.csv'}: {len(missing)} listed image file(s) missing: {listed}{more}")


class CPEN455Dataset(Dataset):
    """One split of a course-layout root, yielding ``(float32 (3, S, S) image on the grid, label)``.

    The CSV and the existence of every image are checked at construction so that a broken root fails
    before training starts. ``cache=True`` decodes every image once and keeps it, resized to
    ``image_size`` (antialiased, uint8), in memory: augmentation then runs on the cached copy, which
    gives the same result as decoding each time because resizing to the size an image already has is
    the identity.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_size: int = 32,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.transform = transform if transform is not None else eval_transform(image_size)
        rows = _read_rows(self.root, split)
        error = _missing_images(self.root, split, rows)
        if error is not None:
            raise error
        self.paths: list[str] = [row.path for row in rows]
        self.labels: list[int] = [row.label for row in rows]
        self.ids: list[str] = [PurePosixPath(path).stem for path in self.paths]
        self._cache: torch.Tensor | None = None
        if cache:
            self._cache = self._decode_all()

    def _decode_all(self) -> torch.Tensor:
        images = torch.empty((len(self.paths), 3, self.image_size, self.image_size), dtype=torch.uint8)
        for index, path in enumerate(tqdm(self.paths, desc=f"decoding {self.split}", disable=None)):
            image = load_image_uint8(self.root / path)
            images[index] = TF.resize(image, [self.image_size, self.image_size], antialias=True)
        return images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cache is not None:
            image = self._cache[index]
        else:
            image = load_image_uint8(self.root / self.paths[index])
        return self.transform(image), self.labels[index]


def evenly_spaced_indices(n: int, subset: int) -> list[int]:
    """Indices of a fixed, evenly spaced subset of `subset` items out of `n` (first and last included);
    all of them when `subset` is 0 or at least `n`. Evaluation's `subset` options all pick images this way.
    """
    if subset and subset < n:
        return np.linspace(0, n - 1, subset).round().astype(int).tolist()
    return list(range(n))


# ------------------------------------------------------------------------------------ synthetic data


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
            _install(staging, root, replaceable=_is_synthetic)
        if not _is_complete_synthetic(root, params):
            raise DataError(f"{root}: another process wrote a different synthetic set concurrently")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _install(staging: Path, root: Path, replaceable: Callable[[Path], bool]) -> None:
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


def synthetic_data_dir() -> Path:
    """The built-in synthetic set: ``$XDG_CACHE_HOME/pcnn/synthetic-v1`` (XDG default ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "pcnn" / f"synthetic-v{SYNTHETIC_VERSION}"


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


# ------------------------------------------------------------------------------------ check, summary


def check_data_root(root: Path | str, *, progress: bool = True) -> list[str]:
    """Validate a whole root, every CSV row and every image fully decoded; one string per problem.

    Unlike the dataset (which stops at the first error) this collects everything, so that one run
    lists all that needs fixing. Each problem names the CSV file and line, the image and the reason.
    The test split is optional but checked when present. An empty list means the root is usable.
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    problems: list[str] = []
    listed: list[tuple[Path, _Row]] = []
    seen: dict[str, str] = {}
    for split in SPLITS:
        csv_path = root / f"{split}.csv"
        if not csv_path.is_file():
            if split in LABELLED_SPLITS:
                problems.append(f"{csv_path}: split file is missing")
            continue
        try:
            rows, row_problems = _parse_csv(root, split)
        except DataError as exc:
            problems.append(str(exc))
            continue
        problems += row_problems
        for row in rows:
            where = f"{csv_path} line {row.line}"
            if row.path in seen:
                problems.append(f"{where}: {row.path}: listed again (first at {seen[row.path]})")
                continue
            seen[row.path] = where
            listed.append((csv_path, row))
    for csv_path, row in tqdm(listed, desc="checking images", disable=None if progress else True):
        try:
            _decode_rgb(root / row.path)
        except DataError as exc:
            problems.append(f"{csv_path} line {row.line}: {row.path}: {exc}")
    return problems


def class_counts(root: Path | str, split: str) -> list[int]:
    """Images per class (index = label) in a labelled split; the unlabelled test split raises DataError."""
    counts = [0] * NUM_CLASSES
    for _, label in read_split_csv(root, split):
        if label == TEST_LABEL:
            raise DataError(f"{Path(root) / f'{split}.csv'}: split is unlabelled (label {TEST_LABEL})")
        counts[label] += 1
    return counts


def summarize(root: Path | str, *, progress: bool = True) -> dict[str, Any]:
    """Counts per split and class, image sizes and modes, and grayscale images, for reports and notebooks.

    ``grayscale`` counts images whose decoded channels are all equal (single-channel files and RGB
    files holding gray pixels); ``single_channel`` only the former. Every image is decoded once.
    """
    root = Path(root)
    splits: dict[str, dict[str, object]] = {}
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    grayscale = single_channel = 0
    for split in SPLITS:
        if split not in LABELLED_SPLITS and not (root / f"{split}.csv").is_file():
            continue
        rows = read_split_csv(root, split)
        labels = [label for _, label in rows]
        per_class = None
        if TEST_LABEL not in labels:
            per_class = {name: labels.count(index) for index, name in enumerate(CLASS_NAMES)}
        splits[split] = {"images": len(rows), "class_counts": per_class}
        for path, _ in tqdm(rows, desc=f"scanning {split}", disable=None if progress else True):
            with Image.open(root / path) as image:
                sizes[f"{image.width}x{image.height}"] += 1
                modes[image.mode] += 1
                single_channel += image.mode in ("1", "L", "LA", "I", "I;16", "F")
            array = _decode_rgb(root / path)
            grayscale += bool(
                (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
            )
    return {
        "root": str(root),
        "splits": splits,
        "image_sizes": dict(sizes),
        "modes": dict(modes),
        "grayscale": grayscale,
        "single_channel": single_channel,
    }


# --------------------------------------------------------------------------------------------- fetch


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into ``target`` and return its SHA-256; network failures become DataError."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as handle:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None, unit="B", unit_scale=True, desc="download", disable=None
            ) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise DataError(
            f"cannot download {url} ({exc}). If you are offline, copy the course data (CPEN455 layout:"
            f" train.csv, validation.csv, test.csv and the image folders) to a folder and pass it with"
            f" --data-dir or set {DATA_DIR_ENV}"
        ) from exc
    return digest.hexdigest()


_ARCHIVE_DATA = re.compile(r"^[^/]+/data/(.+)$")


def _extract_data(archive: Path, target: Path) -> int:
    """Extract ``<top>/data/**`` of the archive into ``target``; returns the number of files."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            count = 0
            for info in bundle.infolist():
                match = _ARCHIVE_DATA.match(info.filename)
                if info.is_dir() or match is None:
                    continue
                relative = PurePosixPath(match.group(1))
                if relative.is_absolute() or ".." in relative.parts:
                    raise DataError(f"{archive}: unsafe member path {info.filename!r}")
                destination = target.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                count += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc})") from exc
    if count == 0:
        raise DataError(f"{archive}: no data/ folder in the archive")
    return count


def _verify_course_root(root: Path, origin: str) -> None:
    """Check the split files' pinned hashes and that every listed image exists."""
    for name, expected in KNOWN_CSV_SHA256.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{origin}: {name} is missing from data/")
        actual = _sha256_file(path)
        if actual != expected:
            raise DataError(
                f"{origin}: {name} has SHA-256 {actual}, expected {expected}; the archive does not hold the"
                " course's published split"
            )
    for split in SPLITS:
        error = _missing_images(root, split, _read_rows(root, split))
        if error is not None:
            raise DataError(f"{origin}: {error}")


def fetch(
    dest: Path | str, *, url: str = COURSE_ARCHIVE_URL, sha256: str | None = None, timeout: float = 60.0
) -> Path:
    """Download the course repository archive, verify it and install its ``data/`` folder as ``dest``.

    The archive's SHA-256 is printed (so a user can pin it with ``sha256``) and checked when given;
    the extracted validation and test CSVs are always checked against ``KNOWN_CSV_SHA256``. Everything
    happens in a sibling temporary folder, so ``dest`` appears only when complete. An existing ``dest``
    that already holds the verified course data is kept as is.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and any(dest.iterdir()):
        try:
            _verify_course_root(dest, str(dest))
        except DataError as exc:
            raise DataError(
                f"{dest}: folder exists and is not the course data ({exc}); choose another"
            ) from exc
        print(f"{dest}: course data already present and verified")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        archive = staging / "archive.zip"
        actual = _download(url, archive, timeout)
        print(f"archive sha256: {actual}")
        if sha256 is not None and actual.lower() != sha256.strip().lower():
            raise DataError(f"{url}: archive SHA-256 {actual} does not match the expected {sha256}")
        extracted = staging / "data"
        count = _extract_data(archive, extracted)
        _verify_course_root(extracted, url)
        _install(extracted, dest, replaceable=lambda _: False)
        print(f"{dest}: {count} files from {url}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
