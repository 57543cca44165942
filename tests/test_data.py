"""Data layer: course-layout parsing, decoding, grid-preserving transforms, synthetic set, fetch, CLI."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from pcnn import datasets as data
from pcnn.commands.data_cli import add_data_parser
from pcnn.datasets import CPEN455Dataset, DataError, download, synthetic

TINY = {"train": 3, "validation": 2, "test": 2}


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_synthetic(tmp_path_factory.mktemp("synthetic") / "root", seed=1, counts=TINY)


@pytest.fixture
def tiny_root(tiny_source: Path, tmp_path: Path) -> Path:
    """A private copy of a tiny synthetic root that a test may damage."""
    return Path(shutil.copytree(tiny_source, tmp_path / "root"))


def on_grid(x: torch.Tensor) -> bool:
    k = (x + 1) * 127.5
    return bool(((k - k.round()).abs() < 1e-4).all() and k.min() >= -1e-4 and k.max() <= 255 + 1e-4)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pcnn")
    add_data_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


# ------------------------------------------------------------------------------------------ real data


def csv_rows(root: Path, split: str) -> int:
    """Rows of a split file, counted straight from its bytes: the counts the real-data tests expect.

    The course's train.csv has 4159 rows and the shared copy a 3759-row subset, so no count is pinned.
    """
    return sum(1 for line in (root / f"{split}.csv").read_bytes().splitlines() if line.strip())


def test_real_data_set(real_data_dir: Path) -> None:
    expected = {split: csv_rows(real_data_dir, split) for split in data.SPLITS}
    assert all(n > 0 for n in expected.values()), expected
    for split, n in expected.items():
        dataset = CPEN455Dataset(real_data_dir, split)
        assert len(dataset) == len(dataset.ids) == n
        for index in (0, n - 1):
            x, y = dataset[index]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and on_grid(x)
            assert y == -1 if split == "test" else 0 <= y < data.NUM_CLASSES
    assert sum(data.class_counts(real_data_dir, "train")) == expected["train"]
    train = CPEN455Dataset(real_data_dir, "train")
    gray = next(p for p in train.paths if Image.open(real_data_dir / p).mode == "L")
    assert data.load_image_uint8(real_data_dir / gray).shape == (3, 64, 64)
    x, _ = train[train.paths.index(gray)]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_real_data_summary(real_data_dir: Path) -> None:
    summary = data.summarize(real_data_dir, progress=False)
    rows = {split: csv_rows(real_data_dir, split) for split in data.SPLITS}
    assert {split: info["images"] for split, info in summary["splits"].items()} == rows
    assert summary["image_sizes"] == {"64x64": sum(rows.values())}
    labelled = summary["splits"]["train"]["class_counts"]
    assert list(labelled.values()) == data.class_counts(real_data_dir, "train")
    # every single-channel file is gray; the course set has some (test_real_data_set decodes one)
    assert 0 < summary["single_channel"] <= summary["grayscale"] < sum(rows.values())


def test_real_data_holds_the_course_published_splits(real_data_dir: Path) -> None:
    """The pins are the course's published validation and test files (what `pcnn data fetch` verifies and
    what every result refers to), not a property of one copy: the shared copy and a fetched one both hold
    them, while their train.csv differ (3759 and 4159 rows), which is why train.csv is not pinned."""
    for name, digest in data.KNOWN_CSV_SHA256.items():
        actual = hashlib.sha256((real_data_dir / name).read_bytes()).hexdigest()
        assert actual == digest, f"{real_data_dir / name} is not the course's published {name}"


# -------------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = data.make_synthetic(tmp_path / "a", seed=3, counts=TINY)
    b = data.make_synthetic(tmp_path / "b", seed=3, counts=TINY)
    c = data.make_synthetic(tmp_path / "c", seed=4, counts=TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    jpegs = [f for f in files if f.suffix == ".jpg"]
    assert any(not (c / f).is_file() or (a / f).read_bytes() != (c / f).read_bytes() for f in jpegs)
    raw = (a / "train.csv").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") == 12
    assert "synthetic" in (a / "README.md").read_text().lower()
    assert data.check_data_root(a, progress=False) == []


def test_synthetic_layout_is_readable(tiny_root: Path) -> None:
    assert data.class_counts(tiny_root, "train") == [3] * data.NUM_CLASSES
    test = CPEN455Dataset(tiny_root, "test")
    assert len(test) == 8 and set(test.labels) == {-1}
    assert all(p.startswith("test/") and len(i) == 7 for p, i in zip(test.paths, test.ids))
    x, y = CPEN455Dataset(tiny_root, "validation", image_size=16)[0]
    assert x.shape == (3, 16, 16) and 0 <= y < data.NUM_CLASSES and on_grid(x)
    with Image.open(tiny_root / test.paths[0]) as image:
        assert image.size == (64, 64) and image.mode == "RGB" and image.format == "JPEG"


def test_synthetic_rerun_is_noop_and_interrupted_run_is_redone(tiny_root: Path) -> None:
    stamp = (tiny_root / "train.csv").stat().st_mtime_ns
    assert data.make_synthetic(tiny_root, seed=1, counts=TINY) == tiny_root
    assert (tiny_root / "train.csv").stat().st_mtime_ns == stamp
    (tiny_root / data.SYNTHETIC_MARKER).unlink()  # as if interrupted before completion
    next((tiny_root / "train").iterdir()).unlink()
    data.make_synthetic(tiny_root, seed=1, counts=TINY)
    assert (tiny_root / data.SYNTHETIC_MARKER).is_file() and data.check_data_root(
        tiny_root, progress=False
    ) == []


def test_synthetic_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DataError, match="refusing"):
        data.make_synthetic(tmp_path, counts=TINY)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_default_and_resolved_data_dir(
    tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tiny_root))
    assert data.default_data_dir() == tiny_root == data.resolve_data_dir(None)
    assert data.resolve_data_dir(str(tiny_root)) == tiny_root
    with pytest.raises(DataError, match="train.csv"):
        data.resolve_data_dir(tmp_path / "empty")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(synthetic._DEFAULT_SYNTHETIC_COUNTS, "train", 1)  # keep the default set tiny here
    monkeypatch.setitem(synthetic._DEFAULT_SYNTHETIC_COUNTS, "validation", 1)
    monkeypatch.setitem(synthetic._DEFAULT_SYNTHETIC_COUNTS, "test", 1)
    root = data.default_data_dir()
    assert root == tmp_path / "cache" / "pcnn" / "synthetic-v1" and (root / data.SYNTHETIC_MARKER).is_file()


# ------------------------------------------------------------------------------------------ bad inputs


def first_row(root: Path, split: str = "train") -> str:
    return (root / f"{split}.csv").read_text().splitlines()[0].split(",")[0]


def test_corrupt_jpeg(tiny_root: Path) -> None:
    path = tiny_root / first_row(tiny_root)
    path.write_bytes(b"\xff\xd8 this is not a jpeg" + b"\x00" * 100 + b"\xff\xd9")
    with pytest.raises(DataError, match=path.name):
        data.load_image_uint8(path)
    with pytest.raises(DataError, match=path.name):
        CPEN455Dataset(tiny_root, "train")[0]


@pytest.mark.parametrize("cut", [2, 1000])
def test_truncated_jpeg(tiny_root: Path, cut: int) -> None:
    path = tiny_root / first_row(tiny_root)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match=rf"{path.name}.*truncated"):
        data.load_image_uint8(path)


def test_missing_image(tiny_root: Path) -> None:
    relative = first_row(tiny_root, "validation")
    (tiny_root / relative).unlink()
    with pytest.raises(DataError, match=rf"validation\.csv.*line 1: {relative}"):
        CPEN455Dataset(tiny_root, "validation")
    with pytest.raises(DataError, match="missing"):
        data.load_image_uint8(tiny_root / relative)


def test_missing_csv(tiny_root: Path) -> None:
    (tiny_root / "validation.csv").unlink()
    with pytest.raises(DataError, match=r"validation\.csv.*missing"):
        data.read_split_csv(tiny_root, "validation")


@pytest.mark.parametrize(
    ("split", "row", "line", "message"),
    [
        ("train", "train/0000001.jpg,4", 2, "outside 0..3"),
        ("validation", "validation/0000001.jpg,-1", 2, "outside 0..3"),
        ("test", "test/0000001.jpg,7", 2, "neither -1"),
        ("train", "train/0000001.jpg,burger", 2, "not an integer"),
        ("train", "train/0000001.jpg,1,extra", 2, "2 columns"),
        ("train", "train/0000001.jpg", 2, "2 columns"),
        ("train", "../outside.jpg,1", 2, "relative"),
        ("train", "path,label", 1, "header"),
    ],
)
def test_bad_csv_rows(tiny_root: Path, split: str, row: str, line: int, message: str) -> None:
    csv_path = tiny_root / f"{split}.csv"
    lines = csv_path.read_bytes().split(b"\r\n")
    lines.insert(line - 1, row.encode())
    csv_path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(DataError, match=rf"{split}\.csv line {line}: .*{message}"):
        data.read_split_csv(tiny_root, split)
    problems = data.check_data_root(tiny_root, progress=False)
    assert len(problems) == 1 and f"{split}.csv line {line}:" in problems[0] and message in problems[0]
    if message in ("outside 0..3", "neither -1", "not an integer"):
        # a bad label names its image as well as the line
        assert f"{split}.csv line {line}: {row.split(',')[0]}: label " in problems[0]


def test_check_cli_names_the_image_of_a_bad_label(
    tiny_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tiny_root / "validation.csv"
    rows = csv_path.read_text().splitlines()
    image = rows[2].split(",")[0]
    rows[2] = f"{image},9"
    csv_path.write_text("\n".join(rows) + "\n")
    assert run_cli("data", "check", "--data-dir", str(tiny_root)) == 1
    out = capsys.readouterr().out
    assert f"validation.csv line 3: {image}: label 9 is outside 0..3" in out


def test_lf_and_crlf_parse_the_same(tiny_root: Path) -> None:
    crlf = data.read_split_csv(tiny_root, "train")
    assert b"\r\n" in (tiny_root / "train.csv").read_bytes()
    (tiny_root / "train.csv").write_bytes((tiny_root / "train.csv").read_bytes().replace(b"\r\n", b"\n"))
    assert data.read_split_csv(tiny_root, "train") == crlf and len(crlf) == 12


def test_check_reports_every_problem_with_file_and_line(tiny_root: Path) -> None:
    rows = (tiny_root / "train.csv").read_text().splitlines()
    corrupt, truncated, missing = (row.split(",")[0] for row in rows[:3])
    (tiny_root / corrupt).write_bytes(b"garbage")
    (tiny_root / truncated).write_bytes((tiny_root / truncated).read_bytes()[:300])
    (tiny_root / missing).unlink()
    (tiny_root / "test.csv").write_text("test/0000001.jpg,-1,0\n")
    problems = data.check_data_root(tiny_root, progress=False)
    assert len(problems) == 4, problems
    expected = [(1, corrupt, "decode"), (2, truncated, "truncated"), (3, missing, "missing")]
    for (line, path, reason), problem in zip(expected, problems[1:]):
        assert f"train.csv line {line}: {path}: " in problem and reason in problem
    assert "test.csv line 1:" in problems[0] and "2 columns" in problems[0]
    assert run_cli("data", "check", "--data-dir", str(tiny_root)) == 1


def test_check_cli_ok_and_grayscale_info(tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gray = tiny_root / first_row(tiny_root)
    Image.open(gray).convert("L").save(gray, format="JPEG")
    image = data.load_image_uint8(gray)
    assert image.shape == (3, 64, 64) and torch.equal(image[0], image[2])
    assert run_cli("data", "check", "--data-dir", str(tiny_root)) == 0
    assert "OK" in capsys.readouterr().out
    assert run_cli("data", "info", "--data-dir", str(tiny_root)) == 0
    assert "grayscale images: 1" in capsys.readouterr().out
    assert run_cli("data", "check", "--data-dir", str(tiny_root / "nowhere")) == 2


# ------------------------------------------------------------------------------------------ transforms


def test_augmented_outputs_lie_on_the_grid(tiny_root: Path) -> None:
    torch.manual_seed(0)
    for finetune in (False, True):
        dataset = CPEN455Dataset(tiny_root, "train", transform=data.train_transform(32, finetune=finetune))
        for index in range(len(dataset)):
            x, _ = dataset[index]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and on_grid(x)


def test_rotation_corners_are_not_filled_with_a_constant() -> None:
    torch.manual_seed(0)
    transform = data.train_transform(32)
    black = torch.zeros((3, 64, 64), dtype=torch.uint8)
    assert all(torch.equal(transform(black), torch.full((3, 32, 32), -1.0)) for _ in range(20))


def test_train_without_augmentation_equals_eval_and_cache_matches(tiny_root: Path) -> None:
    plain = CPEN455Dataset(tiny_root, "validation")
    unaugmented = CPEN455Dataset(tiny_root, "validation", transform=data.train_transform(32, augment=False))
    cached = CPEN455Dataset(tiny_root, "validation", cache=True)
    for index in range(len(plain)):
        assert torch.equal(plain[index][0], unaugmented[index][0])
        assert torch.equal(plain[index][0], cached[index][0]) and plain[index][1] == cached[index][1]


def test_to_grid_maps_uint8_levels_and_rejects_floats() -> None:
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    grid = data.ToGrid()(levels)
    assert grid.dtype == torch.float32 and grid.min() == -1 and grid.max() == 1 and on_grid(grid)
    with pytest.raises(TypeError):
        data.ToGrid()(grid)


# --------------------------------------------------------------------------------------------- fetch


def make_archive(source: Path, archive: Path, top: str = "CPEN455HW-2023W2-main") -> str:
    """A zip laid out like the course repository archive; returns its file:// URL."""
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(f"{top}/README.md", "course repository")
        bundle.writestr(f"{top}/data/", "")
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                bundle.write(path, f"{top}/data/{path.relative_to(source).as_posix()}")
    return archive.as_uri()


