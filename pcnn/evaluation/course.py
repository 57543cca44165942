"""Our model behind the course's grading scripts, classification_evaluation.py and generation_evaluation.py.

Their fixed lines build a model, move it with ``model.to(device)``, load the fixed file
``models/conditional_pixelcnn.pth`` with ``model.load_state_dict(torch.load(path))`` and call
``get_label(model, model_input, device)`` on batches from their loader: float32 images (B, 3, 32, 32),
decoded to [0, 1], resized as floats by ``transforms.Resize((32, 32))`` and rescaled by ``(x - .5) * 2``
to [-1, 1]; it must return the predicted class indices, an int64 tensor (B,) on `device`, which is
compared with ``my_bidict[category]`` (Class0..Class3 -> 0..3, our label order). The generation script
calls a ``my_sample(model, gen_data_dir)`` that must leave 25 images per class in ``samples/``, every
one of which pytorch-fid then scores against ``data/test`` (dims 192).

:class:`CourseModel` is the model those lines handle: it loads a PixelCNN++G checkpoint safely with
:func:`pcnn.training.checkpoint.load_model` and accepts the harness's ``load_state_dict`` call;
:func:`get_label` classifies by Bayes' rule (:mod:`pcnn.core.classify`), and :func:`write_samples` fills
the samples folder. docs/course.md says which lines of the two scripts to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pcnn.config import ModelConfig
from pcnn.core.classify import predict
from pcnn.evaluation.fid import check_output_folder, remove_samples, save_course_samples
from pcnn.training.checkpoint import FORMAT, CheckpointError, load_model
from pcnn.workflow.experiments import draw_class_samples

COURSE_MODEL_PATH = "models/conditional_pixelcnn.pth"
_RANGE_SLACK = 1e-3  # the course's float resize is a convex combination: it stays in [-1, 1] up to rounding


def _describe(obj: object) -> str:
    """What a loaded file holds, in words, for the error that refuses it."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        keys = ", ".join(repr(k) for k in list(obj)[:3])
        return (
            f"a bare state_dict of {len(obj)} tensors (keys {keys}, ...), such as the course's own PixelCNN"
            " saves with torch.save(model.state_dict(), ...)"
        )
    if isinstance(obj, Mapping) and "format" in obj:
        return f"a file of format {obj['format']!r}"
    return f"a {type(obj).__name__}"


