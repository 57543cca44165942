"""The samplers: the cached one reproduces the full network, both agree, and samples follow the model."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chi2

from pcnn.commands.cli import main
from pcnn.config import CONDITIONING_VARIANTS
from pcnn.core.likelihood import log_bin_probability, split_params
from pcnn.evaluation.fid import non_sample_entries
from pcnn.sampling.sample import cached_params, complete, draw_pixel, sample, sample_grid_figure
from pcnn.training.checkpoint import model_state, save_checkpoint
from tests.conftest import grid_images, randomize_, tiny_model

# Compares computations that round differently on other CPUs: run again under AVX2 kernels (Makefile).
pytestmark = pytest.mark.isa_sensitive

LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: a second OpenMP thread only adds synchronisation (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(conditioning: str, size: int = 8, nr_resnet: int = 2, dtype: torch.dtype = torch.float32):
    """A tiny model with every parameter (biases, label maps, FiLM) visibly non-zero."""
    model = tiny_model(conditioning, image_size=size, nr_resnet=nr_resnet)
    return randomize_(model, scale=0.3, seed=1).to(dtype)


def _on_grid(x: torch.Tensor) -> bool:
    k = (x.double() + 1) * 127.5
    return bool(torch.all((k - k.round()).abs() < 1e-4) and x.min() >= -1 and x.max() <= 1)


@pytest.mark.parametrize("conditioning", CONDITIONING_VARIANTS)
def test_teacher_forcing_matches_full_forward(conditioning: str) -> None:
    """At every position the cached machinery fed the true pixels gives the parameters of one full pass."""
    labels = torch.tensor([2, 0, 3])
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        model = _model(conditioning, dtype=dtype)
        x = grid_images(3, 8).to(dtype)
        full = model(x, labels)
        got = cached_params(model, x, labels)
        assert got.dtype == dtype
        assert (got - full).abs().max() <= tol * max(1.0, full.abs().max().item()), f"{conditioning} {dtype}"


@pytest.mark.parametrize(("conditioning", "size", "nr_resnet"), [("gated-bias", 4, 1), ("spatial", 12, 1)])
def test_teacher_forcing_other_sizes(conditioning: str, size: int, nr_resnet: int) -> None:
    """A 1x1 quarter scale (4x4 images) and an odd-width one (12x12: 3x3) work too."""
    model = _model(conditioning, size=size, nr_resnet=nr_resnet, dtype=torch.float64)
    x, labels = grid_images(2, size).double(), torch.tensor([1, 3])
    assert torch.allclose(cached_params(model, x, labels), model(x, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("conditioning", CONDITIONING_VARIANTS)
def test_naive_and_cached_samples_identical(conditioning: str) -> None:
    """Same generator seed, same images. float64 so that no rounding tie can flip a grid value."""
    model = _model(conditioning, dtype=torch.float64)
    labels = torch.tensor([3, 0, 2, 1])
    images = [
        sample(model, labels, generator=torch.Generator().manual_seed(7), method=method, image_size=8)
        for method in ("naive", "cached")
    ]
    assert torch.equal(images[0], images[1])
    assert images[0].shape == (4, 3, 8, 8) and images[0].dtype == torch.float64
    assert images[0].unique().numel() > 20  # not a degenerate constant image


def test_samples_on_grid_and_temperature() -> None:
    model = _model("gated-bias")
    labels = torch.tensor([0, 1, 2, 3, 0, 1])

    def draw(seed: int, temperature: float = 1.0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample(model, labels, generator=gen, temperature=temperature, image_size=8)

    base = draw(0)
    assert base.shape == (6, 3, 8, 8) and _on_grid(base)
    assert torch.equal(base, draw(0))
    assert not torch.equal(base, draw(1))
    cold, hot = draw(0, 0.3), draw(0, 2.0)
    assert _on_grid(cold) and _on_grid(hot)
    assert not torch.equal(cold, base) and not torch.equal(hot, base)
    # colder samples are less spread around the model's means: neighbouring pixels differ less
    roughness = [(x[..., 1:] - x[..., :-1]).abs().mean().item() for x in (cold, base, hot)]
    assert roughness[0] < roughness[1] < roughness[2]


def test_draw_pixel_follows_the_randomness_rule() -> None:
    """rand(B, M) for a Gumbel-max choice, then rand(B, 3) for the logistic noise; R, G, B conditioned on grid
    values of the earlier channels."""
    b, m, t = 64, 4, 0.5
    params = torch.randn(b, 10 * m, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = draw_pixel(params, torch.Generator().manual_seed(3), temperature=t)

    gen = torch.Generator().manual_seed(3)
    u = torch.rand(b, m, generator=gen).clamp(1e-5, 1 - 1e-5).double()
    v = torch.rand(b, 3, generator=gen).clamp(1e-5, 1 - 1e-5).double()
    logits, means, log_scales, coeffs = (p[..., 0, 0] for p in split_params(params[:, :, None, None]))
    k = (logits / t - torch.log(-torch.log(u))).argmax(1)
    rows = torch.arange(b)
    mu, s, c = means[rows, :, k], torch.exp(log_scales[rows, :, k]) * t, coeffs[rows, :, k]
    noise = s * (torch.log(v) - torch.log(1 - v))
    snap = lambda y: torch.round((y.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    red = snap(mu[:, 0] + noise[:, 0])
    green = snap(mu[:, 1] + c[:, 0] * red + noise[:, 1])
    blue = snap(mu[:, 2] + c[:, 1] * red + c[:, 2] * green + noise[:, 2])
    assert torch.allclose(got, torch.stack([red, green, blue], 1), rtol=0, atol=1e-12)


def _first_pixel_marginals(model, label: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's exact probabilities of the 256 R values and the 256 G values of pixel (0, 0)."""
    with torch.no_grad():
        params = model(torch.zeros(1, 3, 4, 4), torch.tensor([label]))[:, :, :1, :1].double()
    logits, means, log_scales, coeffs = (p.reshape(p.shape[:-2]) for p in split_params(params))
    log_pi = F.log_softmax(logits[0] / temperature, dim=0)  # (M,)
    log_scales = log_scales[0] + math.log(temperature)  # (3, M)
    log_r = log_bin_probability(LEVELS[:, None], means[0, 0], log_scales[0])  # (256 r, M)
    mean_g = means[0, 1] + coeffs[0, 0] * LEVELS[:, None]  # (256 r, M)
    log_g = log_bin_probability(LEVELS[:, None, None], mean_g, log_scales[1])  # (256 g, 256 r, M)
    p_r = torch.logsumexp(log_r + log_pi, dim=1).exp()
    p_g = torch.logsumexp(log_g + log_r + log_pi, dim=(1, 2)).exp()
    return p_r, p_g


