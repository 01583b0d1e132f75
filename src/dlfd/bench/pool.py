"""``--jobs N``: whole runs in a pool of spawned processes; only the parent writes results.

Each seed's checkpoints first (one task per seed), then every (method, seed) is a task; workers
split the machine's threads and keep each seed's context for the runs they get.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import torch

from dlfd.bench.plan import BenchPlan
from dlfd.bench.progress import BenchLog, BenchProgress
from dlfd.bench.references import ROLE_OF_ROW
from dlfd.bench.unit import SeedContext, prepare_seed, run_unit
from dlfd.errors import DlfdError

if TYPE_CHECKING:
    from dlfd.bench.runner import Collector


_WORKER_SEEDS: dict[int, SeedContext] = {}


def _worker_prepare(plan: BenchPlan, seed: int) -> list[str]:
    """Pool task: train (or reuse) the seed's two checkpoints; returns log lines."""
    lines: list[str] = []
    _WORKER_SEEDS[seed] = prepare_seed(plan, seed, log=lines.append)
    return lines


def _worker_run(
    plan: BenchPlan, seed: int, method: str
) -> tuple[dict[str, Any] | None, bool, list[str], str | None]:
    """Pool task: one whole run; returns (summary, ran now, log lines, error text)."""
    lines: list[str] = []
    try:
        ctx = _WORKER_SEEDS.get(seed) or prepare_seed(plan, seed)
        _WORKER_SEEDS[seed] = ctx
        record, ran = run_unit(ctx, method, log=lines.append)
        return record, ran, lines, None
    except Exception as exc:
        return None, False, lines, error_text(exc)


def error_text(exc: BaseException) -> str:
    """A failed run's error: one line, then (for errors that are not dlfd's) the traceback."""
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, DlfdError):
        text += "\n" + "".join(traceback.format_exception(exc))
    return text


def report_unit(
    collector: Collector,
    log: BenchLog,
    seed: int,
    method: str,
    outcome: tuple[dict[str, Any] | None, bool, list[str], str | None],
) -> None:
    """Log what a run done elsewhere returned, (summary, ran now, log lines, error text), and
    record it: its lines, then its failure (the traceback in the log only) or its summary."""
    record, ran, lines, error = outcome
    for line in lines:
        log(line)
    if error is not None:
        first, _, rest = error.partition("\n")
        collector.fail(seed, method, first)
        if rest:
            log(rest, echo=False)
    collector.finish(seed, method, record, ran)


def run_pool(plan: BenchPlan, progress: BenchProgress, log: BenchLog, collector: Collector) -> None:
    threads = max(1, torch.get_num_threads() // plan.jobs)
    context = multiprocessing.get_context("spawn")
    worker_plan = dataclasses.replace(plan, jobs=1)
    with ProcessPoolExecutor(
        max_workers=plan.jobs,
        mp_context=context,
        initializer=torch.set_num_threads,
        initargs=(threads,),
    ) as pool:
        pending: dict[Future, tuple[str, int, str]] = {
            pool.submit(_worker_prepare, worker_plan, seed): ("prepare", seed, "")
            for seed in plan.seeds
        }
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, seed, method = pending.pop(future)
                if kind == "prepare":
                    for line in future.result():
                        log(line)
                    for _ in ROLE_OF_ROW:
                        progress.end(f"seed {seed}: checkpoints")
                    for name in plan.methods:
                        task = pool.submit(_worker_run, worker_plan, seed, name)
                        pending[task] = ("run", seed, name)
                    continue
                report_unit(collector, log, seed, method, future.result())
                progress.end(f"seed {seed}: {method}")
