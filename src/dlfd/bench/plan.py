"""What a benchmark runs: scenario, seeds, methods and every setting, checked before any work.

A :class:`BenchPlan` is plain, picklable data, so a run can execute in another process.
Settings are ``HEAD.KEY=VALUE`` items: ``recipe.KEY`` changes how the original and the retrained
reference are trained, ``all.KEY`` a setting every method shares (``select``,
``save_threshold``, ``monitor_samples``), ``METHOD.KEY`` one method's setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlfd.config import apply_overrides
from dlfd.errors import ConfigError
from dlfd.io import sha256_bytes
from dlfd.methods import MethodParams, get_method, list_methods
from dlfd.recipe import TrainRecipe
from dlfd.runtime import SEED_MAX
from dlfd.scenarios import scenario_options

#: Rows taken from the two trained checkpoints of each seed, not from an unlearning run:
#: ``original`` is the original model (wall time 0), ``retrain`` the retrained reference
#: (wall time = its training time).
CHECKPOINT_ROWS: tuple[str, ...] = ("original", "retrain")
RECIPE_HEAD = "recipe"
ALL_HEAD = "all"


@dataclass(frozen=True)
class BenchPlan:
    """Everything a benchmark needs; ``methods`` are resolved keys in table order.

    ``split_seed=None`` makes each seed its own split seed. ``settings`` maps a method key (or
    ``all``) to its overrides. ``forget_entries`` (from the forget list ``forget``) replace
    every seed's forget set; empty: the scenario's own. ``original`` (and ``reference``): given
    checkpoints (e.g. from ``dlfd import``) used for every seed instead of training them; the
    reference, when not given, is trained with the original's architecture.

    Where the runs execute is not part of any run's configuration (hash): ``backend`` is
    ``local`` (this machine; ``jobs`` processes) or ``ray`` (Ray tasks on the cluster at
    ``address``, a local one when None); each Ray task asks for ``task_cpus`` CPUs (None: 1)
    and ``task_gpus`` GPUs (None: 1 when ``device`` is CUDA, else 0).
    """

    dataset: str
    out: Path
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = CHECKPOINT_ROWS
    data_root: Path | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    image_size: int | None = None
    split_seed: int | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lam: float = 0.5
    attacks: bool = False
    save_models: bool = True
    device: str = "auto"
    cache_dir: Path | None = None
    jobs: int = 1
    per_example: int = 0
    forget: Path | None = None
    forget_entries: tuple[str, ...] = ()
    original: Path | None = None
    reference: Path | None = None
    backend: str = "local"
    address: str | None = None
    task_cpus: int | None = None
    task_gpus: float | None = None

    @property
    def forget_request(self) -> dict[str, Any] | None:
        """The records' ``forget_request`` entry (file, entries, sha256); None without one."""
        if not self.forget_entries:
            return None
        return {
            "file": None if self.forget is None else str(self.forget),
            "entries": len(self.forget_entries),
            "sha256": forget_request_sha256(self.forget_entries),
        }

    @property
    def forget_request_sha256(self) -> str | None:
        return forget_request_sha256(self.forget_entries) if self.forget_entries else None

    def split_seed_for(self, seed: int) -> int:
        return seed if self.split_seed is None else self.split_seed

    def method_overrides(self, method: str) -> dict[str, Any]:
        """The overrides of ``method``: the shared ``all.*`` ones, then its own."""
        return {**self.settings.get(ALL_HEAD, {}), **self.settings.get(method, {})}

    def method_params(self, method: str) -> MethodParams:
        """``method``'s resolved settings (defaults with the plan's overrides)."""
        return get_method(method).make_params(self.method_overrides(method))

    def train_recipe(self, base: TrainRecipe) -> TrainRecipe:
        """The scenario's recipe ``base`` with the plan's ``recipe.*`` overrides."""
        return apply_overrides(base, self.recipe)


