"""Tolerances for two float32 computations of the same quantity that sum in different orders.

Another CPU's kernels (oneDNN picks AVX-512 or AVX2 code, blocks channels differently, splits a batch in
two processes) change the order of float32 sums, never their value in exact arithmetic. A sum of n
products computed in any order lies within n * eps * sum(|products|) of the exact sum (the standard
rounding-error bound), and each of the network's `depth` weight layers adds such an error relative to
the scale of what flows through it. So results are compared relative to their scale (the largest
magnitude of the tensor: single elements may cancel to near zero), with the bound
`depth * n * eps`, where n is the longest sum in the computation: a layer's fan-in, or a weight
gradient's sum over the batch's pixels. It is loose by design (worst-case rounding); a real defect, such
as a batch part weighted wrongly, changes results by percents.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = torch.finfo(torch.float32).eps  # 2**-23: a float32 rounding's relative error is at most eps / 2


def accumulation_rtol(model: nn.Module, batch_pixels: int) -> float:
    """The bound `depth * n * eps` for `model`'s forward and backward on `batch_pixels` pixels in all."""
    weights = [p for name, p in model.named_parameters() if p.dim() >= 2 and not name.endswith(".g")]
    fan_in = max(w[0].numel() for w in weights)  # products summed for one output of a layer
    return len(weights) * max(fan_in, batch_pixels) * EPS


def assert_close_in_float32(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """|actual - expected| <= rtol * max|expected|, elementwise (see the module docstring)."""
    scale = expected.detach().abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)
