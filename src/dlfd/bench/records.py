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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlfd import __version__
from dlfd.config import to_dict
from dlfd.errors import ConfigError, DlfdError
from dlfd.io import atomic_write_json, read_json_file, sha256_file
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED
from dlfd.scenarios import Scenario
from dlfd.training.recipe import TrainRecipe
from dlfd.training.runner import config_hash

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


def _is_number(value: Any) -> bool:
    return finite_number(value) is not None


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
    run record file); otherwise :class:`ConfigError` naming ``where`` and the field.

    Required: ``method`` (non-empty string), ``seed`` (integer), ``metrics`` (object of finite
    numbers or null). Where present: the timings (``wall_s``, ``train_s``, ``monitor_s``,
    ``eval_s``) finite numbers or null; ``dataset``, ``selected``, ``model`` strings or null;
    ``run_file`` a non-empty string; ``config``, ``split_sizes``, ``hardware``, ``versions``,
    ``hashes`` and ``details`` objects; ``config.params``, ``config.recipe``, ``config.input``
    objects and ``config.scenario_options`` an object or null; ``config.input.size`` a list of
    numbers, ``config.lambda`` a number or null; ``split_sizes`` values numbers or null;
    ``details.losses`` an object of lists of numbers (null: a non-finite loss),
    ``details.readings`` a list of objects whose ``forgetting_score`` is a number or null,
    ``details.projection`` null or an object whose ``forget``/``unseen`` are lists of [x, y]
    points (numbers or null).
    Nesting deeper than :data:`MAX_RECORD_DEPTH` levels is refused.
    """

    def fail(field: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{where}: {field} must be {expected}, got {_shown(value)}")

    def present(mapping: dict[str, Any], key: str) -> bool:
        return mapping.get(key) is not None

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
            if not (_is_number(value) or (nulls and value is None)):
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
        if value is not None and not _is_number(value):
            raise fail(f"metrics.{key}", "a finite number or null", value)
    for key in TIMINGS:
        if present(record, key) and not _is_number(record[key]):
            raise fail(key, "a finite number", record[key])
    for key in ("dataset", "selected", "model"):
        if present(record, key) and not isinstance(record[key], str):
            raise fail(key, "a string", record[key])
    if "run_file" in record and (not isinstance(record["run_file"], str) or not record["run_file"]):
        raise fail("run_file", "a non-empty string", record["run_file"])
    for key in ("hardware", "versions", "hashes"):
        obj(record, key, key)
    obj(record, "forget_request", "forget_request", null=True)
    for key, value in obj(record, "split_sizes", "split_sizes").items():
        if value is not None and not _is_number(value):
            raise fail(f"split_sizes.{key}", "a number", value)
    config = obj(record, "config", "config")
    for key in ("params", "recipe", "scenario_options"):
        obj(config, key, f"config.{key}", null=key == "scenario_options")
    spec = obj(config, "input", "config.input")
    if present(spec, "size"):
        numbers(spec["size"], "config.input.size", nulls=False)
    if present(config, "lambda") and not _is_number(config["lambda"]):
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
            if score is not None and not _is_number(score):
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


def _request_of(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the forget request's sha256, its file) a record was made for; (None, None) for the
    scenario's own forget set (and for records from before forget requests)."""
    config = record.get("config")
    digest = config.get("forget_request_sha256") if isinstance(config, dict) else None
    request = record.get("forget_request")
    file = request.get("file") if isinstance(request, dict) else None
    return (digest if isinstance(digest, str) else None), (file if isinstance(file, str) else None)


def _folder_records(out: Path) -> list[dict[str, Any]]:
    """The records a bench folder holds: results.json's entries and every run record file
    (unreadable ones are left out: they are redone, never read)."""
    found: list[dict[str, Any]] = []
    results = out / RESULTS_FILE
    if results.is_file():
        try:
            data = read_json_file(
                results, "results file", limit=MAX_RESULTS_BYTES, error=ConfigError
            )
        except DlfdError:
            data = None
        if isinstance(data, list):
            found.extend(r for r in data if isinstance(r, dict))
    for path in sorted(out.glob(f"seed-*/*{RECORD_SUFFIX}")):
        record = read_record(path)
        if record is not None:
            found.append(record)
    return found


def refuse_other_forget_request(
    out: Path, request_sha256: str | None, request_file: Path | None = None
) -> None:
    """Refuse a bench folder that holds runs made for another forget request.

    A folder holds the runs of one forget request (a forget list, or the scenario's own
    forget set): resuming it with another ``--forget`` would replace some runs and keep
    others, so it is refused with :class:`ConfigError`, before any work.
    """

    def shown(digest: str | None, file: str | Path | None) -> str:
        if digest is None:
            return "the scenario's own forget set"
        name = f" {file}" if file is not None else ""
        return f"the forget list{name} (sha256 {digest[:12]})"

    for record in _folder_records(out):
        digest, file = _request_of(record)
        if digest != request_sha256:
            raise ConfigError(
                f"{out} holds runs made for {shown(digest, file)}, not for "
                f"{shown(request_sha256, request_file)}; a bench folder holds the runs of one "
                "forget request: choose another --out"
            )
