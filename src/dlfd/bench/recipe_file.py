"""Benchmark recipe files: the settings of a published table, committed as TOML or JSON.

A recipe holds what ``dlfd bench`` options would (keys: docs/bench.md; ``[options]`` for
``-O``, ``[set.HEAD]`` tables for ``--set HEAD.KEY=VALUE``). The command line wins where both
give a value and ``--set`` items are applied after the file's. The data folder is never in the
file: pass ``--data-root``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dlfd.errors import ConfigError
from dlfd.io import parse_json, read_file_text

_MAX_RECIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class RecipeFile:
    """The parsed content of a recipe file (absent keys are None)."""

    path: Path
    dataset: str | None = None
    description: str = ""
    methods: list[str] | str | None = None
    seeds: list[int | str] | str | None = None
    image_size: int | None = None
    split_seed: int | None = None
    lam: float | None = None
    attacks: bool | None = None
    options: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


#: The keys a file may hold: the fields but ``path``, with ``lambda`` and ``set`` for ``lam``
#: and ``settings``.
_IN_FILE = {"lam": "lambda", "settings": "set"}
_KEYS = {_IN_FILE.get(f.name, f.name) for f in fields(RecipeFile) if f.name != "path"}


def _parse(path: Path) -> dict[str, Any]:
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"recipe {path} must end with .toml or .json")
    text = read_file_text(path, "recipe file", limit=_MAX_RECIPE_BYTES, error=ConfigError)
    if path.suffix == ".json":
        data = parse_json(text, f"recipe {path}", error=ConfigError)
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ConfigError(
                f"reading {path} needs Python 3.11 (tomllib); use a .json recipe"
            ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"recipe {path} is not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a table of settings")
    return data


def _flatten_settings(path: Path, table: Any) -> dict[str, Any]:
    """``{"dlfd": {"lr": 0.1}}`` -> ``{"dlfd.lr": 0.1}`` (nested tables for nested recipe
    fields: ``{"recipe": {"augment": {"hflip": 0}}}`` -> ``recipe.augment.hflip``)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"recipe {path}: 'set' must be a table of tables ([set.METHOD])")
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        elif "." not in prefix:
            raise ConfigError(f"recipe {path}: set.{prefix} must be a table ([set.{prefix}])")
        else:
            flat[prefix] = value

    walk("", table)
    return flat


def load_recipe_file(path: str | Path) -> RecipeFile:
    """Read and check a recipe file; unknown keys and wrong types raise :class:`ConfigError`."""
    path = Path(path)
    data = _parse(path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"recipe {path}: unknown key {unknown[0]!r}; known: {sorted(_KEYS)}")

    def typed(key: str, kind: type | tuple[type, ...]) -> Any:
        value = data.get(key)
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            raise ConfigError(f"recipe {path}: {key!r} has the wrong type ({value!r})")
        return value

    methods = typed("methods", (list, str))
    seeds = typed("seeds", (list, str))
    options = typed("options", dict) or {}
    return RecipeFile(
        path=path,
        dataset=typed("dataset", str),
        description=typed("description", str) or "",
        methods=methods,
        seeds=seeds,
        image_size=typed("image_size", int),
        split_seed=typed("split_seed", int),
        lam=typed("lambda", (float, int)),
        attacks=typed("attacks", bool),
        options={str(k): str(v) for k, v in options.items()},
        settings=_flatten_settings(path, data.get("set") or {}),
    )
