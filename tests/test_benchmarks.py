"""The benchmarks time what they claim: the course's loss formulation is the same likelihood as ours."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pcnn.core.likelihood import dmol_nll
from tests.conftest import grid_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from train_step import course_dmol_loss  # noqa: E402


def test_the_course_loss_formulation_is_our_likelihood_summed() -> None:
    torch.manual_seed(0)
    x = grid_images(4, 8)
    x[0] = -1.0  # the lowest bin
    x[1] = 1.0  # the highest bin
    params = torch.randn(4, 10 * 5, 8, 8) * 2
    ours = dmol_nll(x, params).sum()
    torch.testing.assert_close(course_dmol_loss(x, params), ours, rtol=1e-5, atol=0)