def _chi_square_p(values: torch.Tensor, probs: torch.Tensor, groups: int = 16) -> float:
    """p-value of grid-value counts against probabilities, over coarse groups of levels (rare ones merged)."""
    counts = torch.bincount(torch.round((values.double() + 1) * 127.5).long(), minlength=256).double()
    observed, expected = counts.view(groups, -1).sum(1), probs.view(groups, -1).sum(1) * values.numel()
    rare = expected < 5
    observed = torch.cat([observed[~rare], observed[rare].sum().view(1)])
    expected = torch.cat([expected[~rare], expected[rare].sum().view(1)])
    stat = ((observed - expected) ** 2 / expected.clamp(min=1e-12)).sum().item()
    return float(chi2.sf(stat, observed.numel() - 1))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampler_samples_the_model_distribution(temperature: float) -> None:
    """Pixel (0, 0) sees no pixel, so its R and G marginals follow from its parameters and the likelihood."""
    model = _model("gated-bias", size=4)
    m = model.config.nr_logistic_mix
    with torch.no_grad():  # a multi-modal first pixel: narrow logistics at spread-out means
        model.out.bias[m : 2 * m] += torch.tensor([-0.6, 0.0, 0.6])  # R means
        model.out.bias[2 * m : 3 * m] -= 2.0  # R log-scales
        model.out.bias[4 * m : 5 * m] += torch.tensor([0.5, -0.5, 0.0])  # G means
        model.out.bias[5 * m : 6 * m] -= 2.0  # G log-scales
    n, label = 2000, 2
    images = sample(
        model,
        torch.full((n,), label),
        generator=torch.Generator().manual_seed(11),
        image_size=4,
        temperature=temperature,
    )
    p_r, p_g = _first_pixel_marginals(model, label, temperature)
    assert p_r.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert p_g.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert _chi_square_p(images[:, 0, 0, 0], p_r) > 1e-3
    assert _chi_square_p(images[:, 1, 0, 0], p_g) > 1e-3
    # the test has power: the same samples do not fit a different temperature
    wrong_r, _ = _first_pixel_marginals(model, label, temperature * 1.5)
    assert _chi_square_p(images[:, 0, 0, 0], wrong_r) < 1e-6


