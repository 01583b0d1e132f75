"""The supervised training loop shared by training and fine-tuning-style methods.

One epoch = one shuffled pass over a loader, SGD steps on the task loss. Everything random in
epoch ``e`` (shuffling, augmentation, dropout) is derived from ``(seed, e)``, so resuming after
epoch ``e`` reproduces an uninterrupted run bit for bit on CPU. The learning rate is a pure
function of the epoch (no scheduler state to save).

Divergence is reported when it happens, with its cause: the loss is checked before every step
and the parameters and floating-point buffers (BatchNorm running statistics, which a too large
learning rate can blow up while the train-mode loss stays finite) after every step, one fused
reduction over all tensors; either raises :class:`NonFiniteLossError` naming the epoch, the
batch, the tensor and the learning rate.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.errors import DlfdError
from dlfd.losses import correct_predictions, task_loss
from dlfd.runtime import derive_seed, seed_everything
from dlfd.training.recipe import TrainRecipe

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext

BatchCallback = Callable[[int, int], None]
#: ``loss_fn(model, inputs, labels) -> (loss, logits)``: what one training step minimises.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def task_loss_fn(task: str) -> LossFn:
    """The plain supervised step: the task loss of the model's logits."""

    def loss_fn(
        model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        return task_loss(logits, labels, task), logits

    return loss_fn


class NonFiniteLossError(DlfdError):
    """Training or unlearning diverged: a loss, weight or BatchNorm statistic became NaN/inf.

    The run stops where it happened, naming the step, the tensor and the settings that drive
    the steps, instead of saving (or scoring) a garbage model.
    """


def non_finite_tensor(model: nn.Module) -> str | None:
    """Name of the first parameter or floating-point buffer of ``model`` holding a NaN or an
    infinity, or None when all are finite.

    One fused pass (the norm of every tensor at once, as gradient clipping does); only when a
    norm is not finite (a NaN/inf, or a finite tensor so large its norm overflows) are the
    tensors looked at one by one.
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
    """Summary of one finished epoch."""

    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float


def learning_rate(recipe: TrainRecipe, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): cosine from ``lr`` towards 0, or constant."""
    if recipe.schedule == "constant":
        return recipe.lr
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / recipe.epochs))


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """SGD with the recipe's momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )


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
    on_batch: BatchCallback | None = None,
    loss_fn: LossFn | None = None,
    dist: DistributedContext | None = None,
) -> Iterator[EpochStats]:
    """Train from ``start_epoch`` to ``recipe.epochs``, yielding after each epoch.

    The caller decides what to do between epochs (save a resume state, report progress).
    ``loss_fn`` replaces the plain task loss (methods that fine-tune with another objective).
    With ``dist`` (``model`` wrapped by :meth:`~dlfd.distributed.DistributedContext.wrap`,
    loaders yielding this rank's shard), each rank draws dropout from its own seed (rank 0's is
    the single-process one) and the epoch's loss and accuracy are over all ranks' samples.
    """
    loss_fn = loss_fn or task_loss_fn(task)
    rank = 0 if dist is None else dist.rank
    for epoch in range(start_epoch, recipe.epochs):
        dropout = ("dropout", epoch) if rank == 0 else ("dropout", epoch, "rank", rank)
        seed_everything(derive_seed(seed, *dropout))
        lr = learning_rate(recipe, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        started = time.perf_counter()
        loss_sum = correct_sum = 0.0
        seen = 0
        loader = loader_for_epoch(epoch)
        for step, (inputs, labels) in enumerate(loader):
            inputs, labels = inputs.to(device), labels.to(device)
            loss, logits = loss_fn(model, inputs, labels)
            where = f"at epoch {epoch + 1}, batch {step + 1} (lr={lr:g}); lower the learning rate"
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"training diverged: loss became {loss.item()} {where}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bad = non_finite_tensor(model)
            if bad is not None:
                raise NonFiniteLossError(
                    f"training diverged: {describe_tensor(bad)} became non-finite {where}"
                )
            n = labels.shape[0]
            seen += n
            loss_sum += loss.item() * n
            correct_sum += correct_predictions(logits.detach(), labels, task).sum().item()
            if on_batch is not None:
                on_batch(step + 1, len(loader))
        if dist is not None:
            loss_sum, correct_sum, seen = dist.all_reduce_sum([loss_sum, correct_sum, seen])
        yield EpochStats(
            epoch=epoch + 1,
            loss=loss_sum / max(seen, 1),
            accuracy=correct_sum / max(seen, 1),
            lr=lr,
            seconds=time.perf_counter() - started,
        )
