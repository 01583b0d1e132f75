"""Run a benchmark: per seed, the two trained checkpoints, then every method from the same
original. Every (method, seed) is an independent unit (:func:`dlfd.bench.unit.run_unit`), run
here, with ``jobs > 1`` in a process pool, or with ``backend="ray"`` as Ray tasks
(:mod:`dlfd.bench.ray_backend`); only this process writes ``results.json`` and the log.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlfd.bench.per_example import entry_path, run_per_example, scored_methods
from dlfd.bench.plan import BenchPlan, validate_plan
from dlfd.bench.pool import run_pool
from dlfd.bench.progress import BenchLog, BenchProgress
from dlfd.bench.records import RESULTS_FILE, json_safe, refuse_other_forget_request
from dlfd.bench.references import ROLE_OF_ROW
from dlfd.bench.unit import prepare_seed, run_unit
from dlfd.errors import ConfigError, DlfdError
from dlfd.io import atomic_write_json, file_lock

LOG_FILE = "bench.log"
LOCK_FILE = ".bench.lock"


class BenchError(DlfdError):
    """Some runs failed (the others finished and are recorded)."""


@dataclass
class BenchOutcome:
    """What :func:`run_bench` did: the finished records (results.json, plan order), the runs
    done now or reused, and the failed ones."""

    results: Path
    log: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


class Collector:
    """Records in plan order, rewritten to results.json after every finished run, and
    failures."""

    def __init__(self, plan: BenchPlan, log: BenchLog) -> None:
        self.plan = plan
        self.log = log
        self.done: dict[tuple[int, str], dict[str, Any]] = {}
        self.outcome = BenchOutcome(plan.out / RESULTS_FILE, log.path)

    def finish(self, seed: int, method: str, record: dict[str, Any] | None, ran: bool) -> None:
        if record is not None:
            self.done[(seed, method)] = record
            self.outcome.ran += ran
            self.outcome.skipped += not ran
        plan = self.plan
        self.outcome.records = [
            self.done[(s, m)] for s in plan.seeds for m in plan.methods if (s, m) in self.done
        ]
        atomic_write_json(self.outcome.results, json_safe(self.outcome.records))

    def fail(self, seed: int, method: str, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.outcome.failed.append(f"seed {seed} {method}: {text}")
        self.log(f"seed {seed}: {method} FAILED: {text}")
        if isinstance(error, BaseException) and not isinstance(error, DlfdError):
            self.log("".join(traceback.format_exception(error)), echo=False)


def run_bench(
    plan: BenchPlan,
    *,
    progress: BenchProgress | None = None,
) -> BenchOutcome:
    """Run (or reuse) every (method, seed) of ``plan``; failed runs are logged and named in the
    outcome while the rest still run (:class:`BenchError` is not raised here)."""
    validate_plan(plan)
    plan.out.mkdir(parents=True, exist_ok=True)
    progress = progress or BenchProgress()
    try:
        with file_lock(plan.out / LOCK_FILE, wait=False):
            return _run_locked(plan, progress, BenchLog(plan.out / LOG_FILE))
    except BlockingIOError:
        raise ConfigError(
            f"another dlfd bench is writing to {plan.out}; wait for it or choose another --out"
        ) from None


def _run_locked(plan: BenchPlan, progress: BenchProgress, log: BenchLog) -> BenchOutcome:
    refuse_other_forget_request(plan.out, plan.forget_request_sha256, plan.forget)
    for path in sorted(plan.out.rglob(".*.tmp")):  # left by an interruption; safe under the lock
        if path.is_file():
            path.unlink()
            log(f"removed a leftover temporary file {path.relative_to(plan.out)}", echo=False)
    forget = ""
    if (request := plan.forget_request) is not None:
        forget = f"; forget list {request['file']} ({request['entries']} entries, sha256 "
        forget += f"{request['sha256'][:12]})"
    log(
        f"bench {plan.dataset}: methods {', '.join(plan.methods)}; seeds "
        f"{', '.join(map(str, plan.seeds))}; out {plan.out}; {_where(plan)}{forget}",
        echo=False,
    )
    collector = Collector(plan, log)
    per_example_units = len(scored_methods(plan)) if plan.per_example > 0 else 0
    progress.start(len(plan.seeds) * (len(ROLE_OF_ROW) + len(plan.methods) + per_example_units))
    _backend(plan)(plan, progress, log, collector)
    if plan.per_example > 0:
        _run_per_example(plan, progress, log, collector)
    collector.finish(-1, "", None, False)  # results.json even when nothing finished
    outcome = collector.outcome
    log(
        f"bench done: {outcome.ran} run(s) now, {outcome.skipped} reused, "
        f"{len(outcome.failed)} failed; {outcome.results}",
        echo=False,
    )
    return outcome


def _backend(plan: BenchPlan) -> Callable[[BenchPlan, BenchProgress, BenchLog, Collector], None]:
    """Where the runs execute: a Ray cluster, a local process pool (``jobs > 1``) or here."""
    if plan.backend == "ray":
        from dlfd.bench.ray_backend import run_ray

        return run_ray
    return run_pool if plan.jobs > 1 else _run_here


def _run_per_example(
    plan: BenchPlan, progress: BenchProgress, log: BenchLog, collector: Collector
) -> None:
    """The per-example stage, after every run: each entry's score goes into its record."""

    def done(seed: int, method: str, entry: dict[str, Any], ran: bool) -> None:
        record = collector.done.get((seed, method))
        if record is not None:
            record["per_example_score"] = entry.get("per_example_score")
            record["forgetting_quality"] = entry.get("forgetting_quality")
            path = entry_path(plan.out, seed, method)
            record["per_example_file"] = path.relative_to(plan.out).as_posix()
            collector.finish(seed, method, None, False)

    def fail(seed: int, method: str, error: BaseException) -> None:
        collector.fail(seed, f"per-example {method}", error)

    run_per_example(plan, progress=progress, log=log, on_done=done, on_fail=fail)


def _where(plan: BenchPlan) -> str:
    """Where the runs execute, for the log's first line."""
    if plan.backend == "ray":
        return f"backend ray ({plan.address or 'a local cluster'})"
    return f"jobs {plan.jobs}"


def _run_here(
    plan: BenchPlan, progress: BenchProgress, log: BenchLog, collector: Collector
) -> None:
    for seed in plan.seeds:
        ctx = prepare_seed(plan, seed, progress=progress, log=log)
        for method in plan.methods:
            label = f"seed {seed}: {method}"
            progress.begin(label)
            try:
                record, ran = run_unit(ctx, method, progress=progress, log=log)
            except Exception as exc:  # one failed method must not lose the others' runs
                collector.fail(seed, method, exc)
                record, ran = None, False
            collector.finish(seed, method, record, ran)
            progress.end(label)
