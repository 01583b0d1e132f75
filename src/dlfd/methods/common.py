"""Mechanics several methods share, written once: optimisers, the epoch loop, forget-batch
cycling, re-initialisation, parameter blocks and masks, the Fisher diagonal, wrong labels."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import RunContext

#: ``loss_fn(model, inputs, labels) -> loss`` minimised by :func:`run_epochs`.
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Schedule = Literal["constant", "cosine"]


def sgd(
    parameters: Iterable[nn.Parameter], lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.SGD:
    """SGD over the parameters that require gradients."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ConfigError("no trainable parameters: the method would not change the model")
    return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam(
    parameters: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """Adam over the parameters that require gradients."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ConfigError("no trainable parameters: the method would not change the model")
    return torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def scheduled_lr(base: float, schedule: Schedule, step: int, total: int) -> float:
    """Learning rate at ``step`` of ``total``: constant, or cosine from ``base`` towards 0."""
    if schedule == "constant" or total <= 1:
        return base
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total))


def plain_task_loss(task: str) -> BatchLoss:
    """The supervised loss: the task loss of the model's logits."""
    return lambda model, inputs, labels: task_loss(model(inputs), labels, task)


def run_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    ctx: RunContext,
    *,
    epochs: int,
    loss_fn: BatchLoss,
    lr: float,
    schedule: Schedule = "constant",
    phase: str = "train",
    after_step: Callable[[], None] | None = None,
) -> None:
    """``epochs`` passes over ``loader`` minimising ``loss_fn`` in train mode.

    The learning rate follows ``schedule`` per epoch; after each epoch the state is offered
    to the selector (``ctx.checkpoint``) and the mean loss is traced. ``after_step`` runs
    after every optimiser step (e.g. restoring masked parameters). ``loss_fn`` receives the
    module to run forward (``ctx.parallel(model)``: data-parallel in a distributed run).
    The loss is checked before every step and the weights and buffers after it, so a
    divergence stops the run at the batch where it happens.
    """
    net = ctx.parallel(model)
    batches = len(loader)
    for epoch in range(epochs):
        set_lr(optimizer, scheduled_lr(lr, schedule, epoch, epochs))
        model.train()
        loss_sum, seen = 0.0, 0
        for step, (inputs, labels) in enumerate(loader):
            inputs, labels = inputs.to(ctx.device), labels.to(ctx.device)
            loss = loss_fn(net, inputs, labels)
            where = f"{phase} epoch {epoch + 1}, batch {step + 1}"
            ctx.check_loss(loss, where=where)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            ctx.check_model(model, where=where)
            loss_sum += loss.item() * labels.shape[0]
            seen += labels.shape[0]
            ctx.progress(epoch * batches + step + 1, epochs * batches, phase)
        ctx.log(phase=phase, epoch=epoch + 1, loss=loss_sum / max(seen, 1))
        ctx.checkpoint(model, f"{phase} epoch {epoch + 1}")


def cycle(loader: DataLoader, name: str = "forget") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader`` forever, restarting it (and its shuffle) when it runs out."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError(f"the {name} loader yields no batches")


def reinitialise(module: nn.Module) -> int:
    """Reset every submodule that has ``reset_parameters`` (fresh random init from the global
    seed), then apply each model's own scheme where it defines ``init_weights()`` (so a
    retrained ``resnet18`` starts like a freshly created one); returns how many were reset."""
    count = 0
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            count += 1
    for sub in module.modules():
        init_weights = getattr(sub, "init_weights", None)
        if callable(init_weights):
            init_weights()
    return count


def parameter_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks from input to output, for methods acting on "the last k blocks".

    A model may define ``unlearning_blocks()`` returning ``[(name, module), ...]``; otherwise
    the top-level children that own parameters are used, with a single child that holds
    every other block (a ``trunk``) expanded one level.
    """
    custom = getattr(model, "unlearning_blocks", None)
    if callable(custom):
        return list(custom())
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        grandchildren = [
            (n, c) for n, c in child.named_children() if any(True for _ in c.parameters())
        ]
        if len(grandchildren) > 2 and name in ("trunk", "backbone", "features", "base_model"):
            blocks.extend((f"{name}.{n}", c) for n, c in grandchildren)
        else:
            blocks.append((name, child))
    if not blocks:
        raise ConfigError("the model has no parameter-owning blocks")
    return blocks


def last_blocks(model: nn.Module, k: int) -> list[tuple[str, nn.Module]]:
    """The last ``k`` blocks of :func:`parameter_blocks`; refuses k larger than the model."""
    blocks = parameter_blocks(model)
    if k > len(blocks):
        names = ", ".join(n for n, _ in blocks)
        raise ConfigError(f"k={k} but the model has only {len(blocks)} blocks ({names})")
    return blocks[len(blocks) - k :]


class ParamMask:
    """Which parameter elements a method may change; everything else is restored exactly.

    Whole tensors outside the mask get ``requires_grad=False`` (no optimiser state at all);
    partly masked tensors keep training but their unmasked elements are put back after every
    step (so weight decay and momentum cannot move them either).
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.masks = {name: m.to(torch.bool) for name, m in masks.items()}
        self._frozen_values = {
            name: p.detach().clone()
            for name, p in model.named_parameters()
            if name in self.masks and not bool(self.masks[name].all())
        }

    @classmethod
    def for_modules(cls, model: nn.Module, modules: Iterable[nn.Module]) -> ParamMask:
        """Everything inside ``modules`` may change, nothing else."""
        keep = {id(p) for module in modules for p in module.parameters()}
        masks = {
            name: torch.full_like(p, id(p) in keep, dtype=torch.bool)
            for name, p in model.named_parameters()
        }
        return cls(model, masks)

    def apply(self) -> None:
        """Turn gradients off for tensors with no trainable element."""
        for name, p in self.model.named_parameters():
            mask = self.masks.get(name)
            if mask is not None and not bool(mask.any()):
                p.requires_grad_(False)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the elements outside the mask (call after every optimiser step)."""
        for name, p in self.model.named_parameters():
            frozen = self._frozen_values.get(name)
            if frozen is not None:
                keep = self.masks[name]
                p.copy_(torch.where(keep, p, frozen))

    def fraction(self) -> float:
        """Fraction of parameter elements the method may change."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int(m.sum()) for m in self.masks.values()) / max(total, 1)


