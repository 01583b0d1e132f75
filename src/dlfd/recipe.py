"""How a scenario's original model and retrained reference are trained."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dlfd.config import apply_overrides, check_bounds, setting
from dlfd.data.transforms import AugmentConfig
from dlfd.errors import ConfigError


@dataclass(frozen=True)
class TrainRecipe:
    """Architecture and optimisation settings: SGD, a cosine or constant schedule stepped per
    epoch; ``augment`` applies to training batches only."""

    model: str = "resnet18_mlp"
    epochs: int = setting(40, "[1, 10000]")
    batch_size: int = setting(32, "[1, 65536]")
    lr: float = setting(0.01, "(0, 10]")
    momentum: float = setting(0.9, "[0, 1)")
    weight_decay: float = setting(5e-4, "[0, 1]")
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(f"augment must be an AugmentConfig, got {self.augment!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRecipe:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                flat.update({f"{key}.{sub}": v for sub, v in value.items()})
            else:
                flat[key] = value
        return apply_overrides(cls(), flat)
