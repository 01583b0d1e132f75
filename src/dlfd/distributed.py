"""Data-parallel runs on PyTorch's distributed engine: one process per device, rank 0 writes.

A run started by ``torchrun --nproc_per_node=N -m dlfd ...`` has one process per device;
:func:`distributed_from_env` reads torchrun's environment and joins the process group (NCCL on
GPUs, gloo on CPU). The :class:`DistributedContext` it yields is passed explicitly (never a
global) to :func:`dlfd.training.train_checkpoint` and :func:`dlfd.unlearn`, which then:

* split every global batch of B samples into W per-process batches of B / W (refused unless
  divisible): rank r reads positions r, r + W, r + 2W, ... of the same seeded order
  (:class:`ShardSampler`), so the W shards of step k together are exactly the single-process
  run's batch k;
* train through :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged across
  processes, which equals the full-batch mean gradient up to float summation order);
* take every decision once, on rank 0 (monitor readings, file checks) and broadcast it, so all
  ranks follow the same branch and end with the same weights; BatchNorm running statistics
  (per process while training) are broadcast from rank 0 at each monitored point and at the end;
* write checkpoints and JSON on rank 0 only.

World size 1 takes none of these paths' collectives: it is the single-process run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from dlfd.errors import ConfigError, DlfdError

T = TypeVar("T")

#: torchrun's variables for this process's place in the job.
ENV_RANK, ENV_WORLD_SIZE, ENV_LOCAL_RANK = "RANK", "WORLD_SIZE", "LOCAL_RANK"


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s share of ``base``'s order (drawn exactly as an unsharded loader draws
    it): positions ``rank, rank + W, ...``. ``drop_tail`` (training loaders) first drops the
    last ``len % W`` positions so every rank takes the same number of steps; otherwise the
    first ``len % W`` ranks get one sample more."""

    def __init__(self, base: Sampler[int], rank: int, world_size: int, *, drop_tail: bool) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside a world of {world_size} process(es)")
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.drop_tail = drop_tail

    def _total(self) -> int:
        n = len(self.base)  # type: ignore[arg-type]
        return n - n % self.world_size if self.drop_tail else n

    def __len__(self) -> int:
        return len(range(self.rank, self._total(), self.world_size))

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        return iter(order[self.rank : self._total() : self.world_size])


