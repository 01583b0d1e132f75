"""Train a scenario's original model (all of train) or retrained reference (retain only).

:func:`train_checkpoint` is what ``dlfd train`` runs: it builds the model from the recipe,
trains with progress reporting, saves a resume state after every epoch, and writes the final
checkpoint atomically. A finished checkpoint with the same configuration hash is reused.
Under ``torchrun`` it runs data-parallel (see :mod:`dlfd.distributed`): file checks and resume
states are read on rank 0 and broadcast, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from dlfd import __version__
from dlfd.checkpoint import CheckpointMeta, check_weights_path, read_meta, save_checkpoint
from dlfd.config import to_dict
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import ConfigError
from dlfd.io import sha256_bytes, sha256_file
from dlfd.models import create_model
from dlfd.runtime import derive_seed, seed_everything
from dlfd.training.loop import EpochStats, make_optimizer, train_epochs
from dlfd.training.recipe import TrainRecipe
from dlfd.training.resume import ResumePaths, load_resume_state, save_resume_state

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext
    from dlfd.scenarios.registry import Scenario

Role = Literal["original", "retrained"]
ROLES: dict[str, str] = {"original": "train", "retrained": "retain"}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_checkpoint` did."""

    path: Path
    meta: CheckpointMeta
    history: list[dict]
    reused: bool
    resumed_from_epoch: int
    seconds: float


class TrainProgress:
    """Hooks for progress display; the default does nothing (the CLI passes a rich one)."""

    def start(self, total_epochs: int, first_epoch: int, batches_per_epoch: int) -> None: ...
    def batch(self, done: int, total: int) -> None: ...
    def epoch(self, stats: EpochStats) -> None: ...
    def stop(self) -> None: ...


def training_config(scenario: Scenario, role: str, seed: int, recipe: TrainRecipe) -> dict:
    """Everything that determines a trained model; its hash keys caching and resuming."""
    return {
        "scenario": scenario.name,
        "role": role,
        "split_seed": scenario.problem.split_seed,
        "train_seed": seed,
        "train_split": ROLES[role],
        "forget_sha256": scenario.problem.forget_sha256,
        "data_sha256": scenario.problem.records.fingerprint,
        "scenario_options": dict(scenario.options),
        "input": scenario.input_spec.to_dict(),
        "recipe": to_dict(recipe),
        "dlfd_version": __version__,
    }


def config_hash(config: dict) -> str:
    return sha256_bytes(json.dumps(config, sort_keys=True).encode("utf-8"))