def pin_to(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in data.KNOWN_CSV_SHA256}
    monkeypatch.setattr(download, "KNOWN_CSV_SHA256", pins)


def test_fetch_extracts_and_verifies(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "main.zip"
    url = make_archive(tiny_root, archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    pin_to(tiny_root, monkeypatch)
    dest = data.fetch(tmp_path / "fetched", url=url, sha256=digest)
    assert digest in capsys.readouterr().out
    assert (dest / "validation.csv").read_bytes() == (tiny_root / "validation.csv").read_bytes()
    assert "course repository" not in (dest / "README.md").read_text()  # only data/ is extracted
    assert data.check_data_root(dest, progress=False) == []
    assert len(CPEN455Dataset(dest, "train")) == 12
    assert data.fetch(dest, url="file:///nonexistent.zip") == dest  # already there: no download
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_fetch_rejects_bad_checksums(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_archive(tiny_root, tmp_path / "main.zip")
    with pytest.raises(DataError, match="does not match"):
        data.fetch(tmp_path / "a", url=url, sha256="0" * 64)
    with pytest.raises(
        DataError, match=r"validation\.csv has SHA-256"
    ):  # synthetic CSVs are not the course's
        data.fetch(tmp_path / "b", url=url)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    pin_to(tiny_root, monkeypatch)
    (tiny_root / first_row(tiny_root, "test")).unlink()
    with pytest.raises(DataError, match="missing"):
        data.fetch(tmp_path / "c", url=make_archive(tiny_root, tmp_path / "broken.zip"))


def test_fetch_offline_and_bad_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=data.DATA_DIR_ENV):
        data.fetch(tmp_path / "a", url=(tmp_path / "absent.zip").as_uri())
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="zip"):
        data.fetch(tmp_path / "b", url=(tmp_path / "junk.zip").as_uri())
    assert (
        run_cli("data", "fetch", "--out", str(tmp_path / "c"), "--url", (tmp_path / "absent.zip").as_uri())
        == 2
    )