def test_mode_restored_and_unconditional_batch_size() -> None:
    model = _model("none").train()
    images = sample(model, None, generator=torch.Generator().manual_seed(0), image_size=8, batch_size=3)
    assert images.shape == (3, 3, 8, 8) and model.training and not images.requires_grad
    with pytest.raises(ValueError, match="batch_size"):
        sample(model, None, generator=torch.Generator(), image_size=8)
    with pytest.raises(ValueError, match="method"):
        sample(model, None, generator=torch.Generator(), image_size=8, batch_size=1, method="fast")
    with pytest.raises(ValueError, match="temperature"):
        sample(model, None, generator=torch.Generator(), image_size=8, batch_size=1, temperature=0.0)
    with pytest.raises(ValueError, match="labels"):
        sample(_model("film"), None, generator=torch.Generator(), image_size=8, batch_size=1)


@pytest.mark.parametrize("conditioning", ["gated-bias", "film", "none"])
def test_completion_keeps_the_prefix_and_both_methods_agree(conditioning: str) -> None:
    """Known rows are copied bit for bit; the rest is drawn, identically by the two samplers."""
    model = _model(conditioning, dtype=torch.float64)
    labels = torch.tensor([1, 3, 0])
    prefix = grid_images(3, 8, seed=4).double()
    images = [
        sample(
            model,
            labels,
            generator=torch.Generator().manual_seed(5),
            method=method,
            image_size=8,
            prefix=prefix,
            prefix_rows=3,
        )
        for method in ("naive", "cached")
    ]
    assert torch.equal(images[0], images[1])
    assert torch.equal(images[0][:, :, :3], prefix[:, :, :3])
    assert not torch.equal(images[0][:, :, 3:], prefix[:, :, 3:]) and _on_grid(images[0])


def test_completion_draws_the_same_noise_as_a_sample_of_the_remaining_pixels() -> None:
    """Known pixels draw no noise: the generator ends where 5 rows of drawing leave it."""
    model = _model("gated-bias")
    labels = torch.tensor([0, 2])
    gen = torch.Generator().manual_seed(3)
    sample(model, labels, generator=gen, image_size=8, prefix=grid_images(2, 8), prefix_rows=3)
    used = torch.Generator().manual_seed(3)
    for _ in range(5 * 8):
        torch.rand((2, model.config.nr_logistic_mix), generator=used)
        torch.rand((2, 3), generator=used)
    assert torch.equal(gen.get_state(), used.get_state())


