"""The training step shared by training and fine-tuning-style methods, and training's epochs.

:func:`run_pass` is the one optimisation loop (training and every fine-tuning method build on
it). Everything random in epoch ``e`` (shuffling, augmentation, dropout) is derived from
``(seed, e)``, so resuming after epoch ``e`` reproduces an uninterrupted run bit for bit on CPU;
the learning rate is a pure function of the epoch (no scheduler state to save).

Divergence is reported where it happens: the loss is checked before every step, the parameters
and floating-point buffers (BatchNorm statistics, which a too large learning rate can blow up
while the train-mode loss stays finite) after it, raising :class:`NonFiniteLossError`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.errors import ConfigError, DlfdError
from dlfd.losses import correct_predictions, task_loss
from dlfd.recipe import TrainRecipe
from dlfd.runtime import derive_seed, seed_everything

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext

#: ``progress(done, total, phase)``: called after every step of a pass.
ProgressFn = Callable[[int, int, str], None]
#: ``loss_fn(model, inputs, labels) -> (loss, logits)``: what one training step minimises.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: What a step of :func:`run_pass` minimises: the loss, or ``(loss, extra)`` where a dict
#: ``extra`` holds terms to average alongside it (other extras, e.g. logits, are ignored).
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
#: ``diverged(what)``: the error to raise when ``what`` (``"loss became nan at ..."``) happens.
Diverged = Callable[[str], Exception]
Schedule = Literal["constant", "cosine"]


def task_loss_fn(task: str) -> LossFn:
    """The plain supervised step: the task loss of the model's logits (and the logits)."""

    def loss_fn(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> Any:
        logits = model(inputs)
        return task_loss(logits, labels, task), logits

    return loss_fn


class NonFiniteLossError(DlfdError):
    """Training or unlearning diverged: a loss, weight or BatchNorm statistic became NaN/inf
    (the run stops instead of saving or scoring a garbage model)."""


def non_finite_tensor(model: nn.Module) -> str | None:
    """Name of the first non-finite parameter or floating-point buffer of ``model``, or None.

    One fused norm of every tensor (as gradient clipping does); only when a norm is not finite
    (a NaN/inf, or a tensor whose norm overflows) are the tensors looked at one by one.
    """
    named = [
        (name, tensor.detach())
        for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
        if tensor.is_floating_point() and tensor.numel()
    ]
    if not named:
        return None
    tensors = [tensor for _, tensor in named]
    try:
        norms = torch._foreach_norm(tensors)
        if bool(torch.isfinite(torch.stack([n.float().to(norms[0].device) for n in norms])).all()):
            return None
    except (RuntimeError, NotImplementedError):  # a device without the fused kernel
        pass
    for name, tensor in named:
        if not bool(torch.isfinite(tensor).all()):
            return name
    return None


def describe_tensor(name: str) -> str:
    """``features.1.1.running_var`` -> ``running_var of features.1.1`` (without the
    ``module.`` prefix data-parallel wrappers add)."""
    while name.startswith("module."):
        name = name[len("module.") :]
    owner, _, attribute = name.rpartition(".")
    return f"{attribute} of {owner}" if owner else attribute


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float


def scheduled_lr(base: float, schedule: Schedule, step: int, total: int) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: constant, or cosine towards 0."""
    if schedule == "constant" or total <= 1:
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total))


def learning_rate(recipe: TrainRecipe, epoch: int) -> float:
    return scheduled_lr(recipe.lr, recipe.schedule, epoch, recipe.epochs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _trainable(parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ConfigError("no trainable parameters: the method would not change the model")
    return trainable


def sgd(parameters: Iterable[nn.Parameter], lr: float, momentum: float = 0.9,
        weight_decay: float = 0.0) -> torch.optim.SGD:  # fmt: skip
    return torch.optim.SGD(_trainable(parameters), lr, momentum, weight_decay=weight_decay)


def adam(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    return torch.optim.Adam(_trainable(parameters), lr=lr, weight_decay=weight_decay)


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    return sgd(model.parameters(), recipe.lr, recipe.momentum, recipe.weight_decay)


def check_loss(loss: torch.Tensor, where: str, diverged: Diverged) -> None:
    if not bool(torch.isfinite(loss.detach()).all()):
        raise diverged(f"loss became {loss.detach().float().sum().item()} at {where}")


def check_model(model: nn.Module, where: str, diverged: Diverged) -> None:
    name = non_finite_tensor(model)
    if name is not None:
        raise diverged(f"{describe_tensor(name)} became non-finite at {where}")


def optimiser_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    where: str,
    diverged: Diverged,
    after_step: Callable[[], None] | None = None,
) -> None:
    """Check ``loss``, step on it, run ``after_step`` (e.g. restoring masked weights), then
    check ``model``'s parameters and buffers."""
    check_loss(loss, where, diverged)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if after_step is not None:
        after_step()
    check_model(model, where, diverged)


def run_pass(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: BatchLoss,
    *,
    device: torch.device,
    where: str,
    diverged: Diverged,
    unit: str = "batch",
    after_step: Callable[[], None] | None = None,
    progress: ProgressFn | None = None,
    done: int = 0,
    total: int = 0,
    phase: str = "",
) -> tuple[dict[str, float], int]:
    """One pass over ``batches``, an :func:`optimiser_step` on ``loss_fn(model, inputs, labels)``
    per batch (a divergence names ``"<where>, <unit> <step>"``), then
    ``progress(done + step, total, phase)``. Returns the sample-weighted sums of the loss and of
    ``loss_fn``'s extra terms, and the samples seen."""
    sums: dict[str, float] = {"loss": 0.0}
    seen = 0
    for step, (inputs, labels) in enumerate(batches):
        inputs, labels = inputs.to(device), labels.to(device)
        loss = loss_fn(model, inputs, labels)
        loss, extra = loss if isinstance(loss, tuple) else (loss, None)
        optimiser_step(model, optimizer, loss, f"{where}, {unit} {step + 1}", diverged, after_step)
        n = labels.shape[0]
        seen += n
        terms = {"loss": loss, **extra} if isinstance(extra, dict) else {"loss": loss}
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.item() * n
        if progress is not None:
            progress(done + step + 1, total, phase)
    return sums, seen


def train_epochs(
    model: nn.Module,
    loader_for_epoch: Callable[[int], DataLoader],
    optimizer: torch.optim.Optimizer,
    recipe: TrainRecipe,
    *,
    task: str,
    seed: int,
    device: torch.device,
    start_epoch: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    loss_fn: LossFn | None = None,
    dist: DistributedContext | None = None,
) -> Iterator[EpochStats]:
    """Train from ``start_epoch`` to ``recipe.epochs``, yielding after each epoch.

    ``loss_fn`` replaces the plain task loss. With ``dist`` (``model`` wrapped, loaders yielding
    this rank's shard), each rank draws dropout from its own seed (rank 0's is the
    single-process one) and the epoch's loss and accuracy are over all ranks' samples.
    """
    loss_fn = loss_fn or task_loss_fn(task)
    rank = 0 if dist is None else dist.rank
    for epoch in range(start_epoch, recipe.epochs):
        dropout = ("dropout", epoch) if rank == 0 else ("dropout", epoch, "rank", rank)
        seed_everything(derive_seed(seed, *dropout))
        lr = learning_rate(recipe, epoch)
        set_lr(optimizer, lr)
        model.train()
        started = time.perf_counter()
        correct_sum = 0.0

        def counted(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            nonlocal correct_sum
            loss, logits = loss_fn(net, inputs, labels)
            correct_sum += correct_predictions(logits.detach(), labels, task).sum().item()
            return loss

        loader = loader_for_epoch(epoch)
        sums, seen = run_pass(
            model, loader, optimizer, counted, device=device, where=f"epoch {epoch + 1}",
            diverged=lambda what, lr=lr: NonFiniteLossError(
                f"training diverged: {what} (lr={lr:g}); lower the learning rate"
            ),
            progress=None if on_batch is None else lambda done, total, _: on_batch(done, total),
            total=0 if on_batch is None else len(loader),
        )  # fmt: skip
        loss_sum = sums["loss"]
        if dist is not None:
            loss_sum, correct_sum, seen = dist.all_reduce_sum([loss_sum, correct_sum, seen])
        yield EpochStats(
            epoch=epoch + 1,
            loss=loss_sum / max(seen, 1),
            accuracy=correct_sum / max(seen, 1),
            lr=lr,
            seconds=time.perf_counter() - started,
        )
