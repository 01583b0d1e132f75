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
from typing import Any, ClassVar

from torch import nn

from dlfd.config import setting
from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.methods.common import last_blocks, train_last_blocks
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class CfkParams(SGDParams):
    """``k``: blocks trained, counted from the output."""

    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01, "k": 1}

    k: int = setting(1, "[1, 1000]")
    weight_decay: float = 0.0
    frozen_train_mode: bool = False


@register_method("cf_k", CfkParams)
def run_cf_k(
    model: nn.Module, data: UnlearnData, params: CfkParams, ctx: RunContext
) -> dict[str, Any]:
    """Fine-tune only the last k blocks on retain."""
    blocks = last_blocks(model, params.k)
    mask = train_last_blocks(model, blocks, data, params, ctx, "cf_k")
    return {"trained_blocks": [name for name, _ in blocks], "trained_fraction": mask.fraction()}
