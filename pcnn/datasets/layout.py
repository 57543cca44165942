"""The course's data layout: class names, splits, and the strict parsing of the split CSV files.

A root holds ``<root>/{train,validation,test}.csv`` with rows ``split/xxxxxxx.jpg,label`` (no header; LF
or CRLF line endings) and ``<root>/{train,validation,test}/`` folders of 64x64 JPEGs. Labels are 0..3
(burger, panda, koala, pizza); the test split is unlabelled and carries -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CLASS_NAMES: tuple[str, ...] = ("burger", "panda", "koala", "pizza")
NUM_CLASSES = 4
SPLITS = ("train", "validation", "test")
LABELLED_SPLITS = ("train", "validation")
TEST_LABEL = -1


class DataError(ValueError):
    """A data set input is missing or malformed; the message names the file (and CSV line) concerned."""


@dataclass(frozen=True)
class Row:
    line: int
    path: str
    label: int


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _parse_line(text: str, line: int, split: str) -> Row:
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
    return Row(line, path, label)


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


def parse_csv(root: Path, split: str) -> tuple[list[Row], list[str]]:
    """All valid rows of a split's CSV plus one problem string per bad row (the file itself must exist)."""
    csv_path = root / f"{split}.csv"
    rows: list[Row] = []
    problems: list[str] = []
    for number, text in _csv_lines(csv_path):
        try:
            rows.append(_parse_line(text, number, split))
        except DataError as exc:
            problems.append(f"{csv_path} line {number}: {exc}")
    return rows, problems


def read_rows(root: Path | str, split: str) -> list[Row]:
    _check_split(split)
    rows, problems = parse_csv(Path(root), split)
    if problems:
        more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    return rows


def read_split_csv(root: Path | str, split: str) -> list[tuple[str, int]]:
    """Read ``<root>/<split>.csv`` as ``(relative image path, label)`` pairs, validating every row.

    Strict so that a malformed file fails loudly here rather than as a wrong label during training.
    """
    return [(row.path, row.label) for row in read_rows(root, split)]
