"""``random_label``: train on the forget set relabelled at random (wrongly), and on retain.

Paper: Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the "RL" baseline of Fan et al.,
"SalUn" (ICLR 2024). Reference implementation: ``OPTML-Group/Unlearn-Saliency``
``Classification/unlearn/RL.py``, whose loop is followed: each epoch is one pass over the forget
set with fresh random labels, then one pass over the retain set with the true labels, SGD steps
on the task loss throughout; the state is offered for selection at the end of every epoch.

Defaults are that repository's (``arg_parser.py``): 10 epochs, SGD lr 0.01, momentum 0.9,
weight decay 5e-4, constant learning rate (its step decay at epochs 91 and 136 is never reached
in 10 epochs). Batch sizes are the loaders'. Deviations: random labels are drawn uniformly from
the *other* classes, never the true one (``RL.py`` draws from all classes, so about 1/C of the
"forgotten" labels are correct; amnesiac unlearning means wrong labels); for multilabel tasks a
random 0/1 vector with at least one label flipped. Labels are drawn from the run's generator, so
a seed fixes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dlfd.losses import task_loss
from dlfd.methods.base import (
    RunContext,
    SGDParams,
    UnlearnData,
)
from dlfd.methods.common import Schedule, random_wrong_labels, scheduled_lr, set_lr, sgd
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class RandomLabelParams(SGDParams):
    """The shared SGD settings and ranges, with 10 epochs at a constant lr 0.01."""

    epochs: int = 10
    lr: float = 0.01
    schedule: Schedule = "constant"


def relabel_epochs(
    model: nn.Module,
    data: UnlearnData,
    optimizer: torch.optim.Optimizer,
    ctx: RunContext,
    *,
    epochs: int,
    lr: float,
    schedule: Schedule,
    generator: torch.Generator,
    phase: str,
    after_step: Callable[[], None] | None = None,
) -> None:
    """``RL.py``'s loop: per epoch, a forget pass with random wrong labels, then a retain pass.

    ``after_step`` runs after every optimiser step (SalUn restores its masked weights there).
    """
    total = epochs * (len(data.forget) + len(data.retain))
    done = 0
    net = ctx.parallel(model)
    for epoch in range(epochs):
        set_lr(optimizer, scheduled_lr(lr, schedule, epoch, epochs))
        model.train()
        sums = {"forget": 0.0, "retain": 0.0}
        seen = {"forget": 0, "retain": 0}
        for part, loader in (("forget", data.forget), ("retain", data.retain)):
            for step, (inputs, labels) in enumerate(loader):
                inputs, labels = inputs.to(ctx.device), labels.to(ctx.device)
                logits = net(inputs)
                if part == "forget":
                    labels = random_wrong_labels(labels, logits.shape[1], data.task, generator)
                loss = task_loss(logits, labels, data.task)
                where = f"{phase} epoch {epoch + 1}, {part} batch {step + 1}"
                ctx.check_loss(loss, where=where)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if after_step is not None:
                    after_step()
                ctx.check_model(model, where=where)
                sums[part] += loss.item() * labels.shape[0]
                seen[part] += labels.shape[0]
                done += 1
                ctx.progress(done, total, phase)
        ctx.log(
            phase=phase,
            epoch=epoch + 1,
            forget_random_label_loss=sums["forget"] / max(seen["forget"], 1),
            retain_loss=sums["retain"] / max(seen["retain"], 1),
        )
        ctx.checkpoint(model, f"{phase} epoch {epoch + 1}")


@register_method(
    "random_label",
    "train on forget with random wrong labels, then on retain, each epoch (amnesiac)",
    RandomLabelParams,
)
def run_random_label(
    model: nn.Module, data: UnlearnData, params: RandomLabelParams, ctx: RunContext
) -> None:
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    relabel_epochs(
        model,
        data,
        optimizer,
        ctx,
        epochs=params.epochs,
        lr=params.lr,
        schedule=params.schedule,
        generator=ctx.generator("labels", per_rank=True),
        phase="random_label",
    )
