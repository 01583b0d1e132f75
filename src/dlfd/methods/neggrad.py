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
from typing import Any, ClassVar

import torch
from torch import nn

from dlfd.losses import task_loss
from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.methods.common import Schedule, sgd_epochs
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class NeggradParams(SGDParams):
    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01}
    epochs: int = 1
    schedule: Schedule = "constant"


@register_method("neggrad", NeggradParams)
def run_neggrad(
    model: nn.Module, data: UnlearnData, params: NeggradParams, ctx: RunContext
) -> None:
    """Gradient ascent on the forget set's task loss."""

    def ascent(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -task_loss(net(inputs), labels, data.task)

    sgd_epochs(model, data.forget, params, ctx, ascent, "neggrad")