def _peek(path: str | Path) -> str:
    """Describe a checkpoint file that is not ours, read safely (weights_only); '' if it cannot be read."""
    try:
        return _describe(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:  # noqa: BLE001 - load_checkpoint has already said why it refused the file
        return ""


def _chosen_weights(payload: Mapping[str, Any], weights: str) -> Mapping[str, Tensor]:
    """The weights `load_model` would take from this checkpoint: EMA for "auto"/"ema" when present."""
    ema = payload.get("ema")
    if weights == "ema" and ema is None:
        raise CheckpointError("the checkpoint has no EMA weights")
    return ema if (ema is not None and weights != "raw") else payload["model"]


def to_grid(model_input: Tensor, image_size: int) -> Tensor:
    """The course's [-1, 1] images snapped to the 256-level grid that our discretized likelihood scores.

    The course resizes float images, so its pixels fall between the likelihood's bins; the nearest bin is
    what our own pipeline (uint8 resize, then the grid) gives, up to the resize's rounding.
    """
    if not torch.is_floating_point(model_input) or model_input.ndim != 4 or model_input.shape[1] != 3:
        raise ValueError(
            f"model_input must be float images (B, 3, H, W) as the course's loader yields them, got "
            f"{model_input.dtype} {tuple(model_input.shape)}"
        )
    if tuple(model_input.shape[-2:]) != (image_size, image_size):
        size = "x".join(str(n) for n in model_input.shape[-2:])
        raise ValueError(
            f"the model takes {image_size}x{image_size} images, got {size}: resize with "
            f"transforms.Resize(({image_size}, {image_size})) as the course's loader does"
        )
    low, high = model_input.min().item(), model_input.max().item()
    if low < -1 - _RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise ValueError(
            f"model_input must lie in [-1, 1] (the course's rescaling (x - .5) * 2 of [0, 1] images), got "
            f"values in [{low:.3g}, {high:.3g}]"
        )
    levels = torch.round((model_input.float().clamp(-1, 1) + 1) * 127.5)
    return levels / 127.5 - 1


class CourseModel(nn.Module):
    """A PixelCNN++G checkpoint as the course's scripts handle their model.

    `weights` picks the Polyak-averaged or raw weights as :func:`pcnn.training.checkpoint.load_model` does;
    `tta` averages the class log-likelihoods over horizontal flips. Calling the model returns class indices.
    """

    def __init__(
        self,
        path: str | Path = COURSE_MODEL_PATH,
        *,
        weights: str = "auto",
        tta: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.weights = weights
        self.tta = tta
        try:
            self.net = load_model(path, device=device, weights=weights)
        except CheckpointError as exc:
            held = _peek(path)
            hint = f"; it holds {held}" if held else ""
            raise CheckpointError(
                f"{exc}{hint}. CourseModel needs a PixelCNN++G checkpoint, as `pcnn export RUN --out "
                f"{COURSE_MODEL_PATH}` writes"
            ) from exc
        if self.net.config.conditioning == "none":
            raise ValueError(f"{path}: the unconditional variant 'none' cannot classify")

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward(self, model_input: Tensor) -> Tensor:
        """The most probable class of each image (uniform prior): int64 (B,) on the model's device."""
        x = to_grid(model_input.to(self.device), self.net.config.image_size)
        return predict(self.net, x, tta=self.tta)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Take what the harness's fixed line hands over: ``torch.load`` of our whole checkpoint file.

        Its weights (EMA or raw, as chosen at construction) replace the current ones; a file of another
        format, or of another architecture than the one built at construction, is refused with the reason.
        """
        if not isinstance(state_dict, Mapping) or state_dict.get("format") != FORMAT:
            raise CheckpointError(
                f"CourseModel.load_state_dict was given {_describe(state_dict)}, not a {FORMAT} checkpoint; "
                f"save the PixelCNN++G checkpoint as {COURSE_MODEL_PATH} (`pcnn export RUN --out ...`)"
            )
        config = ModelConfig(**state_dict["model_config"])
        if config != self.net.config:
            raise CheckpointError(
                f"the checkpoint's model ({config}) is not the one this CourseModel was built from "
                f"({self.net.config}); build it from the same file"
            )
        return self.net.load_state_dict(
            _chosen_weights(state_dict, self.weights), strict=strict, assign=assign
        )


def get_label(model: CourseModel, model_input: Tensor, device: str | torch.device) -> Tensor:
    """The classification script's hook: the predicted class of each image, int64 (B,) on `device`."""
    if not isinstance(model, CourseModel):
        raise TypeError(
            f"get_label needs the CourseModel built from our checkpoint, got {type(model).__name__}; replace "
            "the script's model line as docs/course.md shows"
        )
    return model(model_input).to(device)


def write_samples(
    model: CourseModel, gen_data_dir: str | Path, per_class: int = 25, *, seed: int = 0, batch_size: int = 0
) -> list[Path]:
    """The generation script's hook: `per_class` samples of every class in `gen_data_dir`, nothing else.

    Files are named as the course names them (``Class{k}_image_{nn}.jpg``); a folder holding other files
    is refused, since the script would score them too, and an earlier run's samples are replaced.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    check_output_folder(gen_data_dir)
    images, labels = draw_class_samples(
        model.net, per_class, seed=seed, device=model.device, batch_size=batch_size
    )
    remove_samples(gen_data_dir)
    return save_course_samples(images, labels, gen_data_dir)
