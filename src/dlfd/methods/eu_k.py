"""``eu_k``: exact unlearning of the last k blocks: re-initialise them and train them on retain.

Paper: Goel et al., "Towards Adversarial Evaluation of Unlearning Algorithms" (EU-k), 2022:
the last k layers are reset to a fresh initialisation and retrained on the retain set with the
rest frozen, so whatever those layers held about the forget set is gone. Reference
implementations: ``meghdadk/SCRUB`` (its EU-k copies layer4 from the initial checkpoint and
retrains it) and ``Dasol-Choi/DLFD`` ``unlearn/euk.py``. Blocks, defaults (``k=1``: the
``resnet18_mlp`` head, the part ``euk.py`` means to train) and ``frozen_train_mode`` are
:mod:`dlfd.methods.cf_k`'s; SCRUB instead trains EU-k for the original's full epoch budget at
lr 0.01 (pass ``epochs``/``lr``).

Deviations from ``euk.py``, which re-initialises nothing and unfreezes only parameters named
``linear``/``bn2``/``final``/``dropout`` (in DLFD's model: the backbone's ``bn2`` affine
parameters, not the head): here the last k blocks really are re-initialised (each layer's
``reset_parameters``, from the run's seed, BatchNorm statistics included) and trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dlfd.methods.base import RunContext, UnlearnData
from dlfd.methods.cf_k import CfkParams
from dlfd.methods.common import last_blocks, reinitialise_blocks, train_last_blocks
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class EukParams(CfkParams):
    """CF-k's settings."""

    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01, "k": 2}


@register_method("eu_k", EukParams)
def run_eu_k(
    model: nn.Module, data: UnlearnData, params: EukParams, ctx: RunContext
) -> dict[str, Any]:
    """Re-initialise the last k blocks and train only them on retain."""
    blocks = last_blocks(model, params.k)
    reinitialised = reinitialise_blocks(blocks, "eu_k")
    mask = train_last_blocks(model, blocks, data, params, ctx, "eu_k")
    return {
        "trained_blocks": [name for name, _ in blocks],
        "reinitialised_modules": reinitialised,
        "trained_fraction": mask.fraction(),
    }
