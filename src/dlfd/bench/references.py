"""The original model and the retrained reference of each seed, trained once and cached.

A trained checkpoint lives in the cache (``$DLFD_CACHE_DIR/references``, or ``--cache-dir``)
under a name that holds the hash of everything that determines it (scenario and its options,
data fingerprint, split seed and forget set, training seed, input format, recipe, dlfd
version: :func:`dlfd.training.runner.training_config`). Any benchmark that needs the same
model reuses it; an interrupted training resumes from its last saved epoch. A lock file keeps
two processes from training the same model at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from dlfd.checkpoint import CheckpointMeta, read_meta, sidecar_path
from dlfd.data.hash_cache import cache_dir as default_cache_dir
from dlfd.io import atomic_open, file_lock
from dlfd.scenarios import Scenario
from dlfd.training import TrainProgress, train_checkpoint
from dlfd.training.recipe import TrainRecipe
from dlfd.training.runner import config_hash, training_config

#: Bench row name -> training role of the checkpoint behind it.
ROLE_OF_ROW = {"original": "original", "retrain": "retrained"}


@dataclass(frozen=True)
class Reference:
    """A trained checkpoint of one seed: where it is, its sidecar, whether it was trained
    now (False: reused from the cache) and, if so, after which epoch an interrupted training
    was resumed (0: trained from the start)."""

    path: Path
    meta: CheckpointMeta
    trained_now: bool
    resumed_from_epoch: int = 0

    @property
    def training_s(self) -> float:
        """Seconds its training took (the sum over its epochs, as recorded when trained)."""
        return float(sum(h.get("seconds", 0.0) for h in self.meta.extra.get("history", [])))


def references_dir(cache_dir: Path | None) -> Path:
    return (cache_dir or default_cache_dir()) / "references"


def reference_path(
    cache_dir: Path | None, scenario: Scenario, role: str, seed: int, recipe: TrainRecipe
) -> Path:
    """Cache location of the ``role`` checkpoint: named by its configuration hash."""
    digest = config_hash(training_config(scenario, role, seed, recipe))
    return references_dir(cache_dir) / f"{scenario.name}-{role}-{digest[:24]}.safetensors"


def ensure_reference(
    scenario: Scenario,
    *,
    role: str,
    seed: int,
    recipe: TrainRecipe,
    device: torch.device,
    cache_dir: Path | None = None,
    progress: TrainProgress | None = None,
) -> Reference:
    """The cached ``role`` checkpoint of ``scenario`` for ``seed``, trained if missing."""
    path = reference_path(cache_dir, scenario, role, seed, recipe)
    with file_lock(path.with_suffix(".lock")):
        result = train_checkpoint(
            scenario,
            role=role,  # type: ignore[arg-type]
            out=path,
            seed=seed,
            device=device,
            recipe=recipe,
            resume=True,
            progress=progress,
        )
    return Reference(
        path,
        result.meta,
        trained_now=not result.reused,
        resumed_from_epoch=result.resumed_from_epoch,
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s content, atomically: a hard link when the two are on one
    file system, a copy otherwise."""
    if _same_file(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with atomic_open(dst) as out, open(src, "rb") as source:
            shutil.copyfileobj(source, out)


def place_checkpoint(src: Path, dst: Path) -> CheckpointMeta:
    """Put checkpoint ``src`` at ``dst`` (sidecar first, then weights, as
    :func:`dlfd.checkpoint.save_checkpoint` writes them) without copying when possible."""
    _link_or_copy(sidecar_path(src), sidecar_path(dst))
    _link_or_copy(src, dst)
    return read_meta(dst)