def test_a_whole_prefix_draws_nothing_and_bad_prefixes_are_refused() -> None:
    model = _model("gated-bias")
    labels = torch.tensor([0, 1])
    prefix = grid_images(2, 8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    for method in ("cached", "naive"):
        out = sample(model, labels, generator=gen, method=method, image_size=8, prefix=prefix, prefix_rows=8)
        assert torch.equal(out, prefix) and torch.equal(gen.get_state(), state)
    bad = [
        ({"prefix": prefix, "prefix_rows": 9}, r"prefix_rows must be in \[0, 8\]"),
        ({"prefix": prefix, "prefix_rows": -1}, "prefix_rows must be in"),
        ({"prefix_rows": 2}, "needs a prefix"),
        ({"prefix": prefix}, "prefix_rows=0"),
        ({"prefix": prefix[:1], "prefix_rows": 2}, r"prefix must have shape \(2, 3, 8, 8\)"),
        ({"prefix": grid_images(2, 16), "prefix_rows": 2}, "prefix must have shape"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            sample(model, labels, generator=gen, image_size=8, **kwargs)


def test_complete_draws_several_completions_per_image() -> None:
    model = _model("gated-bias")
    images = grid_images(2, 8, seed=2)
    out = complete(model, images, [3, 1], rows=4, per_image=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 3, 8, 8)
    assert torch.equal(out[:, :, :, :4], images[:, None, :, :4].expand(-1, 3, -1, -1, -1))
    assert not torch.equal(out[0, 0], out[0, 1]), "independent completions of one image"
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        complete(model, images, [3], rows=4, per_image=1, generator=torch.Generator())


def test_sample_grid_figure(tmp_path: Path) -> None:
    images = grid_images(6, 8)
    path = sample_grid_figure(images, [0, 0, 1, 3, 3, 3], ("a", "b", "c", "d"), tmp_path / "sub" / "grid.png")
    assert path.is_file() and path.stat().st_size > 0


def _checkpoint(tmp_path: Path) -> Path:
    model = _model("gated-bias")
    state = {"model_config": dataclasses.asdict(model.config), "model": model_state(model)}
    return save_checkpoint(tmp_path / "m.pt", state)


def test_sample_cli(tmp_path: Path) -> None:
    """The samples folder holds the course's files only: the grid and the PNG copies go beside it."""
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "samples"
    argv = ["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--per-class", "2", "--batch-size", "3", "--png"]) == 0
    names = [f"Class{k}_image_{i:02d}" for k in range(4) for i in (1, 2)]
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.jpg" for n in names]
    assert non_sample_entries(out) == []
    assert (tmp_path / "samples_grid.png").is_file()
    assert sorted(p.name for p in (tmp_path / "samples_png").iterdir()) == [f"{n}.png" for n in names]
    # a smaller second run replaces the first run's samples rather than leaving some behind
    assert main([*argv, "--per-class", "1", "--grid", str(tmp_path / "g.png")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"Class{k}_image_01.jpg" for k in range(4)]
    assert (tmp_path / "g.png").is_file()
    # self-guided samples, in the same layout; a negative weight is refused
    assert main([*argv, "--per-class", "1", "--guidance", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"Class{k}_image_01.jpg" for k in range(4)]
    assert main([*argv, "--guidance", "-1"]) == 2


def test_sample_cli_refuses_what_the_course_would_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "samples"
    out.mkdir()
    (out / "Class0_image_01.jpg").write_bytes(b"an earlier sample")
    (out / "grid.png").write_bytes(b"an old grid")
    (out / "png").mkdir()
    argv = [
        "sample",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--per-class",
        "1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "grid.png, png/" in error and "Class0_image_01" not in error
    assert (out / "Class0_image_01.jpg").read_bytes() == b"an earlier sample"  # nothing touched
    (out / "grid.png").unlink()
    (out / "png").rmdir()
    assert main([*argv, "--grid", str(out / "grid.png")]) == 2
    assert "outside the samples folder" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["Class0_image_01.jpg"]
