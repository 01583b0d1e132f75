"""``dlfd evaluate``: the evaluation protocol on one or more checkpoints, as JSON and a table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlfd import __version__
from dlfd.checkpoint import CheckpointMeta, load_checkpoint
from dlfd.cli.app import app, err, note, out, warn
from dlfd.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ForgetOpt,
    OptionOpt,
    RecordedDatasetOpt,
    RecordedSplitSeedOpt,
    claimed,
    input_files,
    refuse_data_outputs,
    refuse_unfit,
    scenario_for_checkpoint,
)
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import CheckpointError
from dlfd.evaluation import (
    evaluate_model,
    label_shift_json,
    problem_label_shift,
    problem_matched_reason,
)
from dlfd.io import atomic_write_json
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.runtime import hardware_info, resolve_device, software_versions
from dlfd.scenarios import Scenario


def _check_matches(meta: CheckpointMeta, path: Path, scenario: Scenario, strict: bool) -> None:
    """Refuse a model that cannot be evaluated on ``scenario``; warn about provenance gaps."""
    refuse_unfit(meta, path, scenario)
    if meta.scenario not in (None, scenario.name):
        warn(f"{path} was trained on {meta.scenario!r}, evaluating on {scenario.name!r}")
    if meta.data_sha256 not in (None, scenario.problem.records.fingerprint):
        warn(f"{path} was trained on different data (files or labels)")
    if meta.forget_sha256 not in (None, scenario.problem.forget_sha256):
        message = (
            f"{path} was made for a different forget set than the one evaluated "
            f"(split seed {meta.split_seed})"
        )
        if strict:
            raise CheckpointError(message + "; the gaps to it would be meaningless")
        warn(f"{message}; forget/retain metrics refer to this split")


def metrics_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich table of the main metrics, one row per evaluated model."""
    present = [c for c in MAIN_METRICS if any(c in r["metrics"] for r in rows)]
    table = Table(title=title)
    table.add_column("model")
    table.add_column("role")
    for column in present:
        table.add_column(column, justify="right")
    for row in rows:
        values = [f"{row['metrics'][c]:.4f}" if c in row["metrics"] else "-" for c in present]
        table.add_row(row["name"], row["role"], *values)
    return table


def _provenance(path: Path, meta: CheckpointMeta) -> dict[str, Any]:
    return {
        "name": path.stem,
        "path": str(path),
        "role": meta.role,
        "arch": meta.arch,
        "scenario": meta.scenario,
        "split_seed": meta.split_seed,
        "train_seed": meta.train_seed,
        "weights_sha256": meta.weights_sha256,
        "forget_sha256": meta.forget_sha256,
        "data_sha256": meta.data_sha256,
        "config_sha256": meta.config_sha256,
    }


#: Marks ``dlfd evaluate --json`` files.
EVALUATION_FORMAT = "dlfd-evaluation/1"


@app.command()
def evaluate(
    models: Annotated[
        list[Path],
        typer.Option("--model", "-m", metavar="FILE", help="Checkpoint to evaluate; repeatable."),
    ],
    dataset: RecordedDatasetOpt = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", "-r", metavar="FILE", help="Retrained reference checkpoint."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write results here.")
    ] = None,
    split_seed: RecordedSplitSeedOpt = None,
    data_root: DataRootOpt = None,
    forget: ForgetOpt = None,
    option: OptionOpt = None,
    lam: Annotated[
        float,
        typer.Option(
            "--lambda", min=0.0, max=1.0, metavar="WEIGHT", help="NoMUS weight of test accuracy."
        ),
    ] = 0.5,
    attacks: Annotated[
        bool,
        typer.Option(
            "--attacks",
            help="Add the stronger attacks (entropy, SalUn's SVC; AUC and "
            "TPR at 1% FPR) and bootstrap intervals of mia_acc and nomus.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace a --json file that dlfd did not write.")
    ] = False,
) -> None:
    """Accuracies on every split, the loss-based attack, forgetting score, NoMUS, gaps.

    The scenario, split seed, options and forget set default to those recorded in the first
    model's sidecar, so a model trained with --forget is evaluated on its own forget set.
    """
    outputs = [json_out] if json_out is not None else []
    inputs = input_files(forget, data_root, checkpoints=[*models, reference])
    with claimed(outputs, "--json", inputs=inputs, force=force):
        torch_device = resolve_device(device)
        scenario = scenario_for_checkpoint(
            models[0],
            dataset=dataset,
            split_seed=split_seed,
            data_root=data_root,
            forget=forget,
            option=option,
        )
        refuse_data_outputs(outputs, "--json", scenario)
        shift = label_shift_json(problem_label_shift(scenario.problem))
        if shift is not None and shift["warning"] is not None:
            warn(shift["warning"])
        matched_reason = problem_matched_reason(scenario.problem)
        if matched_reason is not None:
            note(f"no label-matched attack (mia_acc_matched, nomus_matched): {matched_reason}")
        ref_model = ref_meta = None
        if reference is not None:
            ref_model, ref_meta = load_checkpoint(reference, device=torch_device)
            _check_matches(ref_meta, reference, scenario, strict=True)
            if ref_meta.role != "retrained":
                warn(f"reference {reference} has role {ref_meta.role!r}")
        rows = []
        for path in models:
            model, meta = load_checkpoint(path, device=torch_device)
            _check_matches(meta, path, scenario, strict=False)
            if ref_meta is not None and ref_meta.input_spec != meta.input_spec:
                raise CheckpointError(
                    f"{path} and the reference {reference} expect different inputs"
                )
            loaders = ProblemLoaders(scenario.problem, meta.input_spec)
            metrics = evaluate_model(
                model, loaders, device=torch_device, reference=ref_model, lam=lam, attacks=attacks
            )
            rows.append({**_provenance(path, meta), "metrics": metrics})
        record = {
            "format": EVALUATION_FORMAT,
            "dlfd_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dataset": scenario.name,
            "scenario_options": dict(scenario.options),
            "split_seed": scenario.problem.split_seed,
            "forget_sha256": scenario.problem.forget_sha256,
            "data_sha256": scenario.problem.records.fingerprint,
            "split_sizes": scenario.problem.sizes(),
            "lambda": lam,
            "reference": None
            if ref_meta is None or reference is None
            else _provenance(reference, ref_meta),
            "hardware": hardware_info(),
            "versions": software_versions(),
            "label_shift": shift,
            "results": rows,
        }
        if matched_reason is not None:
            record["matched_attack"] = {"reason": matched_reason}
        if json_out is not None:
            atomic_write_json(json_out, record)
        title = f"{scenario.name} (split seed {scenario.problem.split_seed})"
        out.print(metrics_table(rows, title))
        if json_out is not None:
            err.print(f"wrote {json_out}")
