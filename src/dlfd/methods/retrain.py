"""``retrain``: train from scratch on the retain set only (the gold standard of unlearning).

Reference: the DLFD paper's "Retrained" oracle (``last_100_*_retrained.pth`` in
``Dasol-Choi/DLFD``), trained on ``retain_train`` with the same recipe as the original. Every
parameter is re-initialised (each layer's ``reset_parameters``, from the run's seed, which
:func:`dlfd.unlearn` sets; BatchNorm statistics are reset too) and trained with SGD on retain.

Defaults: none of its own. Each hyperparameter left at ``None`` is taken from ``data.recipe``
(the original's :class:`~dlfd.training.recipe.TrainRecipe`: epochs, lr, momentum, weight decay,
schedule); without a recipe every one of them must be given, or a ConfigError names those
missing. Deviations from ``dlfd train --role retrained``: the batch size and augmentation are
those of the retain loader the caller passes (the recipe's are not re-applied here), and layers
are re-initialised with PyTorch's ``reset_parameters`` defaults, not an architecture's own
init scheme (e.g. the Kaiming-normal convolutions of ``create_model``'s networks). Parameters no
``reset_parameters`` covers are refused rather than silently kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    require,
)
from dlfd.methods.common import (
    Schedule,
    plain_task_loss,
    reinitialise,
    run_epochs,
    sgd,
    unresettable_parameters,
)
from dlfd.methods.registry import register_method

_FROM_RECIPE = ("epochs", "lr", "momentum", "weight_decay", "schedule")


@dataclass(frozen=True)
class RetrainParams(MethodParams):
    """``None``: take the value from the original's training recipe. Ranges as the shared SGD
    settings: ``epochs`` [1, 10000], ``lr`` (0, 10], ``momentum`` [0, 1), ``weight_decay``
    [0, 1]."""

    epochs: int | None = setting(None, EPOCHS)
    lr: float | None = setting(None, LR)
    momentum: float | None = setting(None, MOMENTUM)
    weight_decay: float | None = setting(None, WEIGHT_DECAY)
    schedule: Schedule | None = None

    def validate(self) -> None:
        require(
            {
                "schedule must be constant or cosine": self.schedule is None
                or self.schedule in ("constant", "cosine"),
            },
            self,
        )


def resolve_settings(params: RetrainParams, data: UnlearnData) -> tuple[dict[str, Any], list[str]]:
    """The training settings to use and the names of those taken from the recipe."""
    settings: dict[str, Any] = {}
    from_recipe: list[str] = []
    missing: list[str] = []
    for name in _FROM_RECIPE:
        value = getattr(params, name)
        if value is None and data.recipe is not None:
            value = getattr(data.recipe, name)
            from_recipe.append(name)
        if value is None:
            missing.append(name)
        settings[name] = value
    if missing:
        raise ConfigError(
            "retrain needs the original's training recipe or explicit settings; pass "
            + ", ".join(f"{name}=..." for name in missing)
            + " (or recipe=TrainRecipe(...))"
        )
    return settings, from_recipe


@register_method(
    "retrain", "train from scratch on retain only, with the original's recipe", RetrainParams
)
def run_retrain(
    model: nn.Module, data: UnlearnData, params: RetrainParams, ctx: RunContext
) -> dict[str, Any]:
    settings, from_recipe = resolve_settings(params, data)
    kept = unresettable_parameters(model)
    if kept:
        raise ConfigError(
            "retrain cannot re-initialise parameters whose modules have no reset_parameters: "
            + ", ".join(kept[:8])
            + (f", ... ({len(kept)} in all)" if len(kept) > 8 else "")
        )
    reinitialised = reinitialise(model)
    optimizer = sgd(
        model.parameters(), settings["lr"], settings["momentum"], settings["weight_decay"]
    )
    run_epochs(
        model,
        data.retain,
        optimizer,
        ctx,
        epochs=settings["epochs"],
        loss_fn=plain_task_loss(data.task),
        lr=settings["lr"],
        schedule=settings["schedule"],
        phase="retrain",
    )
    return {**settings, "from_recipe": from_recipe, "reinitialised_modules": reinitialised}
