"""Options and helpers shared by several commands."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from dlfd.checkpoint import sidecar_path
from dlfd.cli.app import err, styled
from dlfd.cli.progress import RichProgress
from dlfd.data.records import ImageRecords
from dlfd.distributed import ENV_RANK, DistributedContext, distributed_from_env
from dlfd.errors import ConfigError
from dlfd.methods import get_method
from dlfd.outputs import claim_outputs, refuse_listed_outputs
from dlfd.runs.scenario import ScenarioRequest, scenario_for_checkpoint
from dlfd.runtime import SEED_MAX, resolve_device
from dlfd.scenarios import Scenario, scenario_options


def opt(usage: str, help_text: str, **kwargs: Any) -> Any:
    """A typer option from its usage: ``"--out -o FILE"`` (its names, then its metavar if any)."""
    names = usage.split()
    if not names[-1].startswith("-"):
        kwargs["metavar"] = names.pop()
    return typer.Option(*names, help=help_text, **kwargs)


def checked(check: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """An option callback: the value is refused while the command line is read, before
    anything is printed or loaded (``check`` raises :class:`ConfigError` naming what is
    wrong, e.g. the registered scenarios or methods)."""

    def callback(value: str | None) -> str | None:
        if value is not None:
            check(value)
        return value

    return callback


known_dataset = checked(scenario_options)
known_method = checked(get_method)


def dataset_option(help_text: str) -> Any:
    return opt("--dataset -d NAME", help_text, callback=known_dataset)


def split_seed_option(help_text: str) -> Any:
    return opt("--split-seed SEED", help_text, min=0, max=SEED_MAX)


def seed_option(help_text: str) -> Any:
    return opt("--seed SEED", help_text, min=0, max=SEED_MAX)


DatasetOpt = Annotated[str, dataset_option("Scenario (see `dlfd datasets`).")]
RecordedDatasetOpt = Annotated[
    str | None, dataset_option("Scenario (default: the model's; see `dlfd datasets`).")
]
DataRootOpt = Annotated[
    Path | None, opt("--data-root PATH", "Your copy of the dataset (folder, or CSV for 'csv').")
]
SplitSeedOpt = Annotated[int | None, split_seed_option("Seed of the split (default: --seed).")]
RecordedSplitSeedOpt = Annotated[
    int | None, split_seed_option("Seed of the split (default: the model's).")
]
DataSplitSeedOpt = Annotated[int, split_seed_option("Seed of the split.")]
ImageSizeOpt = Annotated[
    int | None, opt("--image-size N", "Square input size (default: scenario's).", min=8)
]
ForgetOpt = Annotated[
    Path | None,
    opt(
        "--forget FILE",
        "File naming people or images to forget, one per line; "
        "replaces the scenario's forget set (the rest of train becomes retain).",
    ),
]
OptionOpt = Annotated[
    list[str] | None,
    opt("--option -O KEY=VALUE", "Scenario option (see `dlfd datasets`); repeatable."),
]
DeviceOpt = Annotated[str, opt("--device DEVICE", "cpu, cuda, cuda:N or auto.")]
LAMBDA = opt("--lambda WEIGHT", "NoMUS weight of test accuracy.", min=0.0, max=1.0)
QuietOpt = Annotated[bool, opt("--quiet -q", "No progress display.")]
AmpOpt = Annotated[
    bool,
    opt("--amp", "bfloat16 autocast (a GPU speed-up; weights and checkpoints stay float32)."),
]
ChannelsLastOpt = Annotated[
    bool, opt("--channels-last", "Channels-last convolution weights (a GPU speed-up).")
]
JsonForceOpt = Annotated[bool, opt("--force", "Replace a --json file that dlfd did not write.")]


def progress_bar(label: str, quiet: bool) -> contextlib.AbstractContextManager[RichProgress | None]:
    """A run's progress bar for a ``with`` block (None: ``--quiet``, or a quiet console)."""
    return contextlib.nullcontext() if quiet or err.quiet else RichProgress(err, label)


def run_headline(
    subject: str, what: str, device: torch.device, dist: DistributedContext | None, seed: int
) -> None:
    """The first line of a run: ``subject`` in bold, ``what`` it does, where, and its seed."""
    where = str(device)
    if dist is not None:
        where = f"{dist.world_size} processes ({dist.backend}, {dist.device.type})"
    err.print(styled((subject, "bold"), f"{what} {where}, seed {seed}"))


def shell_word(path: Path | str) -> str:
    """``path`` quoted for a shell command line (as a hint to copy)."""
    return shlex.quote(str(path))


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


@contextlib.contextmanager
def on_checkpoints(
    checkpoints: Sequence[Path | None],
    request: ScenarioRequest,
    outputs: Sequence[Path],
    what: str,
    *,
    device: str,
    force: bool,
) -> Iterator[tuple[Scenario, torch.device]]:
    """The start of the commands that read checkpoints (evaluate, audit, unlearn): ``outputs``
    claimed, the device resolved, and the scenario the first checkpoint records, overridden by
    the user's ``request``; outputs that are that scenario's data are refused."""
    inputs = input_files(request.forget, request.data_root, checkpoints=checkpoints)
    with claimed(outputs, what, inputs=inputs, force=force):
        torch_device = resolve_device(device)
        first = checkpoints[0]
        assert first is not None  # the model a command is about
        scenario = scenario_for_checkpoint(first, request)
        refuse_data_outputs(outputs, what, scenario.problem.records, scenario.data_root)
        yield scenario, torch_device


def refuse_data_outputs(
    outputs: Sequence[Path], what: str, records: ImageRecords, data_root: Path | None
) -> None:
    """Refuse outputs that are the data set's own data: its data-root file (a CSV manifest) or
    a file it lists (an image), whatever ``--force`` says."""
    root_file = data_root if data_root is not None and data_root.is_file() else None
    for path in outputs:
        if root_file is not None and path.exists() and os.path.samefile(path, root_file):
            raise ConfigError(f"{what} {path} is the data of this command ({root_file})")
    refuse_listed_outputs(
        outputs, what, records.root, lambda key: records.index_of(key) is not None
    )


@contextlib.contextmanager
def torchrun_context(device: torch.device) -> Iterator[DistributedContext | None]:
    """The data-parallel context of a torchrun worker (None in a plain run). Inside the block
    ranks other than 0 print nothing; an error that ends it is still printed by every rank."""
    with distributed_from_env(device) as dist:
        quiet = err.quiet
        err.quiet = quiet or (dist is not None and not dist.is_main)
        try:
            yield dist
        finally:
            err.quiet = quiet
