"""Run records: the configuration that keys a run, where its files go, when it counts as done.

A run is one (method, seed); its record ``DIR/seed-<seed>/<method>.result.json`` is written
last and atomically, so it exists only for a finished run. It counts as finished only if its
``config_sha256`` equals the hash of the run's configuration now and, when models are saved,
the model file's sha256 equals the one it names; anything else means the run is done again.
``DIR/results.json`` lists the finished records without their bulky ``details``. Layout and
schema: docs/bench.md.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlfd import __version__
from dlfd.config import to_dict
from dlfd.errors import ConfigError, DlfdError
from dlfd.io import read_json_file, sha256_file
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED
from dlfd.recipe import TrainRecipe
from dlfd.scenarios import Scenario

RUN_FORMAT = "dlfd-bench-run/1"
RESULTS_FILE = "results.json"
RECORD_SUFFIX = ".result.json"
BENCH_CONFIG_VERSION = 1
#: Upper bound of a run record file (its details hold a few thousand numbers, far below this).
MAX_RECORD_BYTES = 64 << 20
#: Deepest nesting a bench record may have (the bench writes about five levels).
MAX_RECORD_DEPTH = 32
#: Why a run without a record file runs (:func:`finished_record`).
NO_RECORD = "no record yet"
#: Upper bound of ``results.json`` when a bench checks which forget request a folder holds.
MAX_RESULTS_BYTES = 256 << 20
#: Top-level timings of a record (seconds).
TIMINGS = ("wall_s", "train_s", "monitor_s", "eval_s")


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
    forget_request_sha256: str | None = None,
) -> dict[str, Any]:
    """Everything that determines a run's model and numbers; its hash keys resuming.

    The two checkpoints' configuration hashes already cover the scenario, its data, split
    and forget set, the training seed, input format, recipe and dlfd version.
    ``forget_request_sha256`` (a bench given a forget list) is added only when given, so the
    runs of the scenario's own forget set keep their hashes.
    """
    config = {
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
    if forget_request_sha256 is not None:
        config["forget_request_sha256"] = forget_request_sha256
    return config


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


def _shown(value: Any) -> str:
    """A short description of a JSON value for an error message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finite_number(value: Any) -> float | None:
    """A finite JSON number as a float (not a boolean; an integer too large for a float is not
    finite), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects more than ``limit`` levels (checked without
    recursion, so any depth the JSON parser accepted is safe)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def validate_bench_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` itself when it is a well-formed bench record (a line of ``results.json`` or a
    run record file); otherwise :class:`ConfigError` naming ``where`` and the field. Only
    ``method``, ``seed`` and ``metrics`` are required; every other field the report reads is
    checked where present (null allowed where the bench writes null for a non-finite number).
    """

    def fail(field: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{where}: {field} must be {expected}, got {_shown(value)}")

    def obj(mapping: dict[str, Any], key: str, field: str, *, null: bool = False) -> dict[str, Any]:
        if key not in mapping or (null and mapping[key] is None):
            return {}
        value = mapping[key]
        if not isinstance(value, dict):
            raise fail(field, "an object", value)
        return value

    def numbers(values: Any, field: str, *, nulls: bool) -> None:
        if not isinstance(values, list):
            raise fail(field, "a list of numbers", values)
        for k, value in enumerate(values):
            if finite_number(value) is None and not (nulls and value is None):
                raise fail(f"{field}[{k}]", "a finite number" + " or null" * nulls, value)

    if not isinstance(record, dict):
        raise fail("the record", "an object", record)
    if _too_deep(record, MAX_RECORD_DEPTH):
        raise ConfigError(f"{where}: nested too deeply (more than {MAX_RECORD_DEPTH} levels)")
    missing = [key for key in ("method", "seed", "metrics") if key not in record]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)} (not a bench record)")
    method = record["method"]
    if not isinstance(method, str) or not method.strip():
        raise fail("method", "a non-empty string", method)
    seed = record["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise fail("seed", "an integer", seed)
    metrics = record["metrics"]
    if not isinstance(metrics, dict):
        raise fail("metrics", "an object of numbers", metrics)
    for key, value in metrics.items():
        if value is not None and finite_number(value) is None:
            raise fail(f"metrics.{key}", "a finite number or null", value)
    for key in TIMINGS:
        if record.get(key) is not None and finite_number(record[key]) is None:
            raise fail(key, "a finite number", record[key])
    for key in ("dataset", "selected", "model"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise fail(key, "a string", record[key])
    if "run_file" in record and (not isinstance(record["run_file"], str) or not record["run_file"]):
        raise fail("run_file", "a non-empty string", record["run_file"])
    for key in ("hardware", "versions", "hashes"):
        obj(record, key, key)
    obj(record, "forget_request", "forget_request", null=True)
    for key, value in obj(record, "split_sizes", "split_sizes").items():
        if value is not None and finite_number(value) is None:
            raise fail(f"split_sizes.{key}", "a number", value)
    config = obj(record, "config", "config")
    for key in ("params", "recipe", "scenario_options"):
        obj(config, key, f"config.{key}", null=key == "scenario_options")
    spec = obj(config, "input", "config.input")
    if spec.get("size") is not None:
        numbers(spec["size"], "config.input.size", nulls=False)
    if config.get("lambda") is not None and finite_number(config["lambda"]) is None:
        raise fail("config.lambda", "a finite number", config["lambda"])
    details = obj(record, "details", "details")
    for split, values in obj(details, "losses", "details.losses").items():
        numbers(values, f"details.losses.{split}", nulls=True)
    if "readings" in details:
        readings = details["readings"]
        if not isinstance(readings, list):
            raise fail("details.readings", "a list", readings)
        for k, reading in enumerate(readings):
            if not isinstance(reading, dict):
                raise fail(f"details.readings[{k}]", "an object", reading)
            score = reading.get("forgetting_score")
            if score is not None and finite_number(score) is None:
                raise fail(f"details.readings[{k}].forgetting_score", "a number or null", score)
    projection = obj(details, "projection", "details.projection", null=True)
    for side in ("forget", "unseen"):
        points = projection.get(side)
        if points is None:
            continue
        if not isinstance(points, list):
            raise fail(f"details.projection.{side}", "a list of [x, y] points", points)
        for k, point in enumerate(points):
            field = f"details.projection.{side}[{k}]"
            if not isinstance(point, list) or len(point) != 2:
                raise fail(field, "an [x, y] point", point)
            numbers(point, field, nulls=True)
    return record


def read_record(path: Path) -> dict[str, Any] | None:
    """A run record, or None when it is missing, unreadable (a FIFO, a device, too large, not
    JSON), not a run record or malformed (see :func:`validate_bench_record`)."""
    try:
        data = read_json_file(path, "run record", limit=MAX_RECORD_BYTES, error=ConfigError)
        if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
            return None
        return validate_bench_record(data, f"run record {path}")
    except DlfdError:
        return None


def finished_record(
    paths: RunPaths, config_sha256: str, *, save_models: bool
) -> tuple[dict[str, Any] | None, str]:
    """(the finished record, "finished") or (None, why the run must be done again)."""
    if not paths.record.exists():
        return None, NO_RECORD
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


def summary(record: dict[str, Any], paths: RunPaths) -> dict[str, Any]:
    """The ``results.json`` form of a run record: without ``details``, with ``run_file``."""
    short = {k: v for k, v in record.items() if k != "details"}
    short["run_file"] = paths.relative(paths.record)
    return short


def refuse_other_forget_request(
    out: Path, request_sha256: str | None, request_file: Path | None = None
) -> None:
    """Refuse (:class:`ConfigError`, before any work) a bench folder holding runs made for
    another forget request: resuming it would replace some runs and keep others. The records
    read are results.json's and every readable run record (unreadable ones are redone)."""

    def shown(digest: str | None, file: str | Path | None) -> str:
        if digest is None:
            return "the scenario's own forget set"
        name = f" {file}" if file is not None else ""
        return f"the forget list{name} (sha256 {digest[:12]})"

    records: list[Any] = []
    if (out / RESULTS_FILE).is_file():
        with contextlib.suppress(DlfdError):
            data = read_json_file(
                out / RESULTS_FILE, "results file", limit=MAX_RESULTS_BYTES, error=ConfigError
            )
            records += data if isinstance(data, list) else []
    records += [read_record(path) for path in sorted(out.glob(f"seed-*/*{RECORD_SUFFIX}"))]
    for record in (r for r in records if isinstance(r, dict)):
        # None for the scenario's own forget set (and records from before forget requests)
        config, request = record.get("config"), record.get("forget_request")
        digest = config.get("forget_request_sha256") if isinstance(config, dict) else None
        file = request.get("file") if isinstance(request, dict) else None
        digest, file = (v if isinstance(v, str) else None for v in (digest, file))
        if digest != request_sha256:
            raise ConfigError(
                f"{out} holds runs made for {shown(digest, file)}, not for "
                f"{shown(request_sha256, request_file)}; a bench folder holds the runs of one "
                "forget request: choose another --out"
            )
