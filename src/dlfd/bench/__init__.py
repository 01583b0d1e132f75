"""The benchmark harness: every method from the same original, under the same rules, resumable.

:mod:`~dlfd.bench.plan` (what runs), :mod:`~dlfd.bench.recipe_file` (committed recipes),
:mod:`~dlfd.bench.references` (cached checkpoints), :mod:`~dlfd.bench.records` (hashes, files,
when a run is finished), :mod:`~dlfd.bench.unit` (one (method, seed) run),
:mod:`~dlfd.bench.runner` and :mod:`~dlfd.bench.pool` (the whole bench, ``--jobs N``),
:mod:`~dlfd.bench.ray_backend` (``--backend ray``: runs as Ray tasks, written here).
"""

from dlfd.bench.plan import (
    BenchPlan,
    available_methods,
    parse_seeds,
    resolve_methods,
    split_settings,
    validate_plan,
)
from dlfd.bench.progress import BenchProgress
from dlfd.bench.recipe_file import load_recipe_file
from dlfd.bench.runner import BenchError, run_bench

__all__ = [
    "BenchError",
    "BenchPlan",
    "BenchProgress",
    "available_methods",
    "load_recipe_file",
    "parse_seeds",
    "resolve_methods",
    "run_bench",
    "split_settings",
    "validate_plan",
]
