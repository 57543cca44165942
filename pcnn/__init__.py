"""PixelCNN++G: a class-conditional PixelCNN++ that generates images and classifies them by Bayes' rule."""

from pcnn.checkpoint import load_model
from pcnn.config import ModelConfig, RunConfig, TrainConfig, profile
from pcnn.model import PixelCNNPP, build_model

__all__ = ["ModelConfig", "PixelCNNPP", "RunConfig", "TrainConfig", "build_model", "load_model", "profile"]
__version__ = "0.1.0"