def forget_request_sha256(entries: Iterable[str]) -> str:
    """sha256 of a forget request: its distinct entries, sorted, one per line (so the order of
    the list and repeated lines do not matter; comments are not entries)."""
    return sha256_bytes("\n".join(sorted(set(entries))).encode("utf-8"))


#: Where a bench's runs execute (``--backend``).
BACKENDS: tuple[str, ...] = ("local", "ray")

#: The most models per side ``--per-example`` may ask for (the challenge used 512).
MAX_PER_EXAMPLE = 1024

#: The most seeds one range (``A-B``) may expand to: a typo such as ``0-4294967295`` is refused
#: rather than expanded into billions of runs.
MAX_RANGE_SEEDS = 10_000

_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)", re.ASCII)


def _seed_number(text: str, item: object) -> int:
    """``text`` (of ``item``) as a seed: plain decimal digits, no sign or leading zeros."""
    try:
        seed = int(text)
    except ValueError:  # not a number, or more digits than Python converts
        raise ConfigError(f"seeds must be non-negative integers, got {item!r}") from None
    if str(seed) != text or seed < 0:
        raise ConfigError(f"seeds must be non-negative integers, got {item!r}")
    if seed > SEED_MAX:
        raise ConfigError(f"seeds must be at most {SEED_MAX}, got {seed}")
    return seed


def _seed_range(item: str) -> range | None:
    """``"A-B"`` -> ``range(A, B + 1)``; None when ``item`` is not a range."""
    match = _RANGE.fullmatch(item.strip())
    if match is None:
        return None
    first, last = (_seed_number(text, item) for text in match.groups())
    if last < first:
        raise ConfigError(
            f"seed range {item.strip()!r} is reversed or empty; write it lowest first "
            f"({last}-{first})"
        )
    if last - first + 1 > MAX_RANGE_SEEDS:
        raise ConfigError(
            f"seed range {item.strip()!r} holds {last - first + 1} seeds; at most "
            f"{MAX_RANGE_SEEDS} per range"
        )
    return range(first, last + 1)


def parse_seeds(text: str | Iterable[int | str]) -> tuple[int, ...]:
    """``"0,1,2"``, ``"0-19"`` or ``"0-2,5,7-8"`` (or a list of such items) -> distinct seeds
    in the given order; ``A-B`` is every seed from A to B, both included. A reversed range, a
    range of more than :data:`MAX_RANGE_SEEDS` seeds, a seed above ``SEED_MAX`` or a seed given
    twice is refused with :class:`ConfigError`.
    """
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    seeds: dict[int, None] = {}
    for item in items:
        span = _seed_range(item) if isinstance(item, str) else None
        for seed in span if span is not None else [_seed_number(str(item).strip(), item)]:
            if seed in seeds:
                raise ConfigError(f"seed {seed} is listed twice")
            seeds[seed] = None
    if not seeds:
        raise ConfigError("give at least one seed")
    return tuple(seeds)


def available_methods() -> tuple[str, ...]:
    """Every row a benchmark can have: the two checkpoint rows, then each registered method."""
    return (*CHECKPOINT_ROWS, *(k for k in list_methods() if k not in CHECKPOINT_ROWS))


