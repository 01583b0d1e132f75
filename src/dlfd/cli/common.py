"""Options and helpers shared by several commands."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from dlfd.checkpoint import CheckpointMeta, read_meta, sidecar_path
from dlfd.cli.app import err
from dlfd.config import parse_overrides
from dlfd.data.records import ImageRecords
from dlfd.data.splits import apply_forget_request, read_forget_list
from dlfd.distributed import ENV_RANK, DistributedContext, distributed_from_env
from dlfd.errors import CheckpointError, ConfigError, DataError, SplitError
from dlfd.methods import get_method
from dlfd.outputs import claim_outputs, refuse_listed_outputs
from dlfd.runtime import SEED_MAX
from dlfd.scenarios import Scenario, get_scenario, scenario_options


def known_dataset(name: str | None) -> str | None:
    """``--dataset`` callback: an unknown scenario is refused while the command line is read,
    naming the known ones, before anything is printed or loaded."""
    if name is not None:
        scenario_options(name)  # raises ConfigError listing the registered scenarios
    return name


def known_method(key: str | None) -> str | None:
    """``--method`` callback: an unknown method key is refused while the command line is
    read, naming the known ones."""
    if key is not None:
        get_method(key)  # raises ConfigError listing the registered methods
    return key


def dataset_option(help_text: str) -> Any:
    """The ``--dataset/-d NAME`` option, checked while the command line is read."""
    return typer.Option("--dataset", "-d", metavar="NAME", callback=known_dataset, help=help_text)


DatasetOpt = Annotated[str, dataset_option("Scenario (see `dlfd datasets`).")]
RecordedDatasetOpt = Annotated[
    str | None, dataset_option("Scenario (default: the model's; see `dlfd datasets`).")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        metavar="PATH",
        help="Your copy of the dataset (folder, or CSV for 'csv').",
    ),
]


def split_seed_option(help_text: str) -> Any:
    """The ``--split-seed SEED`` option (0 to :data:`dlfd.runtime.SEED_MAX`)."""
    return typer.Option("--split-seed", min=0, max=SEED_MAX, metavar="SEED", help=help_text)


SplitSeedOpt = Annotated[int | None, split_seed_option("Seed of the split (default: --seed).")]
RecordedSplitSeedOpt = Annotated[
    int | None, split_seed_option("Seed of the split (default: the model's).")
]
DataSplitSeedOpt = Annotated[
    int,
    typer.Option("--split-seed", min=0, max=SEED_MAX, metavar="SEED", help="Seed of the split."),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--image-size", min=8, metavar="N", help="Square input size (default: scenario's)."
    ),
]
ForgetOpt = Annotated[
    Path | None,
    typer.Option(
        "--forget",
        metavar="FILE",
        help="File naming people or images to forget, one per line; "
        "replaces the scenario's forget set (the rest of train becomes retain).",
    ),
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-O",
        metavar="KEY=VALUE",
        help="Scenario option (see `dlfd datasets`); repeatable.",
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


def shell_word(path: Path | str) -> str:
    """``path`` quoted for a shell command line (as a hint to copy)."""
    return shlex.quote(str(path))


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
    try:
        return load_scenario(
            name,
            split_seed=split_seed if split_seed is not None else (meta.split_seed or 0),
            data_root=data_root or recorded_root,
            image_size=size[0] if size[0] == size[1] else None,
            forget=forget,
            options=option if option is not None or not same_scenario else recorded_options,
            forget_entries=list(meta.forget_keys or []) if use_recorded_forget else None,
        )
    except DataError as exc:
        if data_root is not None or recorded_root is None or isinstance(exc, SplitError):
            raise
        raise DataError(
            f"{exc} (the data folder {recorded_root} is the one {path} records; "
            "--data-root overrides it)"
        ) from None


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


def checkpoint_files(path: Path) -> list[Path]:
    """A checkpoint's two files: the weights and their JSON sidecar."""
    return [path, sidecar_path(path)]


def input_files(*paths: Path | None, checkpoints: Sequence[Path | None] = ()) -> list[Path]:
    """The files a command reads (given paths, and each checkpoint with its sidecar)."""
    found = [p for p in paths if p is not None]
    return found + [f for c in checkpoints if c is not None for f in checkpoint_files(c)]


@contextlib.contextmanager
def claimed(
    outputs: Sequence[Path], what: str, *, inputs: Sequence[Path] = (), force: bool = False
) -> Iterator[None]:
    """:func:`dlfd.outputs.claim_outputs` in the process that writes: every process of a plain
    run, rank 0 alone under torchrun (the other ranks write nothing)."""
    if int(os.environ.get(ENV_RANK, "0")) != 0:
        yield
        return
    with claim_outputs(outputs, what, inputs=inputs, force=force):
        yield


def refuse_data_outputs(outputs: Sequence[Path], what: str, scenario: Scenario) -> None:
    """Refuse outputs that are the scenario's own data: its data-root file (a CSV manifest) or
    a file it lists (an image), whatever ``--force`` says."""
    refuse_record_outputs(outputs, what, scenario.problem.records, scenario.data_root)


def refuse_record_outputs(
    outputs: Sequence[Path], what: str, records: ImageRecords, data_root: Path | None
) -> None:
    """:func:`refuse_data_outputs` for a data set's records and its data root."""
    root_file = data_root if data_root is not None and data_root.is_file() else None
    for path in outputs:
        if root_file is not None and path.exists() and os.path.samefile(path, root_file):
            raise ConfigError(f"{what} {path} is the data of this command ({root_file})")
    refuse_listed_outputs(
        outputs, what, records.root, lambda key: records.index_of(key) is not None
    )


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
