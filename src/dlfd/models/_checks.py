"""Argument checks shared by the model factories, so every bad value fails the same way."""

from __future__ import annotations

from dlfd.errors import ConfigError


def require_positive_int(value: object, what: str) -> int:
    """Return ``value`` if it is an int >= 1 (bools rejected), else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def require_probability(value: object, what: str) -> float:
    """Return ``value`` as a float in [0, 1), else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)
