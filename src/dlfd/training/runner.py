"""Train a scenario's original model (all of train) or retrained reference (retain only).

:func:`train_checkpoint` is what ``dlfd train`` runs: it builds the model from the recipe,
trains with progress reporting, saves a resume state after every epoch, and writes the final
checkpoint atomically. A finished checkpoint with the same configuration hash is reused.
Under ``torchrun`` it runs data-parallel (see :mod:`dlfd.distributed`): file checks and resume
states are read on rank 0 and broadcast, and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from dlfd import __version__
from dlfd.checkpoint import (
    CheckpointMeta,
    check_weights_path,
    load_checkpoint,
    load_state_into,
    read_meta,
    read_state_dict,
    save_checkpoint,
    sidecar_path,
)
from dlfd.config import to_dict
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.errors import ConfigError
from dlfd.io import sha256_bytes, sha256_file
from dlfd.models import create_model
from dlfd.models.user_factory import (
    FACTORY_PREFIX,
    build_user_model,
    canonical_arch,
    check_trusted,
    factory_sha256,
    is_user_arch,
)
from dlfd.recipe import TrainRecipe
from dlfd.runtime import Precision, contiguous, derive_seed, seed_everything
from dlfd.training.loop import EpochStats, ProgressFn, make_optimizer, train_epochs
from dlfd.training.resume import ResumePaths, load_resume_state, save_resume_state

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext
    from dlfd.scenarios.registry import Scenario

logger = logging.getLogger(__name__)

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


def no_progress(done: int, total: int, phase: str) -> None:
    """Show nothing."""


def training_config(
    scenario: Scenario, role: str, seed: int, recipe: TrainRecipe, init: dict | None = None
) -> dict:
    """Everything that determines a trained model; its hash keys caching and resuming.
    ``init`` (pretrained starting weights: their file and sha256) enters only when given, so
    the hashes of runs from scratch are what they always were."""
    return ({"init": init} if init else {}) | {
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


def scenario_provenance(scenario: Scenario) -> dict[str, Any]:
    """The :class:`CheckpointMeta` fields that say what a model of ``scenario`` is for: its
    outputs (classes, task), input, the scenario (name, options, data folder and fingerprint),
    the split seed and the forget set. ``dlfd train`` and ``dlfd import`` record the same."""
    problem = scenario.problem
    return {
        "num_classes": scenario.num_classes,
        "task": scenario.task,
        "input_spec": scenario.input_spec,
        "scenario": scenario.name,
        "split_seed": problem.split_seed,
        "forget_sha256": problem.forget_sha256,
        "forget_keys": tuple(problem.forget_keys),
        "data_sha256": problem.records.fingerprint,
        "data_root": None if scenario.data_root is None else str(scenario.data_root),
        "scenario_options": dict(scenario.options),
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
    progress: ProgressFn | None = None,
    resume_every_s: float = 30.0,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    dist: DistributedContext | None = None,
    init: str | Path | None = None,
    precision: Precision = Precision(),
) -> TrainResult:
    """Train and save the ``role`` model of ``scenario`` to ``out`` (``*.safetensors``).

    ``init``: start from pretrained weights instead of a random initialisation — a dlfd
    checkpoint (its architecture is used: e.g. one made by ``dlfd import``) or a state_dict
    file of the recipe's model (see :func:`~dlfd.checkpoint.read_state_dict`).

    A resume state is written after an epoch once ``resume_every_s`` seconds have passed since
    the last one (0: every epoch). With ``dist`` (every rank calls this alike) the recipe's
    batch size is the global batch and every rank returns the same result and weights.
    ``precision``: bfloat16 autocast and/or channels-last (part of the configuration when
    not the default float32).
    """
    if role not in ROLES:
        raise ConfigError(f"role must be one of {sorted(ROLES)}, got {role!r}")
    scenario.problem.check_trainable()  # a one-class task would train a one-output model
    out = check_weights_path(out)
    recipe = recipe or scenario.recipe
    if ":" in recipe.model and not recipe.model.startswith(FACTORY_PREFIX):  # user code
        recipe = dataclasses.replace(recipe, model=canonical_arch(recipe.model))
    start = None if init is None else _initial_weights(Path(init), scenario, recipe)
    factory = factory_sha256(recipe.model) if start is None else start.factory_sha256
    config = training_config(scenario, role, seed, recipe, None if start is None else start.record)
    if factory is not None:
        config["factory_sha256"] = factory  # the code of the architecture is part of the run
    if not precision.is_default:
        config["precision"] = precision.to_dict()  # it changes the numbers
    digest = config_hash(config)
    progress = progress or no_progress
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
        logger.warning(
            "%s does not match its sidecar (an interrupted write); training it again", out
        )
        return None

    reused = finished() if dist is None else dist.on_main(finished)
    if reused is not None:
        return reused

    split = ROLES[role]
    seed_everything(derive_seed(seed, "init"))
    if start is None:
        model = new_model(recipe.model, scenario).to(device)
    else:
        model = start.model.to(device).train()
    precision.prepare(model)
    optimizer = make_optimizer(model, recipe)
    loaders = ProblemLoaders(
        scenario.problem, scenario.input_spec, recipe.augment, device=batch_device(device)
    )
    loaders.cache.preload(scenario.problem.split(split))

    resume_paths = ResumePaths.for_checkpoint(out)

    def restore() -> tuple[int, list[dict]] | None:
        if resume:
            return load_resume_state(resume_paths, model, optimizer, config_sha256=digest)
        resume_paths.remove()
        return None

    restored = restore() if dist is None else dist.on_main(restore)
    first_epoch, history = restored if restored is not None else (0, [])
    if first_epoch:
        logger.debug("%s: resuming after epoch %d", out, first_epoch)
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
    phase = f"resumed after epoch {first_epoch}" if first_epoch else ""
    epoch_done = first_epoch

    def on_batch(done: int, total: int) -> None:
        if done < total:  # an epoch's end is reported with the epoch's statistics
            progress(epoch_done * total + done, recipe.epochs * total, phase)

    progress(first_epoch * batches, recipe.epochs * batches, phase)
    last_saved = time.perf_counter()
    with precision.autocast(device):
        for stats in train_epochs(
            net,
            loader_for_epoch,
            optimizer,
            recipe,
            task=scenario.task,
            seed=seed,
            device=device,
            start_epoch=first_epoch,
            on_batch=on_batch,
            dist=dist,
        ):
            seconds = round(stats.seconds, 3)
            history.append(dict(epoch=stats.epoch, loss=stats.loss, acc=stats.accuracy, lr=stats.lr,
                                seconds=seconds))  # fmt: skip
            if (
                main
                and stats.epoch < recipe.epochs
                and time.perf_counter() - last_saved >= resume_every_s
            ):
                last_saved = time.perf_counter()
                save_resume_state(resume_paths, model, optimizer, epoch=stats.epoch,
                                  config_sha256=digest, history=history)  # fmt: skip
            epoch_done, phase = stats.epoch, f"epoch {stats.epoch}: loss {stats.loss:.3f} "
            phase += f"acc {stats.accuracy:.3f} lr {stats.lr:.2g}"
            progress(epoch_done * batches, recipe.epochs * batches, phase)
            if on_epoch_end is not None:
                on_epoch_end(stats)
    contiguous(model)
    if dist is not None:
        dist.sync_buffers(model)  # BatchNorm statistics ran per rank: keep rank 0's

    meta = CheckpointMeta(
        arch=recipe.model if start is None else start.arch,
        factory_sha256=factory,
        role=role,
        train_seed=seed,
        **scenario_provenance(scenario),
        config_sha256=digest,
        recipe=config["recipe"],
        extra={
            "train_split": split,
            "n_train": len(scenario.problem.split(split)),
            "history": history,
            "world_size": world_size,
        }
        | ({} if start is None else {"init": start.record})
        | ({} if precision.is_default else {"precision": precision.to_dict()}),
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


def new_model(arch: str, scenario: Scenario) -> torch.nn.Module:
    """A freshly initialised ``arch`` for ``scenario``: a registered name, or a user's factory
    (``FILE.py:FUNCTION``, ``timm:NAME``...; a factory file must be on the trust list, i.e.
    imported once with ``dlfd import``, and unchanged since)."""
    if not is_user_arch(arch):
        return create_model(arch, scenario.num_classes, in_channels=scenario.input_spec.channels)
    digest = factory_sha256(arch)
    check_trusted(arch, digest, f"model {arch}")
    return build_user_model(arch, scenario.num_classes, source_sha256=digest)


@dataclass(frozen=True)
class _Start:
    """Pretrained starting weights: the model holding them, what to record."""

    model: torch.nn.Module
    arch: str
    factory_sha256: str | None
    record: dict[str, str]


def _initial_weights(path: Path, scenario: Scenario, recipe: TrainRecipe) -> _Start:
    """The model ``--init`` names, checked to fit the scenario's outputs and input."""
    if not path.is_file():
        raise ConfigError(f"--init {path} is not a file")
    record = {"path": str(path), "sha256": sha256_file(path)}
    if sidecar_path(path).exists():
        model, meta = load_checkpoint(path)
        if meta.num_classes != scenario.num_classes or meta.task != scenario.task:
            raise ConfigError(
                f"--init {path} has {meta.num_classes} {meta.task} outputs; the scenario "
                f"needs {scenario.num_classes} {scenario.task} outputs"
            )
        if meta.input_spec != scenario.input_spec:
            raise ConfigError(
                f"--init {path} expects inputs {meta.input_spec.to_dict()}, the scenario gives "
                f"{scenario.input_spec.to_dict()} (set --image-size)"
            )
        return _Start(model, meta.arch, meta.factory_sha256, record)
    model = new_model(recipe.model, scenario)
    load_state_into(model, read_state_dict(path), str(path))
    return _Start(model, recipe.model, factory_sha256(recipe.model), record)


def _cpu_state(state: dict) -> dict:
    """An optimizer state dict with its tensors on the CPU (to broadcast as an object)."""
    return {
        "param_groups": state["param_groups"],
        "state": {
            key: {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for key, s in state["state"].items()
        },
    }
