"""Self-guided sampling: exact per-level probabilities, exact class log-likelihoods, the model's own
distribution at guidance 0, and guidance that moves samples towards their class under the model."""

from __future__ import annotations

import pytest
import torch

from pcnn.core.likelihood import dmol_nll, log_bin_probability
from pcnn.sampling.guided import guided_sample, level_log_probs
from tests.conftest import grid_images
from tests.test_sample import LEVELS, _chi_square_p, _first_pixel_marginals, _model

pytestmark = pytest.mark.isa_sensitive


def test_level_log_probs_match_the_likelihood_bins_and_normalise() -> None:
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(5, 3, generator=gen) * 2.4 - 1.2  # also beyond the grid's ends
    log_scale = torch.rand(5, 3, generator=gen) * 6 - 6.5  # narrow to wide, above the clamp at -7
    got = level_log_probs(mean, log_scale)
    assert got.shape == (5, 3, 256)
    levels = LEVELS.float().view(256, 1, 1)
    want = log_bin_probability(levels, mean, log_scale).permute(1, 2, 0)
    # float32: log-probabilities near 0 agree to a few ulps of the logistic's arguments (|t| <= ~700)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)
    assert torch.allclose(
        torch.logsumexp(got.double(), dim=-1), torch.zeros(5, 3, dtype=torch.float64), atol=1e-4
    )


def test_class_log_likelihoods_are_exact_under_teacher_forcing() -> None:
    """With every row given, nothing is drawn and each class's sum is log p(x | k) of the full network."""
    model = _model("gated-bias", size=8)
    x = grid_images(3, 8, seed=4)
    out = guided_sample(
        model,
        [0, 1, 3],
        guidance=2.0,
        generator=torch.Generator().manual_seed(0),
        image_size=8,
        prefix=x,
        prefix_rows=8,
    )
    assert torch.equal(out.images, x)
    with torch.no_grad():
        want = torch.stack([-dmol_nll(x, model(x, torch.full((3,), k))) for k in range(4)], dim=1)
    # sums of 192 float32 terms of a few nats each: a relative 1e-5 of the total
    assert torch.allclose(out.log_likelihoods, want, rtol=1e-5, atol=1e-2)
    assert torch.equal(out.own_predictions(), want.argmax(dim=1))


def test_guidance_zero_samples_the_model_distribution() -> None:
    """Pixel (0, 0): its R and G values follow the model's exact marginals, as the plain sampler's do."""
    model = _model("gated-bias", size=4)
    m = model.config.nr_logistic_mix
    with torch.no_grad():  # a multi-modal first pixel, as in tests/test_sample.py
        model.out.bias[m : 2 * m] += torch.tensor([-0.6, 0.0, 0.6])
        model.out.bias[2 * m : 3 * m] -= 2.0
        model.out.bias[4 * m : 5 * m] += torch.tensor([0.5, -0.5, 0.0])
        model.out.bias[5 * m : 6 * m] -= 2.0
    n, label = 2000, 2
    # only pixel (0, 0) matters: the rest of each image is given (a prefix of 4 rows would draw nothing)
    images = guided_sample(
        model, torch.full((n,), label), guidance=0.0, generator=torch.Generator().manual_seed(3), image_size=4
    ).images
    p_r, p_g = _first_pixel_marginals(model, label, 1.0)
    assert _chi_square_p(images[:, 0, 0, 0], p_r) > 1e-3
    assert _chi_square_p(images[:, 1, 0, 0], p_g) > 1e-3
    wrong_r, _ = _first_pixel_marginals(model, (label + 1) % 4, 1.0)  # power: another class's marginal
    assert _chi_square_p(images[:, 0, 0, 0], wrong_r) < 1e-6


def test_guidance_raises_the_models_own_posterior_of_the_target_class() -> None:
    model = _model("gated-bias", size=8)
    with torch.no_grad():  # a model whose images depend clearly on the label
        for name, weight in model.named_parameters():
            if "label" in name:
                weight.mul_(4.0)
    labels = torch.arange(4).repeat(16)

    def own_log_posterior(guidance: float) -> float:
        out = guided_sample(
            model, labels, guidance=guidance, generator=torch.Generator().manual_seed(5), image_size=8
        )
        log_post = torch.log_softmax(out.log_likelihoods, dim=1)
        return log_post.gather(1, labels.view(-1, 1)).mean().item()

    plain, guided = own_log_posterior(0.0), own_log_posterior(3.0)
    assert guided > plain + 0.4, (plain, guided)  # measured: -1.16 -> -0.34


def test_same_generator_same_images_and_bad_input_refused() -> None:
    model = _model("gated-bias", size=4)
    draw = lambda: guided_sample(
        model, [1, 2], guidance=1.0, generator=torch.Generator().manual_seed(1), image_size=4
    )
    assert torch.equal(draw().images, draw().images)
    gen = torch.Generator()
    with pytest.raises(ValueError, match="guidance"):
        guided_sample(model, [0], guidance=-1.0, generator=gen, image_size=4)
    with pytest.raises(ValueError, match="labels"):
        guided_sample(model, [4], guidance=1.0, generator=gen, image_size=4)
    with pytest.raises(ValueError, match="class-conditional"):
        guided_sample(_model("none", size=4), [0], guidance=1.0, generator=gen, image_size=4)
