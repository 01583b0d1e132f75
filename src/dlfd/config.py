"""Typed, validated configuration objects and ``--set key=value`` overrides.

Recipes and hyperparameters are frozen dataclasses (the scikit-learn contract: construction only
stores and validates values). :func:`apply_overrides` converts command-line strings to each
field's declared type, descending into nested dataclasses with dotted keys
(``augment.hflip=0``), and names the bad key or value in a :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from dlfd.errors import ConfigError

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b.c=x"]`` -> ``{"a": "1", "b.c": "x"}``; malformed items raise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        out[key] = value.strip()
    return out


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string) to ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: cannot use {value!r} ({'; '.join(errors)})")
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == str(value):
                return choice
        raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
    if origin is tuple:
        parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
        item_type = args[0] if args else str
        if args and args[-1] is not Ellipsis and len(args) != len(parts):
            raise ConfigError(f"{key} needs {len(args)} comma-separated values, got {value!r}")
        return tuple(_convert(p, item_type, key) for p in parts)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation in (int, float, str):
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be {annotation.__name__}, got {value!r}") from None
        if annotation is float and not math.isfinite(converted):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return converted
    return value


def apply_overrides(obj: T, overrides: Mapping[str, Any], *, prefix: str = "") -> T:
    """A copy of dataclass ``obj`` with ``overrides`` applied (dotted keys for nested ones)."""
    if not overrides:
        return obj
    fields = {f.name: f for f in dataclasses.fields(obj) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(type(obj))
    nested: dict[str, dict[str, Any]] = {}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown setting {prefix + head!r}; valid: {valid}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            changes[head] = _convert(value, hints[head], prefix + head)
    for head, sub in nested.items():
        current = changes.get(head, getattr(obj, head))
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"setting {prefix + head!r} has no sub-settings")
        changes[head] = apply_overrides(current, sub, prefix=f"{prefix}{head}.")
    try:
        return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings {dict(overrides)}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """JSON-ready form of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
