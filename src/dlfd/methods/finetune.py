"""``finetune``: a few epochs of the task loss on the retain set (catastrophic forgetting).

Reference: the DLFD repository's notebooks and the MUFAC benchmark notebooks. Defaults follow
the DLFD comparison: 2 epochs, SGD lr 0.001, momentum 0.9, weight decay 5e-4, cosine decay.
Deviation: the cosine schedule is stepped per epoch (the DLFD notebook steps a T_max=2
scheduler per batch, so its learning rate oscillates with a 4-batch period, a defect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.methods.common import sgd_epochs, task_loss_fn
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class FinetuneParams(SGDParams):
    """The shared SGD settings with their defaults."""

    test_settings: ClassVar[dict[str, Any]] = {"epochs": 2, "lr": 0.01}


@register_method("finetune", FinetuneParams)
def run_finetune(
    model: nn.Module, data: UnlearnData, params: FinetuneParams, ctx: RunContext
) -> None:
    """A few epochs of the task loss on retain."""
    sgd_epochs(model, data.retain, params, ctx, task_loss_fn(data.task))
