"""Training: ``train(cfg)`` and its configuration."""

from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "train"]
