"""Checking and describing a whole data root: every row and every image, all problems at once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from pcnn.datasets.images import decode_rgb
from pcnn.datasets.layout import (
    CLASS_NAMES,
    LABELLED_SPLITS,
    NUM_CLASSES,
    SPLITS,
    TEST_LABEL,
    DataError,
    Row,
    parse_csv,
    read_split_csv,
)


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
    listed: list[tuple[Path, Row]] = []
    seen: dict[str, str] = {}
    for split in SPLITS:
        csv_path = root / f"{split}.csv"
        if not csv_path.is_file():
            if split in LABELLED_SPLITS:
                problems.append(f"{csv_path}: split file is missing")
            continue
        try:
            rows, row_problems = parse_csv(root, split)
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
            decode_rgb(root / row.path)
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
            array = decode_rgb(root / path)
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
