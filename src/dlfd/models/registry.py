"""A name -> factory registry of classifiers, so configs and the CLI can pick models by name.

Factories have the signature ``(num_classes: int, *, in_channels: int = 3, **options) ->
nn.Module`` and must return a module carrying ``num_classes`` and ``feature_dim`` attributes;
:func:`create_model` adds ``arch`` (the registry name) and turns every user mistake (unknown
name, bad class count, unknown option) into a one-line :class:`~dlfd.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor, nn

from dlfd.errors import ConfigError
from dlfd.registry import Registry

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)


def require_positive_int(value: object, what: str) -> int:
    """Return ``value`` if it is an int >= 1 (bools rejected), else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


class Classifier(nn.Module):
    """A built-in model: ``forward`` is ``forward_head(forward_features(x))`` (the split
    :mod:`dlfd.models.features` uses); the head defaults to ``self.fc``."""

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def _he_init(self, batchnorm: bool) -> None:
        """He-normal (fan_out) convolutions; with ``batchnorm`` also BatchNorm to weight 1, bias 0
        (Linear layers keep their defaults)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif batchnorm and isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    description: str


MODELS: Registry[_Entry] = Registry("model")


def register_model(name: str, description: str) -> Callable[[F], F]:
    """Decorator registering a model factory under ``name``; a duplicate name raises."""
    return MODELS.decorator(name, lambda factory: _Entry(factory, description))


def list_models() -> dict[str, str]:
    """Registered model names mapped to their one-line descriptions, in registration order."""
    return {name: entry.description for name, entry in MODELS.items()}


def _accepted_options(factory: ModelFactory) -> set[str] | None:
    """Options ``factory`` takes besides ``num_classes``; None if it takes ``**kwargs``."""
    names: set[str] = set()
    for param in inspect.signature(factory).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(param.name)
    names.discard("num_classes")
    return names


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs and factory ``kwargs``."""
    entry = MODELS.get(name)
    require_positive_int(num_classes, "num_classes")

    accepted = _accepted_options(entry.factory)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            valid = ", ".join(sorted(accepted)) or "(none)"
            raise ConfigError(
                f"model {name!r} got unknown option(s) {', '.join(unknown)}; valid options: {valid}"
            )

    model = entry.factory(num_classes, **kwargs)
    if getattr(model, "num_classes", None) != num_classes or not isinstance(
        getattr(model, "feature_dim", None), int
    ):
        raise TypeError(
            f"factory of model {name!r} must return a module with num_classes={num_classes} "
            "and an int feature_dim"
        )
    model.arch = name
    return model
