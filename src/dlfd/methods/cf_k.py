"""``cf_k``: catastrophic forgetting of the last k blocks: fine-tune only them on retain.

Paper: Goel et al., "Towards Adversarial Evaluation of Unlearning Algorithms" (CF-k), 2022.
Reference implementations: ``Dasol-Choi/DLFD`` ``unlearn/cfk.py`` (freezes the whole ResNet-18
backbone and fine-tunes the MLP head) and the MUFAC notebooks' "CF-3" (layer3, layer4 and fc).
Blocks are those of :func:`dlfd.methods.common.parameter_blocks`; for ``resnet18_mlp`` the MLP
head is one block, so the default ``k=1`` is the DLFD comparison (head only).

Defaults follow the DLFD comparison (``cfk.py`` as its notebooks call it): 2 epochs, SGD lr
0.001, momentum 0.9, no weight decay, cosine decay. Deviations: the cosine schedule is stepped
once per epoch (``cfk.py`` steps it per batch and again per epoch); and the frozen blocks run in
eval mode (``frozen_train_mode=False``), so their BatchNorm statistics stay those of the
original and nothing outside the last k blocks changes (``cfk.py`` trains with the whole model
in train mode, which moves the "frozen" backbone's BatchNorm statistics; set
``frozen_train_mode=true`` to reproduce that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from dlfd.config import setting
from dlfd.methods.base import (
    RunContext,
    SGDParams,
    UnlearnData,
)
from dlfd.methods.common import (
    ParamMask,
    last_blocks,
    plain_task_loss,
    run_epochs,
    sgd,
    train_only,
)
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class CfkParams(SGDParams):
    """The shared SGD settings and ranges, plus ``k`` (blocks trained, counted from the
    output) in [1, 1000] and ``frozen_train_mode``."""

    k: int = setting(1, "[1, 1000]")
    weight_decay: float = 0.0
    frozen_train_mode: bool = False


def train_last_blocks(
    model: nn.Module,
    blocks: list[tuple[str, nn.Module]],
    data: UnlearnData,
    params: CfkParams,
    ctx: RunContext,
    phase: str,
) -> ParamMask:
    """Train only ``blocks`` on retain (everything else frozen; frozen blocks in eval mode
    unless ``frozen_train_mode``); shared by ``cf_k`` and ``eu_k``."""
    modules = [module for _, module in blocks]
    mask = ParamMask.for_modules(model, modules)
    mask.apply()
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    loss_fn = plain_task_loss(data.task)
    if not params.frozen_train_mode:
        loss_fn = train_only(loss_fn, modules)
    run_epochs(
        model,
        data.retain,
        optimizer,
        ctx,
        epochs=params.epochs,
        loss_fn=loss_fn,
        lr=params.lr,
        schedule=params.schedule,
        phase=phase,
    )
    return mask


@register_method("cf_k", "fine-tune only the last k blocks on retain", CfkParams)
def run_cf_k(
    model: nn.Module, data: UnlearnData, params: CfkParams, ctx: RunContext
) -> dict[str, Any]:
    blocks = last_blocks(model, params.k)
    mask = train_last_blocks(model, blocks, data, params, ctx, "cf_k")
    return {"trained_blocks": [name for name, _ in blocks], "trained_fraction": mask.fraction()}
