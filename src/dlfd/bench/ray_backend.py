"""``--backend ray``: a bench's seeds and runs as Ray tasks; only this process writes files.

Each seed's original and retrained reference are one task (trained once, into the shared
cache). Once it is done, every (method, seed) without a finished record becomes a task that
takes the seed task's result as an argument (so Ray runs it after), asks for the plan's CPUs
and GPUs, and is run again when its worker process dies. A task returns the computed run
(:class:`~dlfd.bench.unit.ComputedUnit`: record and model files); this process writes them,
results.json and the log, as :func:`~dlfd.bench.pool.run_pool` does for ``--jobs``. Every node
must see ``--out``, the cache and the data at the same paths (a shared file system).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from dlfd.bench.plan import BenchPlan
from dlfd.bench.pool import error_text, report_unit
from dlfd.bench.progress import BenchLog, BenchProgress
from dlfd.bench.references import ROLE_OF_ROW
from dlfd.bench.unit import (
    ComputedUnit,
    SeedContext,
    compute_unit,
    prepare_seed,
    reuse_unit,
    start_unit,
    unit_config,
    write_unit,
)
from dlfd.data.hash_cache import cache_dir as default_cache_dir
from dlfd.errors import ConfigError

if TYPE_CHECKING:
    from dlfd.bench.runner import Collector

#: How often Ray runs a task again after its worker process died (a method's own error is a
#: failed run, never retried).
MAX_RETRIES = 3
INSTALL_HINT = "--backend ray needs Ray: pip install 'dlfd[ray]'"
#: The prefix of the bench's task names (and of its workers' process titles, ``ray::NAME``).
TASK_PREFIX = "dlfd-bench"


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`ConfigError` with the install hint when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def check_ray_plan(plan: BenchPlan) -> None:
    """Refuse, before any work, a Ray bench this machine cannot start: Ray missing, or a device
    Ray cannot assign (``cuda:N``: Ray gives each task its own GPU, visible as ``cuda``)."""
    import_ray()
    if plan.address is not None:
        check_address(plan.address)
    try:
        device = torch.device(plan.device) if plan.device != "auto" else None
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {plan.device!r}: {exc}") from None
    if device is not None and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {plan.device!r}; use cpu, cuda or auto")
    if device is not None and device.index is not None:
        raise ConfigError(
            f"--device {plan.device} with --backend ray: Ray gives each task its GPU; use "
            "--device cuda (or auto) and --task-gpus"
        )


def check_address(address: str, timeout_s: float = 10.0) -> None:
    """Refuse a ``HOST:PORT`` that does not answer (Ray itself would keep trying for minutes);
    ``auto`` and ``ray://`` addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} must be HOST:PORT (or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"no Ray cluster answers at {address}: {reason}") from None


def task_resources(plan: BenchPlan) -> dict[str, float]:
    """What each task asks Ray for: ``num_cpus`` (default 1) and ``num_gpus`` (default 1 when
    the plan's device is CUDA, or ``auto`` and this machine has one; else 0)."""
    cuda = plan.device.startswith("cuda") or (plan.device == "auto" and torch.cuda.is_available())
    gpus = plan.task_gpus if plan.task_gpus is not None else float(cuda)
    return {"num_cpus": plan.task_cpus or 1, "num_gpus": gpus}


@dataclass(frozen=True)
class SeedReady:
    """What a seed task returns: its log lines, each method's configuration hash (to find
    finished runs before submitting them) and the seed's label-shift entry."""

    lines: list[str]
    digests: dict[str, str]
    label_shift: dict[str, Any] | None


#: The seed contexts a worker process built, with the plan they were built for.
_CONTEXTS: dict[int, tuple[BenchPlan, SeedContext]] = {}


def _context(plan: BenchPlan, seed: int, lines: list[str] | None = None) -> SeedContext:
    """The seed's context, built once per worker process and plan (checkpoints from the
    cache; trained when missing)."""
    cached = _CONTEXTS.get(seed)
    if cached is not None and cached[0] == plan:
        return cached[1]
    ctx = prepare_seed(plan, seed, log=None if lines is None else lines.append)
    _CONTEXTS[seed] = (plan, ctx)
    return ctx


