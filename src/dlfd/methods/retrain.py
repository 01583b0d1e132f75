"""``retrain``: train from scratch on the retain set only (the gold standard of unlearning).

Reference: the DLFD paper's "Retrained" oracle (``last_100_*_retrained.pth`` in
``Dasol-Choi/DLFD``), trained on ``retain_train`` with the same recipe as the original. Every
parameter is re-initialised (each layer's ``reset_parameters``, from the run's seed, which
:func:`dlfd.methods.unlearn` sets; BatchNorm statistics are reset too; then each model's own
``init_weights()`` scheme where it defines one) and trained with SGD on retain.

Defaults: none of its own. Each hyperparameter left at ``None`` is taken from ``data.recipe``
(the original's :class:`~dlfd.recipe.TrainRecipe`: epochs, lr, momentum, weight decay,
schedule); without a recipe every one of them must be given, or a ConfigError names those
missing. Deviations from ``dlfd train --role retrained``: the batch size and augmentation are
those of the retain loader the caller passes (the recipe's are not re-applied here); a model
without ``init_weights()`` keeps PyTorch's ``reset_parameters`` defaults. Parameters no
``reset_parameters`` covers are refused rather than silently kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.methods.base import (
    EPOCHS,
    LR,
    MOMENTUM,
    WEIGHT_DECAY,
    MethodParams,
    RunContext,
    UnlearnData,
)
from dlfd.methods.common import Schedule, reinitialise_blocks, sgd_epochs, task_loss_fn
from dlfd.methods.registry import register_method

_FROM_RECIPE = ("epochs", "lr", "momentum", "weight_decay", "schedule")


@dataclass(frozen=True)
class RetrainParams(MethodParams):
    """``None``: take the value from the original's training recipe."""

    test_settings: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "schedule": "cosine",
    }

    epochs: int | None = setting(None, EPOCHS)
    lr: float | None = setting(None, LR)
    momentum: float | None = setting(None, MOMENTUM)
    weight_decay: float | None = setting(None, WEIGHT_DECAY)
    schedule: Schedule | None = None


def resolve_settings(params: RetrainParams, data: UnlearnData) -> tuple[dict[str, Any], list[str]]:
    from_recipe = [n for n in _FROM_RECIPE if getattr(params, n) is None and data.recipe]
    settings = {n: getattr(data.recipe if n in from_recipe else params, n) for n in _FROM_RECIPE}
    missing = [name for name, value in settings.items() if value is None]
    if missing:
        raise ConfigError(
            "retrain needs the original's training recipe or explicit settings; pass "
            + ", ".join(f"{name}=..." for name in missing)
            + " (or recipe=TrainRecipe(...))"
        )
    return settings, from_recipe


@register_method("retrain", RetrainParams)
def run_retrain(
    model: nn.Module, data: UnlearnData, params: RetrainParams, ctx: RunContext
) -> dict[str, Any]:
    """Train from scratch on retain only, with the original's recipe."""
    settings, from_recipe = resolve_settings(params, data)
    reinitialised = reinitialise_blocks([("", model)], "retrain")
    resolved = dataclasses.replace(params, **settings)
    sgd_epochs(model, data.retain, resolved, ctx, task_loss_fn(data.task), "retrain")
    return {**settings, "from_recipe": from_recipe, "reinitialised_modules": reinitialised}
