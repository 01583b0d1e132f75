"""The benchmark harness: every method from the same original, under the same rules, resumable.

- :mod:`dlfd.bench.plan`: what runs (:class:`BenchPlan`), settings, validation;
- :mod:`dlfd.bench.recipe_file`: committed recipe files (TOML/JSON) for published tables;
- :mod:`dlfd.bench.references`: the cached original and retrained checkpoints of each seed;
- :mod:`dlfd.bench.records`: run configuration hashes, file layout, when a run is finished,
  and that a folder holds the runs of one forget request;
- :mod:`dlfd.bench.unit`: one (method, seed) run (:func:`run_unit`) and its seed's shared
  context (:func:`prepare_seed`); :mod:`dlfd.bench.details`: losses and feature projections kept
  for the report;
- :mod:`dlfd.bench.runner`: the whole bench (:func:`run_bench`), :mod:`dlfd.bench.pool` its
  ``--jobs N`` process pool, :mod:`dlfd.bench.progress` progress hooks and the log.
"""

from dlfd.bench.plan import (
    CHECKPOINT_ROWS,
    BenchPlan,
    available_methods,
    parse_seeds,
    resolve_methods,
    split_settings,
    validate_plan,
)
from dlfd.bench.progress import BenchProgress
from dlfd.bench.recipe_file import RecipeFile, load_recipe_file
from dlfd.bench.records import RESULTS_FILE, RUN_FORMAT, RunPaths, read_record
from dlfd.bench.runner import BenchError, BenchOutcome, run_bench
from dlfd.bench.unit import check_forget_request, prepare_seed, run_unit

__all__ = [
    "CHECKPOINT_ROWS",
    "RESULTS_FILE",
    "RUN_FORMAT",
    "BenchError",
    "BenchOutcome",
    "BenchPlan",
    "BenchProgress",
    "RecipeFile",
    "RunPaths",
    "available_methods",
    "check_forget_request",
    "load_recipe_file",
    "parse_seeds",
    "prepare_seed",
    "read_record",
    "resolve_methods",
    "run_bench",
    "run_unit",
    "split_settings",
    "validate_plan",
]