def resolve_methods(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"all"`` or ``"k1,k2"`` (or a list) -> method keys, unknown keys refused by name."""
    known = available_methods()
    if isinstance(spec, str):
        items = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        items = [str(p).strip() for p in spec]
    if items == ["all"]:
        return known
    unknown = [k for k in items if k not in known]
    if unknown:
        raise ConfigError(
            f"unknown method {unknown[0]!r} in --methods; known: {', '.join(known)} (or all)"
        )
    if not items:
        raise ConfigError("--methods is empty; give method keys or 'all'")
    return tuple(dict.fromkeys(items))


def split_settings(
    items: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``{"recipe.epochs": 1, "dlfd.lr": 0.01}`` -> (recipe overrides, per-head overrides)."""
    recipe: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    for key, value in items.items():
        head, dot, rest = key.partition(".")
        if not dot or not head or not rest:
            raise ConfigError(
                f"bench setting {key!r} must be HEAD.KEY: recipe.KEY, all.KEY or METHOD.KEY"
            )
        if head == RECIPE_HEAD:
            recipe[rest] = value
        else:
            settings.setdefault(head, {})[rest] = value
    return recipe, settings


def validate_plan(plan: BenchPlan) -> None:
    """Refuse, before any work, settings that name nothing or have bad values."""
    if not plan.methods:
        raise ConfigError("no methods to run")
    scenario_options(plan.dataset)  # an unknown scenario is refused, naming the known ones
    apply_overrides(TrainRecipe(), plan.recipe)  # names and values of recipe.* settings
    shared = {f.name for f in dataclasses.fields(MethodParams)}
    for head, overrides in plan.settings.items():
        if head in CHECKPOINT_ROWS:
            raise ConfigError(
                f"'{head}.*' settings have no effect: the {head} row is the "
                f"{'original model' if head == 'original' else 'retrained reference'} "
                "checkpoint; change how it is trained with recipe.KEY"
            )
        if head == ALL_HEAD:
            bad = sorted(set(overrides) - shared)
            if bad:
                raise ConfigError(
                    f"'all.{bad[0]}' is not a setting every method shares; "
                    f"shared: {', '.join(sorted(shared))}"
                )
            continue
        get_method(head)  # unknown method keys raise, naming the known ones
        plan.method_params(head)  # settings of a method that does not run are checked too
    for method in plan.methods:
        if method not in CHECKPOINT_ROWS:
            plan.method_params(method)
    if plan.reference is not None and plan.original is None:
        raise ConfigError("--reference needs --original (a reference for a given original)")
    if plan.original is not None and plan.per_example:
        raise ConfigError("--per-example trains its own originals; it cannot use --original")
    if (
        isinstance(plan.per_example, bool)
        or not isinstance(plan.per_example, int)
        or plan.per_example == 1
        or not 0 <= plan.per_example <= MAX_PER_EXAMPLE
    ):
        raise ConfigError(
            f"--per-example must be 0 (off) or a number of models from 2 to {MAX_PER_EXAMPLE}, "
            f"got {plan.per_example!r}"
        )
    if plan.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {plan.jobs}")
    _validate_backend(plan)
    if not 0.0 <= plan.lam <= 1.0:
        raise ConfigError(f"lambda must be in [0, 1], got {plan.lam}")


def _validate_backend(plan: BenchPlan) -> None:
    """Refuse a backend that does not exist and Ray's settings without ``--backend ray``."""
    if plan.backend not in BACKENDS:
        raise ConfigError(f"unknown --backend {plan.backend!r}; known: {', '.join(BACKENDS)}")
    ray_only = {
        "--address": plan.address,
        "--task-cpus": plan.task_cpus,
        "--task-gpus": plan.task_gpus,
    }
    given = [flag for flag, value in ray_only.items() if value is not None]
    if plan.backend != "ray" and given:
        raise ConfigError(f"{given[0]} needs --backend ray")
    if plan.address is not None and plan.jobs > 1:
        raise ConfigError(
            "--jobs sizes the local Ray cluster; with --address the cluster's resources decide "
            "how many runs execute at once"
        )
    if plan.address is not None and not plan.address.strip():
        raise ConfigError("--address is empty; give HOST:PORT of the Ray cluster's head")
    if plan.task_cpus is not None and plan.task_cpus < 1:
        raise ConfigError(f"--task-cpus must be at least 1, got {plan.task_cpus}")
    if plan.task_gpus is not None and not 0 <= plan.task_gpus <= 1024:
        raise ConfigError(f"--task-gpus must be from 0 to 1024, got {plan.task_gpus}")
