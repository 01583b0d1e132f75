"""``dlfd audit``: does the unlearned model still remember the forget set? One certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlfd.audit.render import warnings, write_pages
from dlfd.audit.runner import (
    AuditSettings,
    LoadedModel,
    check_shadow_settings,
    load_models,
    run_audit,
)
from dlfd.cli.app import app, err, out, styled, warn
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
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import atomic_write_json
from dlfd.runtime import resolve_device
from dlfd.scenarios import Scenario

#: What an audit writes into its --out folder.
AUDIT_FILES = (
    "certificate.json",
    "audit.html",
    "audit.md",
    "figures/losses.png",
    "figures/people.png",
)


@app.command()
def audit(
    model: Annotated[
        Path, typer.Option("--model", "-m", metavar="FILE", help="The unlearned checkpoint.")
    ],
    original: Annotated[
        Path, typer.Option("--original", metavar="FILE", help="The model before unlearning.")
    ],
    reference: Annotated[
        Path,
        typer.Option(
            "--reference",
            "-r",
            metavar="FILE",
            help="The retrained reference (retain only).",
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for the audit.")
    ],
    dataset: RecordedDatasetOpt = None,
    split_seed: RecordedSplitSeedOpt = None,
    data_root: DataRootOpt = None,
    forget: ForgetOpt = None,
    option: OptionOpt = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            max=1.0,
            metavar="DELTA",
            help="An attack passes when its accuracy on the unlearned "
            "model is within this of its accuracy on the retrained reference.",
        ),
    ] = 0.05,
    utility_tolerance: Annotated[
        float,
        typer.Option(
            "--utility-tolerance",
            min=0.0,
            max=1.0,
            metavar="DELTA",
            help="Retain and test accuracy pass when the unlearned model's is at most this "
            "(absolute accuracy) below the retrained reference's.",
        ),
    ] = 0.05,
    n_boot: Annotated[
        int,
        typer.Option("--n-boot", min=10, max=100_000, metavar="N", help="Bootstrap rounds."),
    ] = 200,
    shadows: Annotated[
        int,
        typer.Option(
            "--shadows",
            min=0,
            max=256,
            metavar="N",
            help="LiRA budget: shadow models trained with and "
            "without the forget set, per side (each is one full training run; 0 = no "
            "LiRA).",
        ),
    ] = 0,
    shadow_dir: Annotated[
        Path | None,
        typer.Option(
            "--shadow-dir",
            metavar="DIR",
            help="Cache of shadow models (default: OUT/shadows); finished ones are reused.",
        ),
    ] = None,
    top_k: Annotated[
        int,
        typer.Option("--top-k", min=0, max=10_000, metavar="N", help="Most exposed photos listed."),
    ] = 10,
    device: DeviceOpt = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace files in --out that dlfd did not write.")
    ] = False,
) -> None:
    """Audit an unlearned model: attacks with intervals, per-person evidence and a verdict.

    Writes certificate.json plus audit.html / audit.md with plots. The verdict needs both
    forgetting (label-matched membership attacks within --tolerance of the reference) and
    utility (retain and test accuracy within --utility-tolerance). Exit code 0: pass; 1: fail;
    3: inconclusive.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    written = [out_dir / name for name in AUDIT_FILES]
    inputs = input_files(forget, data_root, checkpoints=[model, original, reference])
    with claimed(written, "--out", inputs=inputs, force=force):
        settings = AuditSettings(
            tolerance=tolerance,
            n_boot=n_boot,
            shadows=shadows,
            top_k=top_k,
            utility_tolerance=utility_tolerance,
        )
        torch_device = resolve_device(device)
        scenario = scenario_for_checkpoint(
            model,
            dataset=dataset,
            split_seed=split_seed,
            data_root=data_root,
            forget=forget,
            option=option,
        )
        refuse_data_outputs(written, "--out", scenario)
        check_shadow_settings(settings, scenario.task, shadow_dir or out_dir / "shadows")
        models = load_models(
            {"original": original, "unlearned": model, "reference": reference}, torch_device
        )
        check_audit_models(models, scenario)
        certificate, outputs = run_audit(
            scenario,
            models,
            device=torch_device,
            settings=settings,
            shadow_dir=shadow_dir or out_dir / "shadows",
            log=lambda m: err.print(styled((m, "dim"))),
        )
        atomic_write_json(out_dir / "certificate.json", certificate)
        pages = write_pages(certificate, outputs, scenario.task, out_dir)
        for line in warnings(certificate):
            warn(line)
        out.print(verdict_table(certificate, f"audit of {model.name} on {scenario.name}"))
        out.print(certificate["summary"])
        err.print(f"wrote {out_dir / 'certificate.json'}, {pages['html']}, {pages['markdown']}")
        if certificate["verdict"] != "pass":
            raise typer.Exit(1 if certificate["verdict"] == "fail" else 3)


