"""``neggrad_plus``: descend the retain loss while ascending the forget loss, jointly.

Loss per step: ``task_loss(retain batch) - beta * task_loss(forget batch)``; the retain loader
drives the epoch and forget batches are cycled alongside (restarting, reshuffled, when they run
out). Paper: Kurmanji et al., "Towards Unbounded Machine Unlearning" (SCRUB, 2023), "NegGrad+".
Reference implementations: ``meghdadk/SCRUB`` ``train_negrad`` (loss
``alpha * CE_r - (1 - alpha) * CE_f``) and the MUFAC benchmark notebook's "Advanced NegGrad"
(``ndb796/MachineUnlearning``, loss ``CE_r - CE_f``).

Defaults follow the MUFAC "Advanced NegGrad" (the benchmark DLFD builds on): ``beta=1``,
2 epochs, plain SGD lr 0.001 (no momentum, no weight decay), constant learning rate. SCRUB's
notebooks use ``alpha=0.95``, 10 epochs, SGD lr 0.01: the same update as ``beta=0.05/0.95``
(about 0.053) with ``lr=0.0095``; they also add an L2 pull towards the original weights
(weight 5e-4/2 on the retain term), which is not reproduced here. Deviations: the MUFAC loop
skips a step whenever the forget and retain batches differ in size; here every retain batch
is used. The task loss replaces cross-entropy, so multilabel problems work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dlfd.config import setting
from dlfd.losses import task_loss
from dlfd.methods.base import WEIGHT, RunContext, SGDParams, UnlearnData
from dlfd.methods.common import Schedule, cycle, run_epochs, sgd
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class NeggradPlusParams(SGDParams):
    """``beta``: weight of the forget loss ascended."""

    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01}

    beta: float = setting(1.0, WEIGHT)
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: Schedule = "constant"


@register_method("neggrad_plus", NeggradPlusParams)
def run_neggrad_plus(
    model: nn.Module, data: UnlearnData, params: NeggradPlusParams, ctx: RunContext
) -> None:
    """Jointly descend the retain loss and ascend the forget loss (beta-weighted)."""
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    forget_batches = cycle(data.forget)

    def joint_loss(
        net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        forget_inputs, forget_labels = next(forget_batches)  # drawn before the retain forward
        retain_loss = task_loss(net(inputs), labels, data.task)
        forget_loss = task_loss(
            net(forget_inputs.to(ctx.device)), forget_labels.to(ctx.device), data.task
        )
        loss = retain_loss - params.beta * forget_loss
        return loss, {"retain_loss": retain_loss, "forget_loss": forget_loss}

    run_epochs(model, data.retain, optimizer, ctx, epochs=params.epochs, loss_fn=joint_loss,
               lr=params.lr, schedule=params.schedule, phase="neggrad_plus")  # fmt: skip
