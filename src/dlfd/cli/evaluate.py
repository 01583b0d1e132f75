"""``dlfd evaluate``: the evaluation protocol on one or more checkpoints, as JSON and a table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlfd import __version__
from dlfd.checkpoint import CheckpointMeta, load_checkpoint
from dlfd.cli.app import app, err, out
from dlfd.cli.common import DataRootOpt, DeviceOpt, ForgetOpt, SplitSeedOpt, load_scenario
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import CheckpointError, ConfigError
from dlfd.evaluation import evaluate_model
from dlfd.io import atomic_write_json
from dlfd.runtime import hardware_info, resolve_device
from dlfd.scenarios import Scenario

TABLE_COLUMNS = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "unseen_acc",
    "mia_acc",
    "forgetting_score",
    "nomus",
    "avg_gap",
)


def _check_matches(meta: CheckpointMeta, path: Path, scenario: Scenario) -> None:
    if meta.num_classes != scenario.num_classes:
        raise CheckpointError(
            f"{path} predicts {meta.num_classes} classes but {scenario.name} "
            f"has {scenario.num_classes}"
        )
    if meta.task != scenario.task:
        raise CheckpointError(
            f"{path} is a {meta.task} model but {scenario.name} is {scenario.task}"
        )
    if meta.scenario not in (None, scenario.name):
        err.print(
            f"[yellow]warning:[/] {path} was trained on {meta.scenario!r}, "
            f"evaluating on {scenario.name!r}"
        )
    if meta.forget_sha256 not in (None, scenario.problem.forget_sha256):
        err.print(
            f"[yellow]warning:[/] {path} was made for a different forget set "
            f"(split seed {meta.split_seed}); its forget/retain metrics refer to this split"
        )


def metrics_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich table of the main metrics, one row per evaluated model."""
    present = [c for c in TABLE_COLUMNS if any(c in r["metrics"] for r in rows)]
    table = Table(title=title)
    table.add_column("model")
    table.add_column("role")
    for column in present:
        table.add_column(column, justify="right")
    for row in rows:
        values = [f"{row['metrics'][c]:.4f}" if c in row["metrics"] else "-" for c in present]
        table.add_row(row["name"], row["role"], *values)
    return table


@app.command()
def evaluate(
    models: Annotated[
        list[Path], typer.Option("--model", "-m", help="Checkpoint to evaluate (repeatable).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Scenario (default: the first model's)."),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option("--reference", "-r", help="Retrained reference checkpoint.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    split_seed: SplitSeedOpt = None,
    data_root: DataRootOpt = None,
    forget: ForgetOpt = None,
    lam: Annotated[float, typer.Option("--lambda", help="NoMUS weight of test accuracy.")] = 0.5,
    device: DeviceOpt = "auto",
) -> None:
    """Accuracies on every split, the loss-based attack, forgetting score, NoMUS, gaps."""
    torch_device = resolve_device(device)
    loaded = [(path, *load_checkpoint(path, device=torch_device)) for path in models]
    first = loaded[0][2]
    name = dataset or first.scenario
    if name is None:
        raise ConfigError(f"{models[0]} does not record its scenario; pass --dataset")
    seed = split_seed if split_seed is not None else (first.split_seed or 0)
    size = first.input_spec.size
    scenario = load_scenario(
        name,
        split_seed=seed,
        data_root=data_root,
        image_size=size[0] if size[0] == size[1] else None,
        forget=forget,
    )
    ref_model = None
    ref_meta = None
    if reference is not None:
        ref_model, ref_meta = load_checkpoint(reference, device=torch_device)
        _check_matches(ref_meta, reference, scenario)
        if ref_meta.role != "retrained":
            err.print(f"[yellow]warning:[/] reference {reference} has role {ref_meta.role!r}")
    rows = []
    for path, model, meta in loaded:
        _check_matches(meta, path, scenario)
        if ref_meta is not None and ref_meta.input_spec != meta.input_spec:
            raise CheckpointError(f"{path} and the reference {reference} expect different inputs")
        loaders = ProblemLoaders(scenario.problem, meta.input_spec)
        metrics = evaluate_model(model, loaders, device=torch_device, reference=ref_model, lam=lam)
        rows.append(
            {
                "name": path.stem,
                "path": str(path),
                "role": meta.role,
                "weights_sha256": meta.weights_sha256,
                "metrics": metrics,
            }
        )
    record = {
        "dlfd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": scenario.name,
        "split_seed": scenario.problem.split_seed,
        "forget_sha256": scenario.problem.forget_sha256,
        "split_sizes": scenario.problem.sizes(),
        "lambda": lam,
        "reference": None
        if ref_meta is None
        else {"path": str(reference), "weights_sha256": ref_meta.weights_sha256},
        "hardware": hardware_info(),
        "results": rows,
    }
    if json_out is not None:
        atomic_write_json(json_out, record)
    title = f"{scenario.name} (split seed {scenario.problem.split_seed})"
    out.print(metrics_table(rows, title))
    if json_out is not None:
        err.print(f"wrote {json_out}")
