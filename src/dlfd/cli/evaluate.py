"""``dlfd evaluate``: the evaluation protocol on one or more checkpoints, as JSON and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from rich.table import Column, Table

from dlfd.cli import common
from dlfd.cli.app import app, err, note, out, warn
from dlfd.cli.report import print_fitted
from dlfd.io import atomic_write_json
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.runs.evaluate import evaluate_checkpoints
from dlfd.runs.scenario import ScenarioRequest
from dlfd.runtime import Precision


def metrics_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich table of the main metrics, one row per evaluated model."""
    present = [c for c in MAIN_METRICS if any(c in r["metrics"] for r in rows)]
    # headers are the JSON keys, whole: a narrow terminal gets the columns in groups instead
    metrics = (Column(c, justify="right", no_wrap=True) for c in present)
    table = Table(
        Column("model", overflow="fold"), Column("role", no_wrap=True), *metrics, title=title
    )
    for row in rows:
        values = [f"{row['metrics'][c]:.4f}" if c in row["metrics"] else "-" for c in present]
        table.add_row(row["name"], row["role"], *values)
    return table


@app.command()
def evaluate(
    models: Annotated[
        list[Path], common.opt("--model -m FILE", "Checkpoint to evaluate; repeatable.")
    ],
    dataset: common.RecordedDatasetOpt = None,
    reference: Annotated[
        Path | None, common.opt("--reference -r FILE", "Retrained reference checkpoint.")
    ] = None,
    json_out: Annotated[Path | None, common.opt("--json FILE", "Write results here.")] = None,
    split_seed: common.RecordedSplitSeedOpt = None,
    data_root: common.DataRootOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
    lam: Annotated[float, common.LAMBDA] = 0.5,
    attacks: Annotated[
        bool,
        common.opt(
            "--attacks",
            "Add the stronger attacks (entropy, SalUn's SVC; AUC and "
            "TPR at 1% FPR) and bootstrap intervals of mia_acc and nomus.",
        ),
    ] = False,
    device: common.DeviceOpt = "auto",
    amp: common.AmpOpt = False,
    channels_last: common.ChannelsLastOpt = False,
    force: common.JsonForceOpt = False,
) -> None:
    """Accuracies on every split, the loss-based attack, forgetting score, NoMUS, gaps.

    The scenario, split seed, options and forget set default to those recorded in the first
    model's sidecar, so a model trained with --forget is evaluated on its own forget set.
    """
    outputs = [json_out] if json_out is not None else []
    request = ScenarioRequest(dataset, split_seed, data_root, forget, option)
    opened = common.on_checkpoints(
        [*models, reference], request, outputs, "--json", device=device, force=force
    )
    with opened as (scenario, torch_device):
        record = evaluate_checkpoints(
            scenario,
            models,
            reference,
            device=torch_device,
            lam=lam,
            attacks=attacks,
            warn=warn,
            note=note,
            precision=Precision(amp, channels_last),
        )
        if json_out is not None:
            atomic_write_json(json_out, record)
        title = f"{scenario.name} (split seed {scenario.problem.split_seed})"
        print_fitted(out, metrics_table(record["results"], title), keep=2)
        if json_out is not None:
            err.print(f"wrote {json_out}")
