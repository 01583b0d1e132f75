"""Mechanics several methods share: epoch loops (on :func:`dlfd.training.loop.run_pass`),
batch cycling, re-initialisation, parameter blocks and masks, the Fisher diagonal."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.training.loop import (
    BatchLoss,
    Schedule,
    adam,
    run_pass,
    scheduled_lr,
    set_lr,
    sgd,
    task_loss_fn,
)

__all__ = ["BatchLoss", "Schedule", "adam", "sgd", "task_loss_fn"]  # re-exported for methods

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def run_epochs(
    model: nn.Module,
    loader: Batches | Callable[[int], Batches],
    optimizer: torch.optim.Optimizer,
    ctx: RunContext,
    *,
    epochs: int,
    loss_fn: BatchLoss,
    lr: float,
    schedule: Schedule = "constant",
    phase: str = "train",
    after_step: Callable[[], None] | None = None,
    batches: int | None = None,
    unit: str = "batch",
) -> None:
    """``epochs`` train-mode passes of :func:`~dlfd.training.loop.run_pass` over ``loader`` (or
    ``loader(epoch)``, ``batches`` long), ``lr`` following ``schedule`` per epoch; each epoch's
    mean terms are traced and its state offered to ``ctx.checkpoint``."""
    net = ctx.parallel(model)
    per_epoch = len(loader) if batches is None else batches
    for epoch in range(epochs):
        set_lr(optimizer, scheduled_lr(lr, schedule, epoch, epochs))
        model.train()
        sums, seen = run_pass(
            net, loader(epoch) if callable(loader) else loader, optimizer, loss_fn,
            device=ctx.device, where=f"{phase} epoch {epoch + 1}", diverged=ctx.diverged,
            unit=unit, after_step=after_step, progress=ctx.progress, done=epoch * per_epoch,
            total=epochs * per_epoch, phase=phase,
        )  # fmt: skip
        ctx.log(phase=phase, epoch=epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()})
        ctx.checkpoint(model, f"{phase} epoch {epoch + 1}")


def sgd_epochs(
    model: nn.Module,
    loader: DataLoader,
    params: Any,
    ctx: RunContext,
    loss_fn: BatchLoss,
    phase: str = "train",
) -> None:
    """:func:`run_epochs` under SGD with the settings of ``params`` (an :class:`SGDParams`)."""
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    run_epochs(model, loader, optimizer, ctx, epochs=params.epochs, loss_fn=loss_fn, lr=params.lr,
               schedule=params.schedule, phase=phase)  # fmt: skip


def relabel_epochs(
    model: nn.Module,
    data: UnlearnData,
    params: SGDParams,
    ctx: RunContext,
    *,
    phase: str,
    after_step: Callable[[], None] | None = None,
) -> None:
    """``RL.py``'s loop (``random_label``, ``salun``) under SGD: per epoch, a forget pass with
    random wrong labels (drawn after the forward pass from the per-rank ``labels`` generator),
    then a retain pass."""
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    generator = ctx.generator("labels", per_rank=True)
    total = params.epochs * (len(data.forget) + len(data.retain))
    done = 0
    net = ctx.parallel(model)

    def wrong_labels(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = net(inputs)
        labels = random_wrong_labels(labels, logits.shape[1], data.task, generator)
        return task_loss(logits, labels, data.task)

    for epoch in range(params.epochs):
        set_lr(optimizer, scheduled_lr(params.lr, params.schedule, epoch, params.epochs))
        model.train()
        means = {}
        for part, loader, loss_fn in (
            ("forget", data.forget, wrong_labels),
            ("retain", data.retain, task_loss_fn(data.task)),
        ):
            sums, seen = run_pass(
                net, loader, optimizer, loss_fn, device=ctx.device,
                where=f"{phase} epoch {epoch + 1}", diverged=ctx.diverged, unit=f"{part} batch",
                after_step=after_step, progress=ctx.progress, done=done, total=total, phase=phase,
            )  # fmt: skip
            done += len(loader)
            means[part] = sums["loss"] / max(seen, 1)
        ctx.log(phase=phase, epoch=epoch + 1, forget_random_label_loss=means["forget"],
                retain_loss=means["retain"])  # fmt: skip
        ctx.checkpoint(model, f"{phase} epoch {epoch + 1}")


def train_last_blocks(
    model: nn.Module,
    blocks: list[tuple[str, nn.Module]],
    data: UnlearnData,
    params: Any,
    ctx: RunContext,
    phase: str,
) -> ParamMask:
    """Train only ``blocks`` on retain under SGD (``cf_k``, ``eu_k``). Unless
    ``params.frozen_train_mode``, the frozen rest runs in eval mode, exactly as at inference, so
    nothing outside ``blocks`` changes (BatchNorm statistics included)."""
    modules = [module for _, module in blocks]
    mask = ParamMask.for_modules(model, modules)
    mask.apply()
    task_step = task_loss_fn(data.task)

    def only_blocks_train(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> Any:
        net.eval()
        for module in modules:
            module.train()
        return task_step(net, inputs, labels)

    loss_fn = task_step if params.frozen_train_mode else only_blocks_train
    sgd_epochs(model, data.retain, params, ctx, loss_fn, phase)
    return mask


def clip(x: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``x`` within ``bounds`` (low, high; broadcasting), or ``x`` when there are none."""
    return x if bounds is None else torch.maximum(torch.minimum(x, bounds[1]), bounds[0])