def fisher_diagonal(
    model: nn.Module,
    loader: DataLoader,
    task: str,
    device: torch.device,
    *,
    forward: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal of the empirical Fisher information: mean over batches of squared gradients
    of the task loss, per parameter (eval mode, so BatchNorm statistics stay untouched).

    ``forward``: the module to run forward, if not ``model`` (``ctx.parallel(model)``: in a
    distributed run each batch's gradient is then the global batch's, the same on every rank).
    """
    forward = model if forward is None else forward
    was_training = model.training
    model.eval()
    importance = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    batches = 0
    try:
        for inputs, labels in loader:
            model.zero_grad(set_to_none=True)
            loss = task_loss(forward(inputs.to(device)), labels.to(device), task)
            loss.backward()
            for name, p in model.named_parameters():
                if p.grad is not None and name in importance:
                    importance[name] += p.grad.detach() ** 2
            batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if batches == 0:
        raise ConfigError("cannot compute parameter importance from an empty loader")
    return {name: value / batches for name, value in importance.items()}


def random_wrong_labels(
    labels: torch.Tensor, num_outputs: int, task: str, generator: torch.Generator
) -> torch.Tensor:
    """Random labels that are never the true ones (uniform over the other classes; for
    multilabel, a random 0/1 vector with at least one label flipped)."""
    cpu = labels.detach().cpu()
    if task == "multiclass":
        if num_outputs < 2:
            raise ConfigError("random wrong labels need at least 2 classes")
        offset = torch.randint(1, num_outputs, cpu.shape, generator=generator)
        return ((cpu + offset) % num_outputs).to(labels.device)
    flips = torch.randint(0, 2, cpu.shape, generator=generator).bool()
    none_flipped = ~flips.any(dim=1)
    forced = torch.randint(0, cpu.shape[1], (cpu.shape[0],), generator=generator)
    flips[none_flipped, forced[none_flipped]] = True
    return torch.where(flips, 1.0 - cpu.float(), cpu.float()).to(labels.device)


def train_only(loss_fn: BatchLoss, modules: Iterable[nn.Module]) -> BatchLoss:
    """``loss_fn`` run with the model in eval mode except ``modules`` (train mode).

    For methods that train part of a model: the frozen rest keeps its BatchNorm running
    statistics and runs without dropout, exactly as at inference, so nothing outside
    ``modules`` changes (buffers included).
    """
    trainable = list(modules)

    def wrapped(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model.eval()
        for module in trainable:
            module.train()
        return loss_fn(model, inputs, labels)

    return wrapped


def unresettable_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters :func:`reinitialise` cannot reset: those owned directly by a
    submodule without ``reset_parameters`` (re-initialising would silently keep them)."""
    names = []
    for prefix, sub in module.named_modules():
        if callable(getattr(sub, "reset_parameters", None)):
            continue
        for name, _ in sub.named_parameters(recurse=False):
            names.append(f"{prefix}.{name}" if prefix else name)
    return names


def reinitialise_blocks(blocks: Sequence[tuple[str, nn.Module]], who: str) -> int:
    """:func:`reinitialise` every block of ``blocks`` (``[(name, module), ...]``), after
    refusing, with a ConfigError naming ``who``, blocks holding parameters that
    :func:`reinitialise` cannot reset (they would silently keep their values); returns how many
    modules were reset."""
    kept = [f"{name}.{p}" for name, module in blocks for p in unresettable_parameters(module)]
    if kept:
        raise ConfigError(
            f"{who} cannot re-initialise parameters whose modules have no reset_parameters: "
            + ", ".join(kept[:8])
            + (f", ... ({len(kept)} in all)" if len(kept) > 8 else "")
        )
    return sum(reinitialise(module) for _, module in blocks)
