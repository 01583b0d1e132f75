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

from torch import nn

from dlfd.errors import ConfigError
from dlfd.models._checks import require_positive_int

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)


@dataclass(frozen=True)
class _Entry:
    factory: ModelFactory
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, description: str) -> Callable[[F], F]:
    """Decorator registering a model factory under ``name``; a duplicate name raises."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(f"model name must be a non-empty string without spaces, got {name!r}")

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ConfigError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = _Entry(factory=factory, description=description)
        return factory

    return decorator


def list_models() -> dict[str, str]:
    """Registered model names mapped to their one-line descriptions, sorted by name."""
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


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
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        available = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise ConfigError(f"unknown model {name!r}; available models: {available}")
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
