"""Options and helpers shared by several commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from dlfd.data.splits import read_forget_list, resolve_forget_request
from dlfd.scenarios import Scenario, get_scenario

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Scenario name (see `dlfd datasets`).")
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option("--data-root", help="Your copy of the dataset (folder, or CSV for 'csv')."),
]
SplitSeedOpt = Annotated[
    int | None, typer.Option("--split-seed", help="Seed of the split (default: --seed).")
]
ImageSizeOpt = Annotated[
    int | None, typer.Option("--image-size", help="Square input size (default: scenario's).")
]
ForgetOpt = Annotated[
    Path | None,
    typer.Option(
        "--forget",
        help="File naming people or images to forget, one per line; "
        "replaces the scenario's forget set (the rest of train becomes retain).",
    ),
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
) -> Scenario:
    """Build the scenario, replacing its forget set by the request in ``forget`` if given."""
    scenario = get_scenario(
        dataset, split_seed=split_seed, data_root=data_root, image_size=image_size
    )
    if forget is not None:
        records = scenario.problem.records
        indices = resolve_forget_request(records, read_forget_list(forget))
        scenario = dataclasses.replace(scenario, problem=scenario.problem.with_forget(indices))
    return scenario
