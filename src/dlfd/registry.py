"""One name -> entry registry for models, methods and scenarios.

Like timm's model registry: a thing is available everywhere (config, CLI, bench, tests) by
being registered, and a package registers its things by :meth:`Registry.discover`, which
imports every module of the package: adding one is adding a module, never editing a list of
imports, and a module that fails to import fails loudly instead of silently missing.
Entries are listed in registration order (modules import in name order; ``first`` puts some
ahead, e.g. the methods' reference rows).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from dlfd.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F")


class Registry(Generic[T]):
    """Entries of one ``kind`` ("model", "method", "dataset") by name, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Register ``entry`` as ``name``; a blank, padded or already used name raises."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ConfigError(
                f"{self.kind} name must be a non-empty string without spaces, got {name!r}"
            )
        if name in self._entries:
            raise ConfigError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = entry

    def decorator(self, name: str, make: Callable[[F], T]) -> Callable[[F], F]:
        """A decorator registering ``make(fn)`` as ``name`` and returning ``fn`` unchanged."""

        def decorate(fn: F) -> F:
            self.add(name, make(fn))
            return fn

        return decorate

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown one raises a ConfigError naming the known ones."""
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}")
        return entry

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests registering a temporary entry undo it with this)."""
        self._entries.pop(name, None)

    def discover(self, package: str, first: Sequence[str] = ()) -> None:
        """Import every module of ``package`` (``first`` ones first), so each registers its own.

        An import error propagates: a module that is present but broken is a bug to see.
        """
        path = importlib.import_module(package).__path__
        found = sorted(info.name for info in pkgutil.iter_modules(path))
        for name in [*first, *(n for n in found if n not in first)]:
            importlib.import_module(f"{package}.{name}")
