"""Data-parallel runs on PyTorch's distributed engine: one process per device, rank 0 writes.

A run started by ``torchrun --nproc_per_node=N -m dlfd ...`` (single or multi node: torchrun's
usual rendezvous flags) has one process per device; :func:`distributed_from_env` reads
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) and
joins the process group (NCCL on GPUs, gloo on CPU). The :class:`DistributedContext` it yields
is passed explicitly (never a global) to :func:`dlfd.training.train_checkpoint` and
:func:`dlfd.unlearn`, which then:

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
    """Rank ``rank``'s share of ``base``'s order: positions ``rank, rank + W, ...``.

    ``drop_tail`` (training loaders) first drops the last ``len % W`` positions so that every
    rank gets the same number of samples, hence of steps; otherwise (evaluation loaders) the
    first ``len % W`` ranks get one sample more. With W = 1 it yields ``base`` unchanged, and
    ``base`` is drawn exactly as an unsharded loader would draw it (same generator calls).
    """

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

    Backward returns the gradient of this rank's rows only: every rank computes the same
    objective from the gathered tensor, and each one is responsible for its own rows.
    """

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
    """This process's place in a data-parallel job and the few collectives dlfd uses.

    ``device`` is this process's device (``cuda:LOCAL_RANK`` with NCCL, or CPU with gloo).
    Every method is a collective unless it says otherwise: all ranks must call it, in the
    same order.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reads monitors, decides, and writes files."""
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    # -- data ---------------------------------------------------------------------------------

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
        """``(rank, world_size)`` as :meth:`dlfd.data.loaders.ProblemLoaders.loader` takes it."""
        return self.rank, self.world_size

    # -- models ---------------------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel (``model`` itself with one process).

        Wrap after deciding which parameters train (DDP averages the gradients of those that
        require them). Rank 0's parameters and buffers are broadcast on wrapping; buffers are not
        re-broadcast on every forward (:meth:`sync_buffers` does it at chosen points).
        """
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
        """The global batch of a per-rank tensor (rows in global order), with gradients flowing
        back to this rank's rows; every rank's tensor must have the same shape."""
        if self.world_size == 1:
            return tensor
        return _GatherInterleaved.apply(tensor, self.rank, self.world_size)

    # -- decisions ------------------------------------------------------------------------------

    def broadcast_object(self, obj: T | None) -> T:
        """Rank 0's ``obj`` on every rank (pickled; other ranks' ``obj`` is ignored)."""
        if self.world_size == 1:
            return obj  # type: ignore[return-value]
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]  # type: ignore[return-value]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and return its result on every rank; if it raises, every
        rank raises (rank 0 its own exception, the others a copy), so none is left waiting."""
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
        """A seeded subsample of the rows all ranks hold together, assembled on rank 0.

        Rank r's rows are global positions r, r + W, ... (:class:`ShardSampler`'s layout). The
        subsample is the one a single process holding all rows in global order would draw
        (``randperm(total, seed)[:samples]``, sorted). Returns ``((inputs, labels), size)`` on
        rank 0 and ``(None, size)`` elsewhere; ``size`` (the subsample's size) on every rank.
        """
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
        """Wait until every rank gets here."""
        if self.world_size > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a DlfdError carrying its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure: send the message instead
        return DlfdError(f"{type(exc).__name__}: {exc}")
    return exc


def env_world_size(environ: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get(ENV_WORLD_SIZE, "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={environ[ENV_WORLD_SIZE]!r} is not an integer") from None


def init_process(
    rank: int,
    world_size: int,
    device: torch.device,
    *,
    local_rank: int | None = None,
    init_method: str = "env://",
) -> DistributedContext:
    """Join the process group as ``rank`` of ``world_size`` on ``device``'s backend.

    A CUDA ``device`` becomes ``cuda:local_rank`` (one GPU per process on each node).
    """
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
    """The context of a torchrun worker (``WORLD_SIZE`` > 1), or None in a plain run.

    Joins the process group on entry; on a normal exit waits for every rank (so rank 0's
    writes are done when any process ends) and leaves the group.
    """
    environ = os.environ if environ is None else environ
    world_size = env_world_size(environ)
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    """Run ``fn(context, *args)`` in ``world_size`` fresh processes on this machine (gloo on CPU,
    NCCL on ``device="cuda"``) and return their results in rank order.

    For tests and benchmarks: ``fn`` must be a module-level function and its result plain data
    (tensors, numbers, strings, lists, dicts), which is read back with ``weights_only=True`` (no
    unpickling of arbitrary objects). A failing rank ends them all and re-raises here.
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="dlfd-spawn-") as results:
        mp.start_processes(
            _spawned,
            args=(fn, world_size, device, f"tcp://127.0.0.1:{free_port()}", results, args),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [
            torch.load(Path(results) / f"{rank}.pt", weights_only=True)
            for rank in range(world_size)
        ]


__all__ = [
    "DistributedContext",
    "ShardSampler",
    "distributed_from_env",
    "env_world_size",
    "free_port",
    "init_process",
    "spawn_local",
]
