"""``dlfd datasets``, ``dlfd models`` and ``dlfd data info``: what is available, and split sizes."""

from __future__ import annotations

from rich.table import Table

from dlfd.cli import common
from dlfd.cli.app import DlfdTyper, app, out
from dlfd.models import list_models
from dlfd.runs.scenario import ScenarioRequest
from dlfd.scenarios import list_scenarios, scenario_options

MAX_CLASS_COLUMNS = 8
MAX_NAMED_PEOPLE = 12
data_app = DlfdTyper(help="Inspect datasets and their unlearning splits.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command()
def datasets() -> None:
    """List the scenarios (datasets with their unlearning splits) and their options."""
    table = Table(
        "name", "description", "options (-O KEY=VALUE; first = default)", title="datasets"
    )
    for name, description in list_scenarios().items():
        choices = scenario_options(name)
        shown = "\n".join(f"{k}={'|'.join(v)}" for k, v in choices.items())
        table.add_row(name, description, shown or "-")
    out.print(table)


@app.command()
def models() -> None:
    """List the registered model architectures."""
    table = Table("name", "description", title="models")
    for row in list_models().items():
        table.add_row(*row)
    out.print(table)


@data_app.command("info")
def data_info(
    dataset: common.DatasetOpt = "orl-glasses",
    split_seed: common.DataSplitSeedOpt = 0,
    data_root: common.DataRootOpt = None,
    image_size: common.ImageSizeOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
) -> None:
    """Split sizes, identity counts and class balance of a scenario."""
    scenario = ScenarioRequest(dataset, split_seed, data_root, forget, option).load(image_size)
    records = scenario.problem.records
    table = Table(
        title=f"{scenario.name}: {scenario.description} "
        f"({scenario.problem.level}-level, split seed {split_seed})"
    )
    table.add_column("split")
    per_class = records.num_classes <= MAX_CLASS_COLUMNS
    classes = records.class_names if per_class else ["images per class (min-max)"]
    for name in ["images", "identities", *classes]:
        table.add_column(name, justify="right")
    for split, info in scenario.problem.summary().items():
        classes = info["classes"]
        assert isinstance(classes, dict)
        counts = [classes[name] for name in records.class_names]
        cells = (
            [f"{c:.0f}" for c in counts] if per_class else [f"{min(counts):.0f}-{max(counts):.0f}"]
        )
        table.add_row(split, str(info["samples"]), str(info["identities"]), *cells)
    out.print(table)
    spec = scenario.input_spec
    out.print(
        f"task: {records.task}, {records.num_classes} classes; input {spec.size[0]}x"
        f"{spec.size[1]}x{spec.channels}; images under {records.root}"
    )
    if scenario.problem.dropped:
        out.print(
            f"dropped as leaks (option leaks=...): {len(scenario.problem.dropped)} images, "
            f"e.g. {', '.join(scenario.problem.dropped[:3])}"
        )
    people = scenario.problem.forget_identities()
    shown = ", ".join(people) if len(people) <= MAX_NAMED_PEOPLE else f"{len(people)} people"
    out.print(
        f"forget identities: {shown or '-'}; forget list sha256 "
        f"{scenario.problem.forget_sha256[:16]}..."
    )
