"""Options and helpers shared by several commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from dlfd.config import parse_overrides
from dlfd.data.splits import apply_forget_request, read_forget_list
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