class _GatherInterleaved(torch.autograd.Function):
    """All ranks' equally shaped tensors, interleaved row by row (the global batch order).
    Backward returns this rank's rows' gradient: every rank computes the same objective."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        ctx.rank, ctx.world_size = rank, world_size
        return torch.stack(parts, dim=1).flatten(0, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad.unflatten(0, (-1, ctx.world_size))[:, ctx.rank].contiguous(), None, None


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel job and the few collectives dlfd uses. Every
    method is a collective unless it says otherwise: all ranks call it, in the same order."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:  # rank 0 reads monitors, decides, and writes files
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    def per_rank_batch(self, batch_size: int) -> int:
        """The per-process batch of a global ``batch_size`` (not a collective)."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"batch size {batch_size} is not divisible by the {self.world_size} processes; "
                f"use a multiple of {self.world_size} so each process gets an equal share"
            )
        return batch_size // self.world_size

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel, wrapped after deciding which parameters
        train. Buffers are not re-broadcast on every forward (:meth:`sync_buffers` does it)."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)

    @torch.no_grad()
    def sync_buffers(self, module: nn.Module) -> None:
        """Overwrite every buffer (BatchNorm statistics) with rank 0's."""
        if self.world_size > 1:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Overwrite every parameter and buffer with rank 0's."""
        if self.world_size > 1:
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global batch of equally shaped per-rank tensors (see :class:`_GatherInterleaved`)."""
        return tensor if self.world_size == 1 else _GatherInterleaved.apply(tensor, *self.shard)

    def broadcast_object(self, obj: T | None) -> T:
        """Rank 0's ``obj`` on every rank (pickled; other ranks' ``obj`` is ignored)."""
        if self.world_size == 1:
            return obj  # type: ignore[return-value]
        box = [obj if self.is_main else None]
        device = self.device if self.device.type == "cuda" else None
        dist.broadcast_object_list(box, src=0, device=device)
        return box[0]  # type: ignore[return-value]

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0, returned (or raised) on every rank, so none is left waiting."""
        outcome: tuple[bool, Any] | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as exc:  # re-raised on every rank below
                error = exc
                outcome = (False, _picklable(exc))
        ok, value = self.broadcast_object(outcome)  # type: ignore[misc]
        if not ok:
            raise error if error is not None else value
        return value

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums of ``values`` over all ranks (float64)."""
        if self.world_size == 1:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather_subsample(
        self,
        inputs: torch.Tensor | None,
        labels: torch.Tensor | None,
        samples: int | None,
        seed: int,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, int]:
        """The seeded subsample a single process holding all ranks' rows in global order would
        draw (``randperm(total, seed)[:samples]``, sorted; rank r holds positions r, r + W, ...):
        ``((inputs, labels), size)`` on rank 0, ``(None, size)`` elsewhere."""
        count = 0 if inputs is None else int(inputs.shape[0])
        counts = [0] * self.world_size
        dist.all_gather_object(counts, count)
        total = sum(counts)
        positions = torch.arange(count) * self.world_size + self.rank
        if samples is not None and total > samples:
            order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
            chosen = torch.isin(positions, order[:samples])
        else:
            chosen = torch.ones(count, dtype=torch.bool)
        mine = None
        if inputs is not None and labels is not None:
            mine = (positions[chosen], inputs[chosen].cpu(), labels[chosen].cpu())
        parts: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(mine, parts, dst=0)
        size = min(total, samples) if samples is not None else total
        if parts is None:
            return None, size
        present = [p for p in parts if p is not None]
        if not present:
            return None, size
        where = torch.cat([p[0] for p in present]).argsort()
        x = torch.cat([p[1] for p in present])[where]
        y = torch.cat([p[2] for p in present])[where]
        return (x, y), size

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a DlfdError carrying its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure: send the message instead
        return DlfdError(f"{type(exc).__name__}: {exc}")
    return exc


def init_process(
    rank: int,
    world_size: int,
    device: torch.device,
    *,
    local_rank: int | None = None,
    init_method: str = "env://",
) -> DistributedContext:
    """Join the process group as ``rank`` of ``world_size`` (a CUDA ``device`` becomes
    ``cuda:local_rank``)."""
    local_rank = rank if local_rank is None else local_rank
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    context = DistributedContext(rank, world_size, local_rank, device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            context.backend, init_method=init_method, rank=rank, world_size=world_size
        )
    return context


@contextlib.contextmanager
def distributed_from_env(
    device: torch.device, environ: Mapping[str, str] | None = None
) -> Iterator[DistributedContext | None]:
    """The context of a torchrun worker (``WORLD_SIZE`` > 1), or None in a plain run. A normal
    exit waits for every rank (so rank 0's writes are done) and leaves the group."""
    environ = os.environ if environ is None else environ
    try:
        world_size = int(environ.get(ENV_WORLD_SIZE, "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={environ[ENV_WORLD_SIZE]!r} is not an integer") from None
    if world_size <= 1:
        yield None
        return
    context = init_process(
        int(environ.get(ENV_RANK, "0")),
        world_size,
        device,
        local_rank=int(environ.get(ENV_LOCAL_RANK, "0")),
    )
    try:
        yield context
        context.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawned(
    rank: int,
    fn: Callable[..., Any],
    world_size: int,
    device: str,
    init_method: str,
    results: str,
    args: tuple,
) -> None:
    context = init_process(rank, world_size, torch.device(device), init_method=init_method)
    try:
        value = fn(context, *args)
        torch.save(value, Path(results) / f"{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn_local(fn: Callable[..., T], world_size: int, *args: Any, device: str = "cpu") -> list[T]:
    """Run ``fn(context, *args)`` in ``world_size`` fresh local processes and return their
    results in rank order (tests, benchmarks). ``fn`` must be module-level and return plain
    data (read back with ``weights_only=True``); a failing rank ends them all and raises here.
    """
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="dlfd-spawn-") as results:
        mp.start_processes(
            _spawned,
            args=(fn, world_size, device, f"tcp://127.0.0.1:{port}", results, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [
            torch.load(Path(results) / f"{rank}.pt", weights_only=True)
            for rank in range(world_size)
        ]


__all__ = ["DistributedContext", "ShardSampler", "distributed_from_env", "init_process",
           "spawn_local"]  # fmt: skip
