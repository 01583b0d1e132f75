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
from dlfd.registry import Registry

#: ``fn(model, data, params, ctx) -> info``: changes ``model`` in place.
MethodFn = Callable[[nn.Module, UnlearnData, Any, RunContext], "dict[str, Any] | None"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method. ``uses_monitor``: it reads the forgetting score itself (DLFD's
    switch), so it is monitored whenever a validation loader is given, even with
    ``select=False``; ``test_settings``: fast settings for the contract tests (None: defaults).
    """

    key: str
    description: str
    params_cls: type[MethodParams]
    fn: MethodFn
    tasks: tuple[str, ...] = ("multiclass", "multilabel")
    uses_monitor: bool = False
    test_settings: Mapping[str, Any] | None = None

    def make_params(self, overrides: Mapping[str, Any] | None = None) -> MethodParams:
        """Default hyperparameters with ``overrides`` applied; errors name the method."""
        try:
            return apply_overrides(self.params_cls(), dict(overrides or {}))
        except ConfigError as exc:
            raise ConfigError(f"{self.key}: {exc}") from None


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    key: str, params_cls: type[MethodParams], **options: Any
) -> Callable[[MethodFn], MethodFn]:
    """Register the decorated function as method ``key``: its docstring's first line is the
    description ``dlfd methods`` lists, ``params_cls.test_settings`` (when set) the fast
    settings of the contract tests; ``options``: :class:`MethodSpec`'s ``tasks`` and
    ``uses_monitor``."""

    def make(fn: MethodFn) -> MethodSpec:
        lines = (fn.__doc__ or "").strip().splitlines()
        if not lines:
            raise ConfigError(f"method {key!r}: its function needs a docstring (the description)")
        settings = getattr(params_cls, "test_settings", None)
        return MethodSpec(
            key, lines[0].rstrip("."), params_cls, fn, test_settings=settings, **options
        )

    return METHODS.decorator(key, make)


def get_method(key: str) -> MethodSpec:
    """The registered method ``key``; unknown keys raise a ConfigError listing the known."""
    return METHODS.get(key)


def list_methods() -> dict[str, str]:
    """``{key: description}`` of every registered method, in registration order."""
    return {key: spec.description for key, spec in METHODS.items()}
