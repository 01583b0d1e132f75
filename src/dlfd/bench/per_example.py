"""``dlfd bench --per-example N``: the NeurIPS 2023 challenge's per-example epsilon score.

Per seed ``s``: N originals and N retrained references (model ``k`` trained with seed
:func:`model_seed` ``(s, k)``; model 0 is the bench's own pair) from the bench's model cache,
every method of the plan run from each original, and the score
(:func:`dlfd.metrics.per_example.per_example_score`). ``original`` scores the N originals
themselves; ``retrain`` is skipped (it would be compared with itself). Files (under
``DIR/seed-<s>/per-example/``, each keyed by a configuration hash, so a rerun reuses them) and
the ``results.json`` fields added: docs/bench.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlfd import __version__
from dlfd.bench.plan import BenchPlan
from dlfd.bench.progress import BenchProgress
from dlfd.bench.records import json_safe
from dlfd.bench.references import reference_cache
from dlfd.bench.unit import build_scenario
from dlfd.checkpoint import load_checkpoint
from dlfd.config import to_dict
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import ConfigError, DlfdError
from dlfd.evaluation import split_outputs
from dlfd.io import atomic_write_json, read_json_file
from dlfd.metrics.classification import multilabel_accuracy, top_k_accuracy
from dlfd.metrics.per_example import DELTA, logit_scaled_confidence, per_example_score
from dlfd.recipe import TrainRecipe
from dlfd.runs.method_run import unlearn_on_scenario
from dlfd.runtime import SEED_MAX, derive_seed, resolve_device
from dlfd.scenarios import Scenario
from dlfd.training.runner import config_hash, training_config

ENTRY_FORMAT = "dlfd-bench-per-example/1"
MODEL_FORMAT = "dlfd-bench-per-example-model/1"
FOLDER = "per-example"
SUMMARY_FILE = "per_example.json"
#: Rows that get no per-example score (see the module docstring).
SKIPPED_ROWS = ("retrain",)
REFERENCE_ROW = "reference"
STAT_SPLITS = ("forget", "retain", "test")
STATISTIC = "logit_scaled_confidence"
MAX_FILE_BYTES = 64 << 20


def model_seed(seed: int, k: int) -> int:
    """Training (and method) seed of model ``k`` of bench seed ``seed``: ``seed`` itself for
    ``k = 0``, otherwise a stable hash of (seed, k) within ``[0, SEED_MAX]``."""
    return seed if k == 0 else derive_seed("per-example", seed, k) % (SEED_MAX + 1)


def scored_methods(plan: BenchPlan) -> tuple[str, ...]:
    """The plan's methods that get a per-example score (plan order)."""
    return tuple(m for m in plan.methods if m not in SKIPPED_ROWS)


def entry_path(out: Path, seed: int, name: str) -> Path:
    """``<name>.json`` in the seed's per-example folder: a method's entry, or ``<row>.m<k>``."""
    return out / f"seed-{seed}" / FOLDER / f"{name}.json"


def _read(path: Path, fmt: str, digest: str) -> dict[str, Any] | None:
    """The file's content when it is of ``fmt`` with configuration hash ``digest``."""
    if not path.is_file():
        return None
    try:
        data = read_json_file(path, "per-example file", limit=MAX_FILE_BYTES, error=ConfigError)
    except DlfdError:
        return None
    ok = isinstance(data, dict) and data.get("format") == fmt
    return data if ok and data.get("config_sha256") == digest else None


