"""Run records: the configuration that keys a run, where its files go, when it counts as done.

A run is one (method, seed). Its files, in ``DIR/seed-<seed>/``:

- ``<method>.safetensors`` + ``<method>.json``: the model and its checkpoint sidecar (unless
  models are not saved);
- ``<method>.result.json``: the run record (format ``dlfd-bench-run/1``), written last and
  atomically, so it exists only for a finished run.

A record counts as finished only if its ``config_sha256`` equals the hash of the run's
configuration now and, when models are saved, the model file's sha256 equals the one the record
names. Anything else (no record, another configuration, a missing or different model, an
unreadable record, a leftover temporary file) means the run is done again.
``DIR/results.json`` is the list of the plan's finished records without their bulky
``details`` (losses, projections, traces), each with ``run_file`` naming its full record.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlfd import __version__
from dlfd.config import to_dict
from dlfd.io import atomic_write_json, sha256_file
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED
from dlfd.scenarios import Scenario
from dlfd.training.recipe import TrainRecipe
from dlfd.training.runner import config_hash

RUN_FORMAT = "dlfd-bench-run/1"
RESULTS_FILE = "results.json"
RECORD_SUFFIX = ".result.json"
BENCH_CONFIG_VERSION = 1


@dataclass(frozen=True)
class RunPaths:
    """Files of one run, relative to the benchmark folder ``out``."""

    out: Path
    seed: int
    method: str

    @property
    def folder(self) -> Path:
        return self.out / f"seed-{self.seed}"

    @property
    def model(self) -> Path:
        return self.folder / f"{self.method}.safetensors"

    @property
    def record(self) -> Path:
        return self.folder / f"{self.method}{RECORD_SUFFIX}"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()


def run_config(
    *,
    method: str,
    seed: int,
    scenario: Scenario,
    recipe: TrainRecipe,
    params: dict[str, Any],
    original_config: str,
    reference_config: str,
    lam: float,
    attacks: bool,
) -> dict[str, Any]:
    """Everything that determines a run's model and numbers; its hash keys resuming.

    The two checkpoints' configuration hashes already cover the scenario, its data, split
    and forget set, the training seed, input format, recipe and dlfd version.
    """
    return {
        "bench_config_version": BENCH_CONFIG_VERSION,
        "method": method,
        "params": params,
        "seed": seed,
        "scenario": scenario.name,
        "scenario_options": dict(scenario.options),
        "split_seed": scenario.problem.split_seed,
        "forget_sha256": scenario.problem.forget_sha256,
        "data_sha256": scenario.problem.records.fingerprint,
        "input": scenario.input_spec.to_dict(),
        "recipe": to_dict(recipe),
        "batch_size": recipe.batch_size,
        "original_config_sha256": original_config,
        "reference_config_sha256": reference_config,
        "lambda": lam,
        "attacks": attacks,
        "mia_seed": BENCHMARK_SHUFFLE_SEED,
        "dlfd_version": __version__,
    }


def run_config_sha256(config: dict[str, Any]) -> str:
    return config_hash(config)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones and non-finite floats into
    None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_record(path: Path) -> dict[str, Any] | None:
    """A run record, or None when it is missing, unreadable or not a run record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        return None
    return data


def finished_record(
    paths: RunPaths, config_sha256: str, *, save_models: bool
) -> tuple[dict[str, Any] | None, str]:
    """(the finished record, "finished") or (None, why the run must be done again)."""
    if not paths.record.exists():
        return None, "not run yet"
    record = read_record(paths.record)
    if record is None:
        return None, f"{paths.record.name} is unreadable"
    if record.get("config_sha256") != config_sha256:
        return None, "its settings changed"
    if save_models:
        if not record.get("model"):
            return None, "its model was not saved"
        if not paths.model.is_file():
            return None, f"{paths.relative(paths.model)} is missing"
        if sha256_file(paths.model) != record.get("hashes", {}).get("weights_sha256"):
            return None, f"{paths.relative(paths.model)} is not the recorded model"
    return record, "finished"


def write_record(paths: RunPaths, record: dict[str, Any]) -> None:
    """Write a finished run's record atomically (after its model)."""
    atomic_write_json(paths.record, json_safe(record))


def summary(record: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    """The ``results.json`` form of a run record: without ``details``, with ``run_file``."""
    short = {k: v for k, v in record.items() if k != "details"}
    short["run_file"] = paths.relative(paths.record)
    return short


def write_results(out: Path, summaries: list[dict[str, Any]]) -> Path:
    """Write ``DIR/results.json`` (atomically) and return its path."""
    path = out / RESULTS_FILE
    atomic_write_json(path, json_safe(summaries))
    return path
