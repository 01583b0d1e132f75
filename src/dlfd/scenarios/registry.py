"""Named scenarios: a dataset, its unlearning splits, input format and training recipe.

A scenario builder is registered under a name (``orl-glasses``...) and called with an explicit
split seed and optional data folder. Adding a dataset = one new module that registers a builder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dlfd.data.problem import UnlearningProblem
from dlfd.data.transforms import InputSpec
from dlfd.errors import ConfigError
from dlfd.recipe import TrainRecipe
from dlfd.registry import Registry


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


#: ``builder(split_seed=int, data_root=Path | None, image_size=int | None, options=Mapping)``
ScenarioBuilder = Callable[..., Scenario]


def make_scenario(
    problem: UnlearningProblem, description: str, recipe: TrainRecipe, size: int, **spec: Any
) -> Scenario:
    """The scenario of ``problem`` (named after it) with square ``size`` inputs; ``spec`` holds
    the other :class:`InputSpec` fields."""
    return Scenario(
        problem.name, description, problem, InputSpec(size=(size, size), **spec), recipe
    )


def take_options(
    scenario: str, options: Mapping[str, str], choices: Mapping[str, tuple[str, ...]]
) -> dict[str, str]:
    """Validate a builder's options against ``choices`` (the first choice of each key is its
    default); returns the complete resolved options."""
    unknown = sorted(set(options) - set(choices))
    if unknown:
        valid = ", ".join(f"{k}={'|'.join(v)}" for k, v in choices.items()) or "none"
        raise ConfigError(f"dataset {scenario!r} has no option {unknown[0]!r}; options: {valid}")
    for key, value in options.items():
        if value not in choices[key]:
            raise ConfigError(
                f"option {key}={value!r} of {scenario!r} must be one of {list(choices[key])}"
            )
    return {key: options.get(key, values[0]) for key, values in choices.items()}


@dataclass(frozen=True)
class _Entry:
    builder: ScenarioBuilder
    description: str
    needs_data_root: bool | str
    options: Mapping[str, tuple[str, ...]]


SCENARIOS: Registry[_Entry] = Registry("dataset")


def register_scenario(
    name: str,
    description: str,
    *,
    needs_data_root: bool | str = False,
    options: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[ScenarioBuilder], ScenarioBuilder]:
    """Decorator registering a scenario builder under ``name``. ``needs_data_root``: the scenario
    reads the user's copy of a dataset; a string says what ``--data-root`` must point to (the
    builder is only called with a data root). ``options`` lists the builder's choices (first =
    default): :func:`get_scenario` validates user options against them, and ``dlfd datasets`` shows
    them."""
    return SCENARIOS.decorator(
        name, lambda builder: _Entry(builder, description, needs_data_root, dict(options or {}))
    )


def list_scenarios() -> dict[str, str]:
    """Scenario name -> one-line description, in registration order."""
    return {name: entry.description for name, entry in SCENARIOS.items()}


def scenario_options(name: str) -> dict[str, tuple[str, ...]]:
    """The options scenario ``name`` accepts, each with its choices (the first is the default)."""
    return dict(SCENARIOS.get(name).options)


def get_scenario(
    name: str,
    *,
    split_seed: int = 0,
    data_root: str | Path | None = None,
    image_size: int | None = None,
    options: Mapping[str, str] | None = None,
) -> Scenario:
    """Build scenario ``name`` with ``split_seed``; ``data_root`` for datasets the user holds.
    ``options`` (e.g. ``level=instance`` for ``csv``) are validated against the scenario's
    registered choices; the builder gets them completed with the defaults, and the returned scenario
    records them."""
    entry = SCENARIOS.get(name)
    if entry.needs_data_root and data_root is None:
        what = (
            entry.needs_data_root if isinstance(entry.needs_data_root, str) else "your copy of it"
        )
        raise ConfigError(f"dataset {name!r} needs --data-root pointing to {what}")
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
