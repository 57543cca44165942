"""Training and evaluation transforms on uint8 images, scaled to the likelihood's grid last.

Every image is kept as uint8 through decoding, resizing and augmentation and is scaled to the 256-level
grid ``k/127.5 - 1`` last (docs/design.md#likelihood): the discretized-logistic likelihood assumes that each
sub-pixel is exactly one of the 256 bin centres, which resizing or rotating float tensors would break.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchvision.transforms import v2


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