def _use_threads(plan: BenchPlan) -> None:
    """Give torch as many threads as the task asked CPUs for."""
    threads = max(1, int(plan.task_cpus or 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def seed_task(plan: BenchPlan, seed: int) -> SeedReady:
    """Ray task: train (or reuse) the seed's two checkpoints into the shared cache."""
    _use_threads(plan)
    lines: list[str] = []
    ctx = _context(plan, seed, lines)
    digests = {method: unit_config(ctx, method)[1] for method in plan.methods}
    return SeedReady(lines, digests, ctx.label_shift)


def unit_task(
    plan: BenchPlan, seed: int, method: str, ready: SeedReady
) -> tuple[ComputedUnit | None, list[str], str | None]:
    """Ray task: compute one run, writing nothing; returns (the computed run, log lines, error
    text). ``ready``, the seed task's result, only makes Ray run it after the checkpoints."""
    del ready
    _use_threads(plan)
    lines: list[str] = []
    if (attempt := _attempt()) > 0:
        lines.append(
            f"seed {seed}: {method} started again (attempt {attempt + 1}; a worker running it "
            "was lost)"
        )
    try:
        return compute_unit(_context(plan, seed), method), lines, None
    except Exception as exc:  # a failed run, reported by the driver; not retried
        return None, lines, error_text(exc)


def _attempt() -> int:
    """Which attempt of its task this is (0: the first), when Ray says; else 0."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # not in a task, or a Ray without it: nothing to report
        return 0


def _task_error(exc: BaseException) -> str:
    """The error text of a task that raised: the task's own exception rather than Ray's
    wrapper around it (whose first line names the worker process)."""
    cause = getattr(exc, "cause", None)
    return error_text(cause if isinstance(cause, BaseException) else exc)


def worker_plan(plan: BenchPlan) -> BenchPlan:
    """The plan the tasks get: every path absolute (a worker's directory may differ), the
    cache folder fixed, one job per task."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else path.expanduser().absolute()

    return dataclasses.replace(
        plan,
        out=plan.out.expanduser().absolute(),
        data_root=absolute(plan.data_root),
        cache_dir=absolute(plan.cache_dir or default_cache_dir()),
        forget=absolute(plan.forget),
        original=absolute(plan.original),
        reference=absolute(plan.reference),
        jobs=1,
    )


def connect(ray: ModuleType, plan: BenchPlan) -> bool:
    """Connect to the plan's cluster, or start a local one (``jobs`` runs at once when
    ``jobs > 1``, else one per core); True when this call connected (and must disconnect),
    False when the caller had already initialised Ray."""
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if plan.address is None:
        cpus = plan.jobs * (plan.task_cpus or 1) if plan.jobs > 1 else None
        ray.init(include_dashboard=False, num_cpus=cpus, **quiet)
        return True
    try:
        ray.init(address=plan.address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {plan.address}: {exc}") from None
    return True


def run_ray(plan: BenchPlan, progress: BenchProgress, log: BenchLog, collector: Collector) -> None:
    """Run the plan's seeds and runs as Ray tasks; records, results.json and the log are
    written here, as each task finishes."""
    ray = import_ray()
    started = connect(ray, plan)
    try:
        _Driver(ray, plan, progress, log, collector).run()
    finally:
        if started:
            ray.shutdown()


class _Driver:
    """Submits the tasks and handles each as it finishes."""

    def __init__(
        self,
        ray: ModuleType,
        plan: BenchPlan,
        progress: BenchProgress,
        log: BenchLog,
        collector: Collector,
    ) -> None:
        self.ray, self.plan, self.progress, self.log = ray, plan, progress, log
        self.collector = collector
        self.task_plan = worker_plan(plan)
        self.options = {
            **task_resources(plan),
            "max_retries": MAX_RETRIES,
            "retry_exceptions": False,
            "runtime_env": {"env_vars": {"DLFD_CACHE_DIR": str(self.task_plan.cache_dir)}},
        }
        self.seed_task = ray.remote(seed_task)
        self.unit_task = ray.remote(unit_task)
        self.pending: dict[Any, tuple[int, str]] = {}  # ObjectRef -> (seed, method or "")

    def run(self) -> None:
        res = self.options
        self.log(
            f"ray: {self.ray.cluster_resources().get('CPU', 0):g} CPU(s) in the cluster; each "
            f"task asks for {res['num_cpus']:g} CPU(s) and {res['num_gpus']:g} GPU(s)",
            echo=False,
        )
        for seed in self.plan.seeds:
            name = f"{TASK_PREFIX} seed {seed}: checkpoints"
            ref = self.seed_task.options(name=name, **self.options).remote(self.task_plan, seed)
            self.pending[ref] = (seed, "")
        while self.pending:
            [ref], _ = self.ray.wait(list(self.pending), num_returns=1)
            seed, method = self.pending.pop(ref)
            if method:
                self._unit_done(ref, seed, method)
            else:
                self._seed_done(ref, seed)

    def _seed_done(self, ref: Any, seed: int) -> None:
        """Submit the seed's unfinished runs; reuse its finished ones."""
        try:
            ready: SeedReady | None = self.ray.get(ref)
        except Exception as exc:  # e.g. its worker died more often than retried
            ready, failure = None, _task_error(exc).partition("\n")[0]
        for _ in ROLE_OF_ROW:
            self.progress.end(f"seed {seed}: checkpoints")
        if ready is None:  # no checkpoints: none of the seed's runs can run
            for method in self.plan.methods:
                self.collector.fail(seed, method, f"its seed's checkpoints failed: {failure}")
                self.progress.end(f"seed {seed}: {method}")
            return
        for line in ready.lines:
            self.log(line)
        for method in self.plan.methods:
            digest = ready.digests[method]
            short, why = reuse_unit(self.plan, seed, method, digest, ready.label_shift, self.log)
            if short is not None:
                self.collector.finish(seed, method, short, False)
                self.progress.end(f"seed {seed}: {method}")
                continue
            start_unit(self.plan, seed, method, why, self.log)
            task = self.unit_task.options(
                name=f"{TASK_PREFIX} seed {seed}: {method}", **self.options
            )
            self.pending[task.remote(self.task_plan, seed, method, ref)] = (seed, method)

    def _unit_done(self, ref: Any, seed: int, method: str) -> None:
        """Write a finished run's files and record, or report its failure."""
        try:
            unit, lines, error = self.ray.get(ref)
        except Exception as exc:  # its worker died more often than retried, or Ray failed
            unit, lines, error = None, [], _task_error(exc)
        record = None
        if unit is not None:
            try:
                record = write_unit(self.plan.out, unit, lines.append)
            except Exception as exc:
                error = error_text(exc)
        report_unit(self.collector, self.log, seed, method, (record, True, lines, error))
        self.progress.end(f"seed {seed}: {method}")
