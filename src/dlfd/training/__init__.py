"""Training: recipes, the shared epoch loop, resumable checkpoint training."""

from dlfd.training.loop import EpochStats, NonFiniteLossError, learning_rate, train_epochs
from dlfd.training.recipe import TrainRecipe
from dlfd.training.runner import TrainProgress, TrainResult, train_checkpoint

__all__ = [
    "EpochStats",
    "NonFiniteLossError",
    "TrainProgress",
    "TrainRecipe",
    "TrainResult",
    "learning_rate",
    "train_checkpoint",
    "train_epochs",
]
