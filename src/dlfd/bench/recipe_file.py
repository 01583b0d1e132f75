"""Benchmark recipe files: the settings of a published table, committed as TOML or JSON.

A recipe holds what ``dlfd bench`` options would (the command line wins where both give a
value; ``--set`` items are applied after the file's)::

    dataset = "mufac"
    methods = ["original", "retrain", "finetune", "dlfd"]   # or "all"
    seeds = [0, 1, 2]           # or "0-19", "0-2,5" (as --seeds)
    image_size = 128            # optional
    split_seed = 0              # optional: one split for every seed
    lambda = 0.5                # optional
    attacks = false             # optional
    [options]                   # scenario options (-O KEY=VALUE)
    val = "carve"
    [set.recipe]                # --set recipe.KEY=VALUE: how original/retrained are trained
    epochs = 100
    [set.dlfd]                  # --set dlfd.KEY=VALUE
    lr = 0.008

The data folder is never in the file: pass ``--data-root``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlfd.errors import ConfigError
from dlfd.io import parse_json, read_file_text

_MAX_RECIPE_BYTES = 1 << 20

_KEYS = {
    "dataset",
    "description",
    "methods",
    "seeds",
    "image_size",
    "split_seed",
    "lambda",
    "attacks",
    "options",
    "set",
}


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


def _parse(path: Path) -> dict[str, Any]:
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"recipe {path} must end with .toml or .json")
    text = read_file_text(path, "recipe file", limit=_MAX_RECIPE_BYTES, error=ConfigError)
    if path.suffix == ".json":
        data = parse_json(text, f"recipe {path}", error=ConfigError)
    elif path.suffix == ".toml":
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
    else:
        raise ConfigError(f"recipe {path} must end with .toml or .json")
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
