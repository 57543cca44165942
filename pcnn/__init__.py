"""PixelCNN++G: a class-conditional PixelCNN++ that generates images and classifies them by Bayes' rule."""

from pcnn import _aliases

_aliases.install()  # before anything else: old module paths (`pcnn.model`, ...) resolve from here on

from pcnn.config import ModelConfig, RunConfig, TrainConfig, profile
from pcnn.core.model import PixelCNNPP, build_model
from pcnn.training.checkpoint import load_model

__getattr__ = _aliases.old_attribute  # `pcnn.model` etc. as attributes, imported on first use

__all__ = ["ModelConfig", "PixelCNNPP", "RunConfig", "TrainConfig", "build_model", "load_model", "profile"]
__version__ = "0.1.0"