@dataclass
class _SeedState:
    """One seed's scenario and the N models' training hashes (nothing trained yet)."""

    plan: BenchPlan
    seed: int
    scenario: Scenario
    recipe: TrainRecipe
    device: torch.device
    n: int

    def __post_init__(self) -> None:
        self.seeds = [model_seed(self.seed, k) for k in range(self.n)]
        self.loaders = ProblemLoaders(self.scenario.problem, self.scenario.input_spec)
        self.train_hash = {
            (role, k): config_hash(training_config(self.scenario, role, s, self.recipe))
            for role in ("original", "retrained")
            for k, s in enumerate(self.seeds)
        }

    def checkpoint(self, role: str, k: int, progress: BenchProgress, log: Callable) -> Path:
        ref = reference_cache(self.plan.cache_dir).get(
            self.scenario,
            role=role,
            seed=self.seeds[k],
            recipe=self.recipe,
            device=self.device,
            progress=progress.training,
        )
        if ref.trained_now:
            log(f"seed {self.seed}: per-example {role} model {k} trained in {ref.training_s:.1f}s")
        return ref.path

    def model_config(self, row: str, k: int) -> dict[str, Any]:
        if row == REFERENCE_ROW:
            own: dict[str, Any] = {"model_config_sha256": self.train_hash[("retrained", k)]}
        else:
            method = row != "original"
            own = {
                "params": to_dict(self.plan.method_params(row)) if method else {},
                "overrides": json_safe(self.plan.method_overrides(row)) if method else {},
                "method_seed": self.seeds[k],
                "batch_size": self.recipe.batch_size,
                "original_config_sha256": self.train_hash[("original", k)],
            }
        return {
            "format": MODEL_FORMAT,
            "row": row,
            **own,
            "statistic": STATISTIC,
            "dlfd_version": __version__,
        }

    def measure(self, model: torch.nn.Module) -> dict[str, Any]:
        task = self.scenario.task
        outputs = split_outputs(model, self.loaders, device=self.device, splits=STAT_SPLITS)
        result: dict[str, Any] = {
            f"{split}_acc": top_k_accuracy(out.logits, out.labels, k=1)
            if task == "multiclass"
            else multilabel_accuracy(out.logits, out.labels)
            for split, out in outputs.items()
        }
        forget = outputs["forget"]
        result["forget_stat"] = logit_scaled_confidence(forget.logits, forget.labels, task)
        return result

    def model_numbers(
        self, row: str, k: int, progress: BenchProgress, log: Callable
    ) -> dict[str, Any]:
        """Statistics and accuracies of model ``k`` of ``row`` (computed or reused)."""
        config = self.model_config(row, k)
        digest = config_hash(config)
        path = entry_path(self.plan.out, self.seed, f"{row}.m{k}")
        done = _read(path, MODEL_FORMAT, digest)
        if done is not None:
            return done
        started = time.perf_counter()
        role = "retrained" if row == REFERENCE_ROW else "original"
        model, _ = load_checkpoint(self.checkpoint(role, k, progress, log), device=self.device)
        if row not in (REFERENCE_ROW, "original"):
            model = unlearn_on_scenario(
                model,
                self.scenario,
                row,
                seed=self.seeds[k],
                device=self.device,
                hparams=self.plan.method_overrides(row),
                recipe=self.recipe,
                on_progress=progress.advance,
            ).model
        numbers = self.measure(model)
        record = json_safe(
            {
                "format": MODEL_FORMAT,
                "row": row,
                "k": k,
                "seed": self.seed,
                "model_seed": self.seeds[k],
                "config": config,
                "config_sha256": digest,
                "seconds": time.perf_counter() - started,
                **numbers,
            }
        )
        atomic_write_json(path, record)
        return record