def cycle(loader: DataLoader, name: str = "forget") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader`` forever, restarting it (and its shuffle)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError(f"the {name} loader yields no batches")


def reinitialise(module: nn.Module) -> int:
    """Reset every submodule with ``reset_parameters`` (from the global seed), then apply each
    model's ``init_weights()`` scheme (a retrained ``resnet18`` starts like a fresh one);
    returns how many were reset."""
    resets = [
        f for sub in module.modules() if callable(f := getattr(sub, "reset_parameters", None))
    ]
    for reset in resets:
        reset()
    for sub in module.modules():
        if callable(init_weights := getattr(sub, "init_weights", None)):
            init_weights()
    return len(resets)


def parameter_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks from input to output, for methods acting on "the last k blocks": its
    ``unlearning_blocks()``, else the parameter-owning top-level children (a ``trunk``-like
    child holding the rest expanded one level)."""
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
    """The last ``k`` blocks of :func:`parameter_blocks`."""
    blocks = parameter_blocks(model)
    if k > len(blocks):
        names = ", ".join(n for n, _ in blocks)
        raise ConfigError(f"k={k} but the model has only {len(blocks)} blocks ({names})")
    return blocks[len(blocks) - k :]


class ParamMask:
    """Which parameter elements a method may change. Whole tensors outside the mask get
    ``requires_grad=False``; partly masked ones have their unmasked elements put back after
    every step (so weight decay and momentum cannot move them either)."""

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
        keep = {id(p) for module in modules for p in module.parameters()}
        masks = {
            name: torch.full_like(p, id(p) in keep, dtype=torch.bool)
            for name, p in model.named_parameters()
        }
        return cls(model, masks)

    def apply(self) -> None:
        for name, p in self.model.named_parameters():
            mask = self.masks.get(name)
            if mask is not None and not bool(mask.any()):
                p.requires_grad_(False)

    @torch.no_grad()
    def restore(self) -> None:
        for name, p in self.model.named_parameters():
            frozen = self._frozen_values.get(name)
            if frozen is not None:
                keep = self.masks[name]
                p.copy_(torch.where(keep, p, frozen))

    def fraction(self) -> float:
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
    """Diagonal of the empirical Fisher information: mean over batches of squared task-loss
    gradients, per parameter, in eval mode. ``forward``: the module to run forward, if not
    ``model`` (``ctx.parallel(model)``: each batch's gradient is then the global batch's)."""
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
    """Random labels never the true ones (uniform over the other classes; multilabel: a random
    0/1 vector with at least one label flipped)."""
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


def unresettable_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters :func:`reinitialise` would silently keep (owned by a submodule
    without ``reset_parameters``)."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        if not callable(getattr(sub, "reset_parameters", None))
        for name, _ in sub.named_parameters(recurse=False)
    ]


def reinitialise_blocks(blocks: Sequence[tuple[str, nn.Module]], who: str) -> int:
    """:func:`reinitialise` every block of ``blocks``, refusing (naming ``who``) blocks with
    :func:`unresettable_parameters`; returns how many modules were reset."""
    kept = [
        f"{name}.{p}" if name else p
        for name, module in blocks
        for p in unresettable_parameters(module)
    ]
    if kept:
        raise ConfigError(
            f"{who} cannot re-initialise parameters whose modules have no reset_parameters: "
            + ", ".join(kept[:8])
            + (f", ... ({len(kept)} in all)" if len(kept) > 8 else "")
        )
    return sum(reinitialise(module) for _, module in blocks)
