"""Training: the shared step loop, resumable checkpoint training (and the recipe, from
:mod:`dlfd.recipe`, which scenarios define below this layer)."""

from dlfd.recipe import TrainRecipe
from dlfd.training.loop import EpochStats, NonFiniteLossError, learning_rate, train_epochs
from dlfd.training.runner import TrainResult, train_checkpoint

__all__ = [
    "EpochStats",
    "NonFiniteLossError",
    "TrainRecipe",
    "TrainResult",
    "learning_rate",
    "train_checkpoint",
    "train_epochs",
]
