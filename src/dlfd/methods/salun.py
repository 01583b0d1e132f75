"""``salun``: saliency unlearning: random-label unlearning restricted to salient weights.

Paper: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation" (ICLR 2024). Reference implementation:
``OPTML-Group/Unlearn-Saliency`` (``Classification/generate_mask.py`` and ``unlearn/RL.py``).

1. Saliency: the gradient of the forget set's task loss, summed over forget batches with the
   model in eval mode, taken in absolute value; over all parameter elements together, the
   top ``1 - sparsity`` fraction by magnitude is salient (``generate_mask.py``'s
   ``with_0.5.pt``, the mask its README uses, keeps the top 50%: ``sparsity=0.5``).
2. Unlearning: the random-label loop of :mod:`dlfd.methods.random_label` (a forget pass with
   random wrong labels, then a retain pass, per epoch), where only salient elements may change:
   non-salient ones are put back after every optimiser step
   (:class:`~dlfd.methods.common.ParamMask`), so neither momentum nor weight decay moves them.

Defaults: ``sparsity=0.5``, 10 epochs, SGD lr 0.013, momentum 0.9, weight decay 5e-4, constant
learning rate (the README's SalUn example on CIFAR-10 and ``arg_parser.py``'s defaults).
Deviations: random labels are never the true label (see :mod:`dlfd.methods.random_label`);
ties in saliency are broken by parameter order, so exactly ``round(N * (1 - sparsity))``
elements (at least one) are salient. BatchNorm running statistics are buffers, not weights,
and update everywhere in train mode, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import (
    RunContext,
    SGDParams,
    UnlearnData,
)
from dlfd.methods.common import ParamMask, Schedule, sgd
from dlfd.methods.random_label import relabel_epochs
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class SalunParams(SGDParams):
    """The shared SGD settings and ranges, plus ``sparsity`` (the fraction of parameter
    elements that are not salient) in [0, 1)."""

    sparsity: float = setting(0.5, "[0, 1)")
    epochs: int = 10
    lr: float = 0.013
    schedule: Schedule = "constant"


def saliency_mask(
    model: nn.Module,
    loader: DataLoader,
    task: str,
    device: torch.device,
    sparsity: float,
    ctx: RunContext | None = None,
) -> dict[str, torch.Tensor]:
    """Boolean masks of the salient elements: the top ``1 - sparsity`` fraction of all
    parameter elements by the magnitude of the forget loss's gradient (eval mode).

    In a distributed run (``ctx.dist``) the gradients are summed over every rank's batches
    (each step's gradient averaged across ranks), so every rank gets the same masks.
    """
    parameters = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    net = model if ctx is None else ctx.parallel(model)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    batches = 0
    try:
        for inputs, labels in loader:
            loss = task_loss(net(inputs.to(device)), labels.to(device), task)
            if ctx is not None:
                ctx.check_loss(loss, where=f"saliency, forget batch {batches + 1}")
            loss.backward()
            batches += 1
        if batches == 0:
            raise ConfigError("cannot compute weight saliency from an empty forget loader")
        magnitudes = [
            torch.zeros_like(p) if p.grad is None else p.grad.detach().abs() for _, p in parameters
        ]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    flat = torch.cat([m.flatten() for m in magnitudes])
    kept = max(1, round(flat.numel() * (1.0 - sparsity)))
    order = torch.sort(flat, descending=True, stable=True).indices
    salient = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    salient[order[:kept]] = True
    masks, start = {}, 0
    for (name, p), m in zip(parameters, magnitudes, strict=True):
        masks[name] = salient[start : start + m.numel()].view_as(p)
        start += m.numel()
    return masks


@register_method(
    "salun",
    "random-label unlearning restricted to the weights most salient for the forget loss",
    SalunParams,
)
def run_salun(
    model: nn.Module, data: UnlearnData, params: SalunParams, ctx: RunContext
) -> dict[str, Any]:
    masks = saliency_mask(model, data.forget, data.task, ctx.device, params.sparsity, ctx)
    mask = ParamMask(model, masks)
    mask.apply()
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
        phase="salun",
        after_step=mask.restore,
    )
    return {"salient_fraction": mask.fraction()}
