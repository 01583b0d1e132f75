"""``neggrad``: gradient ascent on the task loss of the forget set.

Paper: Golatkar et al., "Eternal Sunshine of the Spotless Net" (2020), used as the NegGrad
baseline by Goel et al. (2022) and Kurmanji et al. (SCRUB, 2023). Reference implementation:
``Dasol-Choi/DLFD`` ``unlearn/neg_grad.py`` (the MUFAC notebooks' NegGrad steps along with the
retain loader for 2 epochs at lr 0.001 without momentum instead).

Defaults follow the DLFD comparison: 1 epoch over ``forget_train``, SGD lr 0.001, momentum 0.9,
weight decay 5e-4, constant learning rate. The loss is unbounded below, so a run that drives
it to infinity stops with a NonFiniteUnlearningError rather than returning a broken model.
Deviation: none in the update itself; the task loss (``dlfd.losses.task_loss``) replaces
cross-entropy, so multilabel problems ascend the binary cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlfd.losses import task_loss
from dlfd.methods.base import (
    RunContext,
    SGDParams,
    UnlearnData,
)
from dlfd.methods.common import BatchLoss, Schedule, run_epochs, sgd
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class NeggradParams(SGDParams):
    """The shared SGD settings and ranges, with 1 epoch and a constant learning rate."""

    epochs: int = 1
    schedule: Schedule = "constant"


def ascent_loss(task: str) -> BatchLoss:
    """The minimised loss: minus the task loss of the forget batch."""

    def loss_fn(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -task_loss(model(inputs), labels, task)

    return loss_fn


@register_method("neggrad", "gradient ascent on the forget set's task loss", NeggradParams)
def run_neggrad(
    model: nn.Module, data: UnlearnData, params: NeggradParams, ctx: RunContext
) -> None:
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    run_epochs(
        model,
        data.forget,
        optimizer,
        ctx,
        epochs=params.epochs,
        loss_fn=ascent_loss(data.task),
        lr=params.lr,
        schedule=params.schedule,
        phase="neggrad",
    )
