"""``ssd``: Selective Synaptic Dampening, no training.

Paper: Foster, Schoepf and Brintrup, "Fast Machine Unlearning Without Retraining Through
Selective Synaptic Dampening", AAAI 2024. Reference implementation:
``if-loops/selective-synaptic-dampening`` (``src/ssd.py::ParameterPerturber``,
``src/forget_random_strategies.py::ssd_tuning``). With the Fisher diagonals
(:func:`dlfd.methods.common.fisher_diagonal`) on the forget set, I_F, and on the training data,
I_D, every parameter element with I_F > alpha * I_D is multiplied by
beta = min(lam * I_D / I_F, 1); every other element stays bit-identical.

Defaults: alpha 10 and lam 1, the reference's settings for ResNet-18
(``forget_random_main.py``); its exponent and upper bound, both 1, are fixed.
``importance="full"`` computes I_D on retain and forget, as the reference does, weighting the
two loaders' importances by their batch counts (the reference's concatenated batches straddle
the two sets only once); ``importance="retain"`` uses retain alone.

Not in the DLFD paper's comparison (see docs/baselines.md). There is one state, so selection is
off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from dlfd.config import setting
from dlfd.methods.base import MethodParams, RunContext, UnlearnData
from dlfd.methods.common import fisher_diagonal
from dlfd.methods.registry import register_method

Importance = Literal["full", "retain"]


@dataclass(frozen=True)
class SsdParams(MethodParams):
    test_settings: ClassVar[dict[str, Any]] = {"alpha": 2.0}
    select: bool = False
    #: Selection weighting: dampen elements with forget importance > alpha * data importance.
    alpha: float = setting(10.0, "(0, 1000000]")
    #: Dampening constant: beta = min(lam * data importance / forget importance, 1).
    lam: float = setting(1.0, "(0, 1000000]")
    #: Data the reference importance is computed on: the full training set or retain only.
    importance: Importance = "full"


@torch.no_grad()
def dampen(
    model: nn.Module,
    forget_importance: dict[str, torch.Tensor],
    data_importance: dict[str, torch.Tensor],
    alpha: float,
    lam: float,
) -> int:
    """Multiply each selected element by its beta in place; returns how many were selected."""
    selected_count = 0
    for name, parameter in model.named_parameters():
        if name not in forget_importance:
            continue
        forget, data = forget_importance[name], data_importance[name]
        selected = forget > alpha * data
        if not bool(selected.any()):
            continue
        safe_forget = torch.where(selected, forget, torch.ones_like(forget))
        beta = (lam * data / safe_forget).clamp(max=1.0)
        parameter.copy_(torch.where(selected, parameter * beta, parameter))
        selected_count += int(selected.sum())
    return selected_count


@register_method("ssd", SsdParams)
def run_ssd(
    model: nn.Module, data: UnlearnData, params: SsdParams, ctx: RunContext
) -> dict[str, float]:
    """Dampen parameters far more important (Fisher) to forget than to retain; no training."""
    net = ctx.parallel(model)  # per-batch gradients averaged over ranks: the global batch's
    forget = fisher_diagonal(model, data.forget, data.task, ctx.device, forward=net)
    ctx.progress(1, 3, "forget importance")
    retain = fisher_diagonal(model, data.retain, data.task, ctx.device, forward=net)
    ctx.progress(2, 3, "retain importance")
    for name in forget:
        ctx.check_tensor(forget[name], what=f"the forget importance of {name}", where="start")
        ctx.check_tensor(retain[name], what=f"the retain importance of {name}", where="start")
    reference = retain
    if params.importance == "full":  # the per-batch mean over both loaders
        r_n, f_n = len(data.retain), len(data.forget)
        reference = {n: (retain[n] * r_n + forget[n] * f_n) / (r_n + f_n) for n in retain}
    selected = dampen(model, forget, reference, params.alpha, params.lam)
    ctx.progress(3, 3, "dampen")
    total = sum(p.numel() for p in forget.values())
    ctx.log(phase="dampen", selected=selected, fraction=selected / max(total, 1))
    ctx.checkpoint(model, "dampened")
    return {"dampened_elements": selected, "dampened_fraction": selected / max(total, 1)}