def train_checkpoint(
    scenario: Scenario,
    *,
    role: Role,
    out: str | Path,
    seed: int,
    device: torch.device,
    recipe: TrainRecipe | None = None,
    resume: bool = True,
    force: bool = False,
    progress: TrainProgress | None = None,
    resume_every_s: float = 30.0,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    dist: DistributedContext | None = None,
) -> TrainResult:
    """Train and save the ``role`` model of ``scenario`` to ``out`` (``*.safetensors``).

    A resume state is written after an epoch when ``resume_every_s`` seconds have passed since
    the last one (0: after every epoch), so short epochs are not slowed down by disk writes.

    With ``dist`` (every rank calls this with the same arguments; ``device`` is replaced by the
    rank's device) the recipe's batch size is the global batch, split evenly across ranks; the
    existing checkpoint and any resume state are read by rank 0 and broadcast; rank 0 alone
    writes; every rank returns the same result and holds the same weights.
    """
    if role not in ROLES:
        raise ConfigError(f"role must be one of {sorted(ROLES)}, got {role!r}")
    scenario.problem.check_trainable()  # a one-class task would train a one-output model
    out = check_weights_path(out)
    recipe = recipe or scenario.recipe
    config = training_config(scenario, role, seed, recipe)
    digest = config_hash(config)
    progress = progress or TrainProgress()
    started = time.perf_counter()
    main = dist is None or dist.is_main
    world_size = 1 if dist is None else dist.world_size
    if dist is not None:
        device = dist.device
        batch_size = dist.per_rank_batch(recipe.batch_size)
    else:
        batch_size = recipe.batch_size

    def finished() -> TrainResult | None:
        """The existing checkpoint if it is this very run, finished; None to train."""
        if not out.exists() or force:
            return None
        existing = read_meta(out)
        if existing.config_sha256 == digest and sha256_file(out) == existing.weights_sha256:
            ResumePaths.for_checkpoint(out).remove()  # left if killed just after the save
            return TrainResult(
                out,
                existing,
                list(existing.extra.get("history", [])),
                reused=True,
                resumed_from_epoch=existing.recipe.get("epochs", 0),
                seconds=0.0,
            )
        if existing.config_sha256 != digest:
            raise ConfigError(
                f"{out} exists and was trained with a different configuration; "
                f"use --force to overwrite it or choose another --out"
            )
        # same configuration but weights that do not match their sidecar: an overwrite of this
        # very run was killed between its two writes; train it again
        return None

    reused = finished() if dist is None else dist.on_main(finished)
    if reused is not None:
        return reused

    split = ROLES[role]
    seed_everything(derive_seed(seed, "init"))
    model = create_model(
        recipe.model, scenario.num_classes, in_channels=scenario.input_spec.channels
    ).to(device)
    optimizer = make_optimizer(model, recipe)
    loaders = ProblemLoaders(scenario.problem, scenario.input_spec, recipe.augment)
    loaders.cache.preload(scenario.problem.split(split))

    resume_paths = ResumePaths.for_checkpoint(out)

    def restore() -> tuple[int, list[dict]] | None:
        if resume:
            return load_resume_state(resume_paths, model, optimizer, config_sha256=digest)
        resume_paths.remove()
        return None

    restored = restore() if dist is None else dist.on_main(restore)
    first_epoch, history = restored if restored is not None else (0, [])
    if dist is not None and restored is not None:
        dist.broadcast_module(model)
        state = dist.broadcast_object(_cpu_state(optimizer.state_dict()) if main else None)
        if not main:
            optimizer.load_state_dict(state)
    net = model if dist is None else dist.wrap(model)

    def loader_for_epoch(epoch: int) -> torch.utils.data.DataLoader:
        return loaders.loader(
            split,
            batch_size=batch_size,
            train=True,
            seed=derive_seed(seed, "data", epoch),
            shard=None if dist is None else dist.shard,
        )

    batches = len(loader_for_epoch(first_epoch)) if first_epoch < recipe.epochs else 0
    progress.start(recipe.epochs, first_epoch, batches)
    last_saved = time.perf_counter()
    try:
        for stats in train_epochs(
            net,
            loader_for_epoch,
            optimizer,
            recipe,
            task=scenario.task,
            seed=seed,
            device=device,
            start_epoch=first_epoch,
            on_batch=progress.batch,
            dist=dist,
        ):
            history.append(
                {
                    "epoch": stats.epoch,
                    "loss": stats.loss,
                    "acc": stats.accuracy,
                    "lr": stats.lr,
                    "seconds": round(stats.seconds, 3),
                }
            )
            if (
                main
                and stats.epoch < recipe.epochs
                and time.perf_counter() - last_saved >= resume_every_s
            ):
                last_saved = time.perf_counter()
                save_resume_state(
                    resume_paths,
                    model,
                    optimizer,
                    epoch=stats.epoch,
                    config_sha256=digest,
                    history=history,
                )
            progress.epoch(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)
    finally:
        progress.stop()
    if dist is not None:
        dist.sync_buffers(model)  # BatchNorm statistics ran per rank: keep rank 0's

    meta = CheckpointMeta(
        arch=recipe.model,
        num_classes=scenario.num_classes,
        task=scenario.task,
        input_spec=scenario.input_spec,
        role=role,
        scenario=scenario.name,
        split_seed=scenario.problem.split_seed,
        train_seed=seed,
        forget_sha256=scenario.problem.forget_sha256,
        forget_keys=tuple(scenario.problem.forget_keys),
        data_sha256=scenario.problem.records.fingerprint,
        data_root=None if scenario.data_root is None else str(scenario.data_root),
        scenario_options=dict(scenario.options),
        config_sha256=digest,
        recipe=config["recipe"],
        extra={
            "train_split": split,
            "n_train": len(scenario.problem.split(split)),
            "history": history,
            "world_size": world_size,
        },
    )

    def write() -> CheckpointMeta:
        saved = save_checkpoint(model.eval(), out, meta)
        resume_paths.remove()
        return saved

    saved = write() if dist is None else dist.on_main(write)
    model.eval()
    return TrainResult(
        out,
        saved,
        history,
        reused=False,
        resumed_from_epoch=first_epoch,
        seconds=time.perf_counter() - started,
    )


def _cpu_state(state: dict) -> dict:
    """An optimizer state dict with its tensors on the CPU (to broadcast as an object)."""
    return {
        "param_groups": state["param_groups"],
        "state": {
            key: {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for key, s in state["state"].items()
        },
    }
