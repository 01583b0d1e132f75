"""Options and helpers shared by several commands."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
import typer

from dlfd.checkpoint import CheckpointMeta, check_weights_path, read_meta
from dlfd.cli.app import err
from dlfd.config import parse_overrides
from dlfd.data.splits import apply_forget_request, read_forget_list
from dlfd.distributed import DistributedContext, distributed_from_env
from dlfd.errors import CheckpointError, ConfigError
from dlfd.scenarios import Scenario, get_scenario

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Scenario name (see `dlfd datasets`).")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option("--data-root", help="Your copy of the dataset (folder, or CSV for 'csv')."),
]
SplitSeedOpt = Annotated[
    int | None,
    typer.Option("--split-seed", min=0, help="Seed of the split (default: --seed)."),
]
DataSplitSeedOpt = Annotated[int, typer.Option("--split-seed", min=0, help="Seed of the split.")]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option("--image-size", min=8, help="Square input size (default: scenario's)."),
]
ForgetOpt = Annotated[
    Path | None,
    typer.Option(
        "--forget",
        help="File naming people or images to forget, one per line; "
        "replaces the scenario's forget set (the rest of train becomes retain).",
    ),
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option("--option", "-O", help="Scenario option KEY=VALUE (see `dlfd datasets`)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


def load_scenario(
    dataset: str,
    *,
    split_seed: int,
    data_root: Path | None,
    image_size: int | None,
    forget: Path | None = None,
    options: list[str] | None = None,
    forget_entries: list[str] | None = None,
) -> Scenario:
    """Build the scenario; a forget request (``forget`` file or ``forget_entries``) replaces
    its forget set."""
    scenario = get_scenario(
        dataset,
        split_seed=split_seed,
        data_root=data_root,
        image_size=image_size,
        options=parse_overrides(options or []),
    )
    entries = read_forget_list(forget) if forget is not None else forget_entries
    if entries == scenario.problem.forget_keys:
        return scenario  # the recorded forget set is the scenario's own
    if entries:
        problem = apply_forget_request(scenario.problem, entries)
        scenario = dataclasses.replace(scenario, problem=problem)
    return scenario


def scenario_for_checkpoint(
    path: Path,
    *,
    dataset: str | None,
    split_seed: int | None,
    data_root: Path | None,
    forget: Path | None,
    option: list[str] | None,
) -> Scenario:
    """The scenario a checkpoint was made for, as recorded in its sidecar (name, options, split
    seed, data folder, forget set), with any of them overridden by the user's options."""
    meta = read_meta(path)
    name = dataset or meta.scenario
    if name is None:
        raise ConfigError(f"{path} does not record its scenario; pass --dataset")
    same_scenario = name == meta.scenario
    use_recorded_forget = same_scenario and forget is None and split_seed in (None, meta.split_seed)
    size = meta.input_spec.size
    recorded_root = Path(meta.data_root) if same_scenario and meta.data_root else None
    recorded_options = [f"{k}={v}" for k, v in meta.scenario_options.items()]
    return load_scenario(
        name,
        split_seed=split_seed if split_seed is not None else (meta.split_seed or 0),
        data_root=data_root or recorded_root,
        image_size=size[0] if size[0] == size[1] else None,
        forget=forget,
        options=option if option is not None or not same_scenario else recorded_options,
        forget_entries=list(meta.forget_keys or []) if use_recorded_forget else None,
    )


def refuse_unfit(meta: CheckpointMeta, path: Path, scenario: Scenario) -> None:
    """Refuse a checkpoint whose outputs do not fit the scenario (class count, task)."""
    if meta.num_classes != scenario.num_classes:
        raise CheckpointError(
            f"{path} predicts {meta.num_classes} classes but {scenario.name} "
            f"has {scenario.num_classes}"
        )
    if meta.task != scenario.task:
        raise CheckpointError(
            f"{path} is a {meta.task} model but {scenario.name} is {scenario.task}"
        )


def check_output_file(path: Path, what: str) -> Path:
    """Refuse, before any work, an output file that could not be written: a folder, or a place
    whose folder cannot be created or written. The folder is created."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path}: {folder} is a file, not a folder") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"{what} {path}: cannot create its folder ({reason})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {folder} is not writable")
    return path


def check_output_checkpoint(path: Path, what: str = "--out") -> Path:
    """:func:`check_output_file` for a checkpoint, whose name must end with .safetensors."""
    return check_output_file(check_weights_path(path), what)


@contextlib.contextmanager
def torchrun_context(device: torch.device) -> Iterator[DistributedContext | None]:
    """The data-parallel context of a torchrun worker (None in a plain run).

    Inside the block ranks other than 0 print nothing (rank 0 speaks for the job); an error
    that ends the block is still printed by every rank that raises it.
    """
    with distributed_from_env(device) as dist:
        quiet = err.quiet
        err.quiet = quiet or (dist is not None and not dist.is_main)
        try:
            yield dist
        finally:
            err.quiet = quiet
