"""How a scenario's original model and retrained reference are trained."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dlfd.config import apply_overrides
from dlfd.data.transforms import AugmentConfig
from dlfd.errors import ConfigError


@dataclass(frozen=True)
class TrainRecipe:
    """Architecture and optimisation settings; every field is overridable with ``--set``.

    SGD with momentum and weight decay, cosine or constant learning-rate schedule over
    ``epochs``, stepped per epoch; ``augment`` is applied to training batches only.
    """

    model: str = "resnet18_mlp"
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "schedule": self.schedule in ("cosine", "constant"),
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"invalid recipe value {name}={getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRecipe:
        """Rebuild a recipe from its JSON form (as stored in checkpoint sidecars)."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                flat.update({f"{key}.{sub}": v for sub, v in value.items()})
            else:
                flat[key] = value
        return apply_overrides(cls(), flat)
