"""Bayes classification: consistency with the likelihood, prefixes, priors, and the unconditional case."""

from __future__ import annotations

import pytest
import torch

from pcnn.core.classify import (
    class_log_likelihoods,
    posterior,
    predict,
    prefix_class_log_likelihoods,
    prefix_log_likelihood_curves,
)
from pcnn.core.likelihood import dmol_nll
from tests.conftest import grid_images, tiny_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("gated-bias")


def test_matches_likelihood_for_every_class(model) -> None:
    x = grid_images(3, 8)
    ll = class_log_likelihoods(model, x, chunk=5)  # a chunk that does not divide B*K
    for y in range(4):
        expected = -dmol_nll(x, model(x, torch.full((3,), y)))
        torch.testing.assert_close(ll[:, y], expected, rtol=1e-6, atol=1e-4)


def test_prefix_all_pixels_equals_full(model) -> None:
    x = grid_images(2, 8)
    torch.testing.assert_close(prefix_class_log_likelihoods(model, x, 64), class_log_likelihoods(model, x))
    curves = prefix_log_likelihood_curves(model, x)
    assert curves.shape == (2, 4, 65)
    torch.testing.assert_close(curves[:, :, 64], class_log_likelihoods(model, x))
    torch.testing.assert_close(curves[:, :, 10], prefix_class_log_likelihoods(model, x, 10))


def test_prefix_is_independent_of_later_pixels(model) -> None:
    """Changing pixels after position t must not change the prefix likelihood (exact by causality)."""
    x = grid_images(1, 8)
    x2 = x.clone()
    x2[:, :, 5:, :] = -x2[:, :, 5:, :]
    t = 5 * 8
    torch.testing.assert_close(
        prefix_class_log_likelihoods(model, x, t), prefix_class_log_likelihoods(model, x2, t)
    )


def test_empty_prefix_gives_the_prior(model) -> None:
    x = grid_images(2, 8)
    ll0 = prefix_class_log_likelihoods(model, x, 0)
    assert torch.equal(ll0, torch.zeros(2, 4))
    prior = torch.tensor([0.1, 0.2, 0.3, 0.4])
    torch.testing.assert_close(posterior(ll0, prior).exp(), prior.expand(2, 4))
    torch.testing.assert_close(posterior(ll0).exp(), torch.full((2, 4), 0.25))


def test_posterior_normalised_and_predict(model) -> None:
    x = grid_images(3, 8)
    ll = class_log_likelihoods(model, x)
    post = posterior(ll)
    torch.testing.assert_close(post.exp().sum(1), torch.ones(3))
    assert torch.equal(predict(model, x), ll.argmax(1))
    strong = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.equal(predict(model, x, prior=strong), torch.full((3,), 3))
    assert predict(model, x, tta=True).shape == (3,)


def test_unconditional_has_no_classifier() -> None:
    with pytest.raises(ValueError, match="no classifier"):
        class_log_likelihoods(tiny_model("none"), grid_images(1, 8))


def test_bad_prior_rejected() -> None:
    with pytest.raises(ValueError, match="prior"):
        posterior(torch.zeros(1, 4), torch.tensor([1.0, 2.0]))
