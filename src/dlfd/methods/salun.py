"""``salun``: saliency unlearning: random-label unlearning restricted to salient weights.

Paper: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation" (ICLR 2024). Reference implementation:
``OPTML-Group/Unlearn-Saliency`` (``Classification/generate_mask.py`` and ``unlearn/RL.py``).

1. Saliency: |gradient of the forget loss| (summed over forget batches, eval mode); the top
   ``1 - sparsity`` fraction of all elements is salient (``generate_mask.py``'s ``with_0.5.pt``,
   the mask its README uses: ``sparsity=0.5``).
2. Unlearning: ``random_label``'s loop, where non-salient elements are put back after every
   step (:class:`~dlfd.methods.common.ParamMask`), so neither momentum nor weight decay moves
   them.

Defaults: ``sparsity=0.5``, 10 epochs, SGD lr 0.013, momentum 0.9, weight decay 5e-4, constant
learning rate (the README's SalUn example on CIFAR-10 and ``arg_parser.py``'s defaults).
Deviations: random labels are never the true label (see :mod:`dlfd.methods.random_label`);
saliency ties are broken by parameter order, so exactly ``round(N * (1 - sparsity))`` elements
(at least one) are salient. BatchNorm statistics update everywhere, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.methods.common import ParamMask, Schedule, relabel_epochs
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class SalunParams(SGDParams):
    """``sparsity``: the fraction of parameter elements that are not salient."""

    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01}

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
    """Boolean masks of the top ``1 - sparsity`` fraction of all parameter elements by the
    magnitude of the forget loss's gradient (eval mode; the same on every rank)."""
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
    chunks = salient.split([m.numel() for m in magnitudes])
    return {name: c.view_as(p) for (name, p), c in zip(parameters, chunks, strict=True)}


@register_method("salun", SalunParams)
def run_salun(
    model: nn.Module, data: UnlearnData, params: SalunParams, ctx: RunContext
) -> dict[str, Any]:
    """Random-label unlearning restricted to the weights most salient for the forget loss."""
    masks = saliency_mask(model, data.forget, data.task, ctx.device, params.sparsity, ctx)
    mask = ParamMask(model, masks)
    mask.apply()
    relabel_epochs(model, data, params, ctx, phase="salun", after_step=mask.restore)
    return {"salient_fraction": mask.fraction()}
