"""Trained models cached by configuration: the benchmark's references, the audit's shadows.

A checkpoint's file name holds the hash of everything that determines it
(:func:`dlfd.training.runner.training_config`), so any run that needs the same model reuses it;
an interrupted training resumes from its last saved epoch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from dlfd.checkpoint import CheckpointMeta
from dlfd.io import file_lock
from dlfd.recipe import TrainRecipe
from dlfd.scenarios import Scenario
from dlfd.training import train_checkpoint
from dlfd.training.runner import ProgressFn, config_hash, training_config


@dataclass(frozen=True)
class TrainedModel:
    """A trained checkpoint of one seed: whether it was trained now (False: reused) and after
    which epoch an interrupted training was resumed (0: trained from the start)."""

    path: Path
    meta: CheckpointMeta
    trained_now: bool
    resumed_from_epoch: int = 0

    @property
    def training_s(self) -> float:
        """Seconds its training took (the sum over its recorded epochs)."""
        return float(sum(h.get("seconds", 0.0) for h in self.meta.extra.get("history", [])))


@dataclass(frozen=True)
class ModelCache:
    """A folder of trained models. ``name`` formats a model's file name (without the suffix)
    from ``scenario``, ``role``, ``seed`` and ``digest`` (the configuration hash); the names are
    the cache keys, so a layout, once used, must not change. With ``lock``, a lock file next to
    the model keeps two processes from training it at once."""

    folder: Path
    name: str
    lock: bool = True

    def path(self, scenario: Scenario, role: str, seed: int, recipe: TrainRecipe) -> Path:
        digest = config_hash(training_config(scenario, role, seed, recipe))
        stem = self.name.format(scenario=scenario.name, role=role, seed=seed, digest=digest)
        return self.folder / f"{stem}.safetensors"

    def get(
        self,
        scenario: Scenario,
        *,
        role: str,
        seed: int,
        recipe: TrainRecipe,
        device: torch.device,
        progress: ProgressFn | None = None,
    ) -> TrainedModel:
        """The cached ``role`` model of ``scenario`` for ``seed``, trained if missing."""
        path = self.path(scenario, role, seed, recipe)
        with file_lock(path.with_suffix(".lock")) if self.lock else contextlib.nullcontext():
            kw = {"role": role, "seed": seed, "device": device, "recipe": recipe}
            result = train_checkpoint(scenario, out=path, progress=progress, **kw)
        return TrainedModel(
            path, result.meta, not result.reused, resumed_from_epoch=result.resumed_from_epoch
        )
