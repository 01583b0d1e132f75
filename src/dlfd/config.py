"""Typed, validated configuration objects and ``--set key=value`` overrides.

Recipes and hyperparameters are frozen dataclasses. :func:`apply_overrides` converts
command-line strings to each field's declared type, with dotted keys for nested dataclasses
(``augment.hflip=0``). Constraints are declared once, on the field (as scikit-learn's
``_parameter_constraints``): a range with :func:`setting` (``lr: float = setting(0.01, "(0,
10]")``), choices with ``Literal``, ``bool`` for flags; :func:`check_bounds` enforces them,
:func:`setting_ranges` lists them and :func:`invalid_examples` derives values they refuse.
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
    """``["a=1", "b.c=x"]`` -> ``{"a": "1", "b.c": "x"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        out[key] = value.strip()
    return out


def _convert(value: Any, annotation: Any, key: str) -> Any:
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
        raise ConfigError(f"{key} must be one of {_either(args)}, got {value!r}")
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
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings {dict(overrides)}: {exc}") from None


def to_dict(obj: Any) -> Any:
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
    """A setting outside its declared range (or of the wrong kind); ``name`` is dotted once
    :func:`apply_overrides` knows where it sits."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name} {detail}")
        self.name = name
        self.detail = detail

    def within(self, prefix: str) -> SettingError:
        return SettingError(prefix + self.name, self.detail) if prefix else self


def setting(default: Any, bounds: str) -> Any:
    """A dataclass field whose value (each element of a tuple; ``None`` where the type allows
    it) must lie in the interval ``bounds``; a subclass redeclaring the field keeps them."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds.parse(bounds)})


@functools.cache
def field_bounds(cls: type) -> dict[str, Bounds]:
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
    """``{setting: "(0, 10]"}`` of a settings dataclass or instance."""
    cls = obj if isinstance(obj, type) else type(obj)
    return {name: str(bounds) for name, bounds in field_bounds(cls).items()}


def _kind(annotation: Any) -> tuple[Any, bool, int]:
    """(element type, None allowed, tuple length or 0) of a field's annotation."""
    args = typing.get_args(annotation)
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else float
    if typing.get_origin(annotation) is tuple:
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (items[0] if items else float), optional, max(len(items), 1)
    return annotation, optional, 0


def _problem(value: Any, element: Any, bounds: Bounds) -> str | None:
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


def _either(choices: tuple[Any, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``."""
    *first, last = map(str, choices)
    return f"{', '.join(first)} or {last}" if first else last


def _literal(element: Any) -> tuple[Any, ...] | None:
    return typing.get_args(element) if typing.get_origin(element) is typing.Literal else None


def check_bounds(obj: Any) -> None:
    """Raise :class:`SettingError` for a field of ``obj`` outside its declared constraints
    (``"lr must be in (0, 10], got 1e+30"``)."""
    cls = type(obj)
    hints, bounded = _hints(cls), field_bounds(cls)
    for f in dataclasses.fields(cls):
        name, value = f.name, getattr(obj, f.name)
        element, optional, size = _kind(hints.get(name, float))
        choices, bounds = _literal(element), bounded.get(name)
        if value is None and optional:
            continue
        if choices is not None and value not in choices:
            raise SettingError(name, f"must be one of {_either(choices)}, got {value!r}")
        if element is bool and not isinstance(value, bool):
            raise SettingError(name, f"must be true or false, got {value!r}")
        if bounds is None:
            continue
        if value is None:
            raise SettingError(name, f"must be a number in {bounds}, got None")
        for item in value if size and isinstance(value, (tuple, list)) else (value,):
            problem = _problem(item, element, bounds)
            if problem is not None:
                raise SettingError(name, f"{'values ' if size else ''}{problem}, got {value!r}")


def invalid_examples(cls: type) -> list[dict[str, Any]]:
    """``[{field: value}, ...]``: values each constrained field of ``cls`` refuses (just outside
    its range, outside its choices, a non-bool flag)."""
    hints, bounded = _hints(cls), field_bounds(cls)
    out: list[dict[str, Any]] = []
    for f in dataclasses.fields(cls):
        element, _, size = _kind(hints.get(f.name, float))
        choices, bounds = _literal(element), bounded.get(f.name)
        if choices is not None:
            out.append({f.name: "|".join(map(str, choices)) + "?"})
        elif element is bool:
            out.append({f.name: "maybe"})
        edges = () if bounds is None else ((bounds.low, bounds.low_open, -1),
                                           (bounds.high, bounds.high_open, 1))  # fmt: skip
        for edge, is_open, step in edges:
            if not math.isfinite(edge):
                continue
            if element is int:
                value: Any = int(edge if is_open else edge + step)
            else:
                value = edge if is_open else math.nextafter(edge, step * math.inf)
            out.append({f.name: (value,) * size if size else value})
    return out
