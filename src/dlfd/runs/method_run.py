"""A registered method run on a scenario's checkpoint, shared by ``dlfd unlearn`` and ``dlfd
bench`` so every method runs under the same rules (same loaders, batch size, selection split)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.checkpoint import CheckpointMeta, save_checkpoint
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.methods.api import unlearn
from dlfd.methods.base import ProgressFn, UnlearnResult
from dlfd.recipe import TrainRecipe
from dlfd.runtime import Precision, derive_seed
from dlfd.scenarios import Scenario

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext


@dataclasses.dataclass(frozen=True)
class MethodLoaders:
    """The loaders a method receives: retain (shuffled, augmented as in training), forget
    (shuffled, not augmented), validation (people never trained on; None without a val split)."""

    retain: DataLoader
    forget: DataLoader
    val: DataLoader | None


def method_loaders(
    scenario: Scenario,
    *,
    batch_size: int,
    seed: int,
    recipe: TrainRecipe | None = None,
    dist: DistributedContext | None = None,
    device: torch.device | None = None,
) -> MethodLoaders:
    """Loaders over ``scenario``'s retain, forget and val splits for one unlearning run (with
    ``dist``, this rank's shards: ``batch_size`` is the global batch, split evenly)."""
    recipe = recipe or scenario.recipe
    shard = None
    if dist is not None:
        batch_size = dist.per_rank_batch(batch_size)
        shard = dist.shard
    spec = scenario.input_spec
    on = None if device is None else batch_device(device)
    augmented = ProblemLoaders(scenario.problem, spec, recipe.augment, device=on)
    plain = ProblemLoaders(scenario.problem, spec, None, device=on)
    plain.cache = augmented.cache  # decode every image once
    has_val = len(scenario.problem.split("val")) > 0

    def loader(split: str, source: ProblemLoaders, **kw: Any) -> DataLoader:
        return source.loader(split, batch_size=batch_size, shard=shard, **kw)

    return MethodLoaders(
        retain=loader("retain", augmented, train=True, seed=derive_seed(seed, "retain")),
        forget=loader(
            "forget", plain, train=True, seed=derive_seed(seed, "forget"), drop_last=False
        ),
        val=loader("val", plain) if has_val else None,
    )


def unlearn_on_scenario(
    model: nn.Module,
    scenario: Scenario,
    method: str,
    *,
    seed: int,
    device: torch.device,
    hparams: dict[str, Any] | None = None,
    batch_size: int | None = None,
    recipe: TrainRecipe | None = None,
    on_progress: ProgressFn | None = None,
    dist: DistributedContext | None = None,
    precision: Precision = Precision(),
) -> UnlearnResult:
    """Run ``method`` on ``model`` (the scenario's original) with the scenario's loaders and
    pixel bounds (so perturbation methods stay within valid images); ``recipe`` (the
    original's) supplies defaults. With ``dist`` every rank calls this."""
    recipe = recipe or scenario.recipe
    batch_size = batch_size or recipe.batch_size
    loaders = method_loaders(
        scenario,
        batch_size=batch_size,
        seed=seed,
        recipe=recipe,
        dist=dist,
        device=device if dist is None else dist.device,
    )
    return unlearn(
        model,
        loaders.retain,
        loaders.forget,
        loaders.val,
        method=method,
        task=scenario.task,  # type: ignore[arg-type]
        device=device,
        seed=seed,
        input_bounds=scenario.input_spec.input_bounds(torch.zeros(1)),
        recipe=recipe,
        on_progress=on_progress,
        dist=dist,
        precision=precision,
        **(hparams or {}),
    )


def save_unlearned(
    result: UnlearnResult, out: str | Path, original: CheckpointMeta, *, source: str
) -> CheckpointMeta:
    """Write the unlearned model with the original's provenance plus what was done to it."""
    meta = dataclasses.replace(
        original,
        role="unlearned",
        config_sha256=None,
        extra={
            "method": result.to_dict(),
            "selection": dict(result.selection),
            "original": source,
            "original_sha256": original.weights_sha256,
        },
    )
    return save_checkpoint(result.model, out, meta)
