"""Registry of unlearning methods: ``@register_method`` on a method function, looked up by key.

Like timm's model registry: a method is available everywhere (``dlfd unlearn --method``,
``dlfd bench``, the contract tests) by being registered; there is no dispatch on names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from dlfd.config import apply_overrides
from dlfd.errors import ConfigError
from dlfd.methods.base import MethodParams, RunContext, UnlearnData

#: ``fn(model, data, params, ctx) -> info``: changes ``model`` in place.
MethodFn = Callable[[nn.Module, UnlearnData, Any, RunContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: key, one-line description, hyperparameter class, function.

    ``tasks``: the task kinds it supports (others are refused with a clear error);
    ``uses_monitor``: the method reads the forgetting score itself (DLFD's dynamic switch), so
    it is monitored whenever a validation loader is given, even with ``select=False``.
    """

    key: str
    description: str
    params_cls: type[MethodParams]
    fn: MethodFn
    tasks: tuple[str, ...] = ("multiclass", "multilabel")
    uses_monitor: bool = False

    def make_params(self, overrides: Mapping[str, Any] | None = None) -> MethodParams:
        """Default hyperparameters with ``overrides`` applied (strings are converted).

        Errors name the method: ``dlfd: epsilon must be in (0, 10], got 1e+30``.
        """
        try:
            return apply_overrides(self.params_cls(), dict(overrides or {}))
        except ConfigError as exc:
            raise ConfigError(f"{self.key}: {exc}") from None


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    key: str,
    description: str,
    params_cls: type[MethodParams],
    *,
    tasks: tuple[str, ...] = ("multiclass", "multilabel"),
    uses_monitor: bool = False,
) -> Callable[[MethodFn], MethodFn]:
    """Register the decorated method function under ``key``."""

    def decorate(fn: MethodFn) -> MethodFn:
        if key in _METHODS:
            raise ValueError(f"method {key!r} is already registered")
        _METHODS[key] = MethodSpec(key, description, params_cls, fn, tasks, uses_monitor)
        return fn

    return decorate


def get_method(key: str) -> MethodSpec:
    """The registered method ``key``; unknown keys raise a ConfigError listing the known."""
    try:
        return _METHODS[key]
    except KeyError:
        known = ", ".join(sorted(_METHODS))
        raise ConfigError(f"unknown method {key!r}; known: {known}") from None


def list_methods() -> dict[str, str]:
    """``{key: description}`` of every registered method, in registration order."""
    return {key: spec.description for key, spec in _METHODS.items()}