def run_entry(
    state: _SeedState, method: str, progress: BenchProgress, log: Callable[[str], None]
) -> tuple[dict[str, Any], bool]:
    """The (method, seed) entry: reused when finished, else computed and written."""
    config = {
        "format": ENTRY_FORMAT,
        "method": method,
        "seed": state.seed,
        "n_models": state.n,
        "delta": DELTA,
        "unlearned": [config_hash(state.model_config(method, k)) for k in range(state.n)],
        "reference": [config_hash(state.model_config(REFERENCE_ROW, k)) for k in range(state.n)],
        "forget_sha256": state.scenario.problem.forget_sha256,
    }
    digest = config_hash(config)
    path = entry_path(state.plan.out, state.seed, method)
    done = _read(path, ENTRY_FORMAT, digest)
    if done is not None:
        log(f"seed {state.seed}: per-example {method} finished earlier; reused")
        return done, False
    started = time.perf_counter()
    refs = [state.model_numbers(REFERENCE_ROW, k, progress, log) for k in range(state.n)]
    runs = []
    for k in range(state.n):
        progress.advance(k, state.n, f"model {k + 1}/{state.n}")
        runs.append(state.model_numbers(method, k, progress, log))
    score = per_example_score(
        np.asarray([r["forget_stat"] for r in runs], dtype=np.float64),
        np.asarray([r["forget_stat"] for r in refs], dtype=np.float64),
        unlearned_retain=[r["retain_acc"] for r in runs],
        retrained_retain=[r["retain_acc"] for r in refs],
        unlearned_test=[r["test_acc"] for r in runs],
        retrained_test=[r["test_acc"] for r in refs],
    )
    entry = json_safe(
        {
            "format": ENTRY_FORMAT,
            "method": method,
            "seed": state.seed,
            "dataset": state.scenario.name,
            "config": config,
            "config_sha256": digest,
            **score.to_dict(),
            "model_seeds": state.seeds,
            "accuracies": {
                side: {split: [r[f"{split}_acc"] for r in rows] for split in STAT_SPLITS}
                for side, rows in (("unlearned", runs), ("retrained", refs))
            },
            "statistic": STATISTIC,
            "seconds": time.perf_counter() - started,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    atomic_write_json(path, entry)
    log(
        f"seed {state.seed}: per-example {method} (N={state.n}): score "
        f"{_shown(entry['per_example_score'])}, forgetting quality "
        f"{_shown(entry['forgetting_quality'])} in {entry['seconds']:.1f}s"
    )
    return entry, True


def _shown(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary(entry: dict[str, Any], out: Path) -> dict[str, Any]:
    """The ``per_example.json`` form of an entry: without the per-sample lists."""
    short = {k: v for k, v in entry.items() if k not in ("epsilons", "points", "config")}
    short["file"] = entry_path(out, entry["seed"], entry["method"]).relative_to(out).as_posix()
    return short


def run_per_example(
    plan: BenchPlan,
    *,
    progress: BenchProgress | None = None,
    log: Callable[[str], None] | None = None,
    on_done: Callable[[int, str, dict[str, Any], bool], None] | None = None,
    on_fail: Callable[[int, str, BaseException], None] | None = None,
) -> list[dict[str, Any]]:
    """Every (method, seed) entry of ``plan``, rewriting ``DIR/per_example.json`` after each; a
    failed entry goes to ``on_fail`` (raised when None) and the others still run."""
    if plan.per_example < 2:
        raise ConfigError(f"--per-example needs at least 2 models, got {plan.per_example}")
    progress = progress or BenchProgress()
    log = log or (lambda message: None)
    methods = scored_methods(plan)
    entries: list[dict[str, Any]] = []
    device = resolve_device(plan.device)
    for seed in plan.seeds:
        scenario, recipe = build_scenario(plan, seed)
        state = _SeedState(plan, seed, scenario, recipe, device, plan.per_example)
        for method in methods:
            label = f"seed {seed}: per-example {method} (N={plan.per_example})"
            progress.begin(label)
            try:
                entry, ran = run_entry(state, method, progress, log)
            except Exception as exc:
                if on_fail is None:
                    raise
                on_fail(seed, method, exc)
            else:
                entries.append(entry)
                atomic_write_json(plan.out / SUMMARY_FILE, [summary(e, plan.out) for e in entries])
                if on_done is not None:
                    on_done(seed, method, entry, ran)
            progress.end(label)
    atomic_write_json(plan.out / SUMMARY_FILE, [summary(e, plan.out) for e in entries])
    return entries
