"""Named scenarios: a dataset, its unlearning splits, input format and training recipe.

A scenario builder is registered under a name (``orl-glasses``...) and called with an explicit
split seed and optional data folder. Adding a dataset = one new module that registers a builder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from dlfd.data.problem import UnlearningProblem
from dlfd.data.transforms import InputSpec
from dlfd.errors import ConfigError
from dlfd.training.recipe import TrainRecipe


@dataclass(frozen=True)
class Scenario:
    """Everything that defines one unlearning benchmark setting."""

    name: str
    description: str
    problem: UnlearningProblem
    input_spec: InputSpec
    recipe: TrainRecipe
    options: Mapping[str, str] = field(default_factory=dict)
    data_root: Path | None = None

    @property
    def task(self) -> str:
        return self.problem.records.task

    @property
    def num_classes(self) -> int:
        return self.problem.records.num_classes


class ScenarioBuilder(Protocol):
    def __call__(
        self,
        *,
        split_seed: int,
        data_root: Path | None,
        image_size: int | None,
        options: Mapping[str, str],
    ) -> Scenario: ...


def take_options(
    scenario: str, options: Mapping[str, str], choices: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """Validate a builder's options: each key in ``choices``, each value one of its choices.

    The first choice of each key is its default. Returns the complete resolved options.
    """
    unknown = sorted(set(options) - set(choices))
    if unknown:
        valid = ", ".join(f"{k}={'|'.join(v)}" for k, v in choices.items()) or "none"
        raise ConfigError(f"dataset {scenario!r} has no option {unknown[0]!r}; options: {valid}")
    resolved = {key: values[0] for key, values in choices.items()}
    for key, value in options.items():
        if value not in choices[key]:
            raise ConfigError(
                f"option {key}={value!r} of {scenario!r} must be one of {list(choices[key])}"
            )
        resolved[key] = value
    return resolved


@dataclass(frozen=True)
class _Entry:
    builder: ScenarioBuilder
    description: str
    needs_data_root: bool
    options: Mapping[str, tuple[str, ...]]


_REGISTRY: dict[str, _Entry] = {}


def register_scenario(
    name: str,
    description: str,
    *,
    needs_data_root: bool = False,
    options: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[ScenarioBuilder], ScenarioBuilder]:
    """Decorator registering a scenario builder under ``name``.

    ``options`` lists the builder's choices (first = default): :func:`get_scenario` validates
    user options against them, and ``dlfd datasets`` shows them.
    """

    def decorate(builder: ScenarioBuilder) -> ScenarioBuilder:
        if name in _REGISTRY:
            raise ValueError(f"scenario {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, description, needs_data_root, dict(options or {}))
        return builder

    return decorate


def list_scenarios() -> dict[str, str]:
    """Scenario name -> one-line description."""
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def _entry(name: str) -> _Entry:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return entry


def scenario_options(name: str) -> dict[str, tuple[str, ...]]:
    """The options scenario ``name`` accepts, each with its choices (the first is the default)."""
    return dict(_entry(name).options)


def get_scenario(
    name: str,
    *,
    split_seed: int = 0,
    data_root: str | Path | None = None,
    image_size: int | None = None,
    options: Mapping[str, str] | None = None,
) -> Scenario:
    """Build scenario ``name`` with ``split_seed``; ``data_root`` for datasets the user holds.

    ``options`` are scenario-specific choices (e.g. ``level=instance`` for ``csv``), validated
    here against the choices the scenario registered; the builder receives them completed with
    the defaults, and the returned scenario records them.
    """
    entry = _entry(name)
    if entry.needs_data_root and data_root is None:
        raise ConfigError(f"dataset {name!r} needs --data-root pointing to your copy of it")
    if split_seed < 0:
        raise ConfigError(f"split seed must be a non-negative integer, got {split_seed}")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"image size must be at least 8 pixels, got {image_size}")
    resolved = take_options(name, options or {}, entry.options)
    # absolute, so a checkpoint that records it works from any working directory
    root = Path(os.path.abspath(Path(data_root).expanduser())) if data_root is not None else None
    scenario = entry.builder(
        split_seed=split_seed, data_root=root, image_size=image_size, options=resolved
    )
    return replace(scenario, data_root=root, options=resolved)
