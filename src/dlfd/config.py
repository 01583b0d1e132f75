"""Typed, validated configuration objects and ``--set key=value`` overrides.

Recipes and hyperparameters are frozen dataclasses (the scikit-learn contract: construction only
stores and validates values). :func:`apply_overrides` converts command-line strings to each
field's declared type, descending into nested dataclasses with dotted keys
(``augment.hflip=0``), and names the bad key or value in a :class:`ConfigError`.

Numeric settings declare their plausible range where they are declared, with :func:`setting`
(``lr: float = setting(0.01, "(0, 10]")``); :func:`check_bounds`, called by each settings
class on construction, refuses any value that is not a finite number of the declared type
inside that range with one line naming the setting, the value and the range
(``lr must be in (0, 10], got 1e+30``). :func:`setting_ranges` lists them (for help output).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
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
        except (TypeError, ValueError, OverflowError):
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
    except SettingError as exc:
        raise exc.within(prefix) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings {dict(overrides)}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """JSON-ready form of a (nested) dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------ bounds
_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\]\s)]+)\s*([\])])\s*$")


@dataclasses.dataclass(frozen=True)
class Bounds:
    """An interval of plausible values, written ``"[1, 10000]"`` or ``"(0, 10]"``."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Bounds:
        match = _INTERVAL.match(text)
        if match is None:
            raise ValueError(f"bounds must look like '(0, 10]', got {text!r}")
        opening, low, high, closing = match.groups()
        bounds = cls(float(low), float(high), opening == "(", closing == ")")
        if not bounds.low < bounds.high:
            raise ValueError(f"empty bounds {text!r}")
        return bounds

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return (
            f"{'(' if self.low_open else '['}{_number(self.low)}, "
            f"{_number(self.high)}{')' if self.high_open else ']'}"
        )


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}"


class SettingError(ConfigError):
    """A setting outside its declared range (or of the wrong kind); ``name`` is the setting's
    (dotted, once :func:`apply_overrides` knows where it sits) name."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} {detail}")
        self.name = name
        self.detail = detail

    def within(self, prefix: str) -> SettingError:
        """The same error named from a parent setting (``augment.`` + ``degrees``)."""
        return SettingError(prefix + self.name, self.detail) if prefix else self


def setting(default: Any, bounds: str) -> Any:
    """A dataclass field whose value must lie in ``bounds`` (checked by :func:`check_bounds`).

    ``bounds`` is an interval such as ``"(0, 10]"``; for a tuple-valued field every element
    must lie in it; ``None`` passes when the field's type allows it. A subclass that redeclares
    the field with a plain default keeps the bounds declared on its base class.
    """
    return dataclasses.field(default=default, metadata={"bounds": Bounds.parse(bounds)})


@functools.cache
def field_bounds(cls: type) -> dict[str, Bounds]:
    """``{field name: Bounds}`` of dataclass ``cls``, declared on it or on a base class."""
    out: dict[str, Bounds] = {}
    for f in dataclasses.fields(cls):
        for klass in cls.__mro__:
            declared = getattr(klass, "__dataclass_fields__", {}).get(f.name)
            if declared is not None and "bounds" in declared.metadata:
                out[f.name] = declared.metadata["bounds"]
                break
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def setting_ranges(obj: Any) -> dict[str, str]:
    """``{setting: "(0, 10]"}`` of a settings dataclass (instance or class), for help output."""
    cls = obj if isinstance(obj, type) else type(obj)
    return {name: str(bounds) for name, bounds in field_bounds(cls).items()}


def _kind(annotation: Any) -> tuple[Any, bool, bool]:
    """(element type, None allowed, is a tuple) of a field's annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else float
        origin = typing.get_origin(annotation)
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (args[0] if args else float), optional, True
    return annotation, optional, False


def _problem(value: Any, element: Any, bounds: Bounds) -> str | None:
    """Why ``value`` is not acceptable, or None."""
    if element is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return f"must be an integer in {bounds}"
        value = int(value)
    else:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number in {bounds}"
        value = float(value)
        if not math.isfinite(value):
            return f"must be a finite number in {bounds}"
    if value not in bounds:
        return f"must be in {bounds}"
    return None


def check_bounds(obj: Any) -> None:
    """Refuse any field of dataclass ``obj`` outside its declared :func:`setting` bounds.

    Raises :class:`SettingError`: ``"<name> must be in <bounds>, got <value>"``.
    """
    cls = type(obj)
    hints = _hints(cls)
    for name, bounds in field_bounds(cls).items():
        value = getattr(obj, name)
        element, optional, is_tuple = _kind(hints.get(name, float))
        if value is None:
            if optional:
                continue
            raise SettingError(name, f"must be a number in {bounds}, got None")
        values = value if is_tuple and isinstance(value, (tuple, list)) else (value,)
        for item in values:
            problem = _problem(item, element, bounds)
            if problem is not None:
                what = f"values {problem}" if is_tuple else problem
                raise SettingError(name, f"{what}, got {value!r}")