def verdict_table(certificate: dict[str, Any], title: str) -> Table:
    """The terminal table: every attack's accuracy (label-matched) and the retain and test
    accuracies, for the three models, with the unlearned model's interval and the verdict."""
    per_side = (certificate.get("matching") or {}).get("per_side")
    matched = "" if per_side is None else f", {per_side} per side"
    table = Table(title=f"{title} (attack accuracy on label-matched samples{matched}; accuracy)")
    for column in ("quantity", "original", "unlearned", "unlearned CI", "reference", "verdict"):
        table.add_column(column, justify="left" if column == "quantity" else "right")

    def number(summary: dict[str, float] | None) -> str:
        return "n/a" if summary is None else f"{summary['accuracy']:.3f}"

    for name, attack in certificate["attacks"].items():
        interval = attack["unlearned_interval"]
        table.add_row(
            name,
            number(attack["original"]),
            number(attack["unlearned"]),
            "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]",
            number(attack["reference"]),
            attack["verdict"],
        )
    if certificate["lira"]:
        lira = certificate["lira"]
        table.add_row(
            "lira (forget photos flagged)",
            "-",
            f"{lira['member_fraction_target']:.3f}",
            "-",
            f"{lira['member_fraction_control']:.3f}",
            lira["verdict"],
        )
    utility = certificate.get("utility") or {}
    for key, label in (("retain_acc", "retain accuracy"), ("test_acc", "test accuracy")):
        if key not in utility:
            continue
        row = utility[key]
        low, high = row["difference_interval"]
        table.add_row(
            label,
            f"{row['original']:.3f}",
            f"{row['unlearned']:.3f}",
            f"U-R [{low:+.3f}, {high:+.3f}]",
            f"{row['reference']:.3f}",
            row["verdict"],
        )
    return table


def check_audit_models(models: dict[str, LoadedModel], scenario: Scenario) -> None:
    """Refuse models that cannot be compared on this scenario's forget request."""
    for name, loaded in models.items():
        refuse_unfit(loaded.meta, loaded.path, scenario)
        if loaded.meta.data_sha256 not in (None, scenario.problem.records.fingerprint):
            raise CheckpointError(f"{loaded.path} ({name}) was trained on other data")
    expected = {"original": "original", "reference": "retrained"}
    for name, role in expected.items():
        meta = models[name].meta
        if meta.role in ("original", "retrained") and meta.role != role:
            raise CheckpointError(
                f"--{name} {models[name].path} is a {meta.role} model; it must be the {role} model"
            )
    original = models["original"].meta
    if original.split_seed not in (None, scenario.problem.split_seed):
        raise CheckpointError(
            f"--original {models['original'].path} was trained on the split "
            f"of seed {original.split_seed}, not {scenario.problem.split_seed}"
        )
    if models["reference"].meta.forget_sha256 not in (None, scenario.problem.forget_sha256):
        raise CheckpointError(
            f"the reference {models['reference'].path} was retrained for another forget set"
        )
