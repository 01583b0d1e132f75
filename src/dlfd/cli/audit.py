"""``dlfd audit``: does the unlearned model still remember the forget set? One certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlfd.audit.render import write_pages
from dlfd.audit.runner import (
    AuditSettings,
    LoadedModel,
    check_shadow_settings,
    load_models,
    run_audit,
)
from dlfd.cli.app import app, err, out, styled
from dlfd.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ForgetOpt,
    OptionOpt,
    claimed,
    input_files,
    refuse_data_outputs,
    refuse_unfit,
    scenario_for_checkpoint,
)
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import atomic_write_json
from dlfd.runtime import SEED_MAX, resolve_device
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
    model: Annotated[Path, typer.Option("--model", "-m", help="The unlearned checkpoint.")],
    original: Annotated[Path, typer.Option("--original", help="The model before unlearning.")],
    reference: Annotated[
        Path, typer.Option("--reference", "-r", help="The retrained reference (retain only).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the audit.")],
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Scenario (default: the model's).")
    ] = None,
    split_seed: Annotated[
        int | None,
        typer.Option(
            "--split-seed", min=0, max=SEED_MAX, help="Seed of the split (default: the model's)."
        ),
    ] = None,
    data_root: DataRootOpt = None,
    forget: ForgetOpt = None,
    option: OptionOpt = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            max=1.0,
            help="An attack passes when its accuracy on the unlearned "
            "model is within this of its accuracy on the retrained reference.",
        ),
    ] = 0.05,
    n_boot: Annotated[
        int, typer.Option("--n-boot", min=10, max=100_000, help="Bootstrap rounds.")
    ] = 200,
    shadows: Annotated[
        int,
        typer.Option(
            "--shadows",
            min=0,
            max=256,
            help="LiRA budget: shadow models trained with and "
            "without the forget set, per side (each is one full training run; 0 = no "
            "LiRA).",
        ),
    ] = 0,
    shadow_dir: Annotated[
        Path | None,
        typer.Option(
            "--shadow-dir",
            help="Cache of shadow models (default: OUT/shadows); finished ones are reused.",
        ),
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", min=0, max=10_000, help="Most exposed photos listed.")
    ] = 10,
    device: DeviceOpt = "auto",
    force: Annotated[
        bool, typer.Option("--force", help="Replace files in --out that dlfd did not write.")
    ] = False,
) -> None:
    """Attacks with intervals, per-person evidence and a verdict, as certificate.json plus
    audit.html / audit.md with plots. Exit code 0: pass; 1: fail; 3: inconclusive."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    written = [out_dir / name for name in AUDIT_FILES]
    inputs = input_files(forget, data_root, checkpoints=[model, original, reference])
    with claimed(written, "--out", inputs=inputs, force=force):
        settings = AuditSettings(tolerance=tolerance, n_boot=n_boot, shadows=shadows, top_k=top_k)
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
        table = Table(title=f"audit of {model.name} on {scenario.name} (attack accuracy)")
        for column in ("attack", "original", "unlearned", "unlearned CI", "reference", "verdict"):
            table.add_column(column, justify="left" if column == "attack" else "right")
        for name, attack in certificate["attacks"].items():
            low, high = attack["unlearned_interval"]
            table.add_row(
                name,
                f"{attack['original']['accuracy']:.3f}",
                f"{attack['unlearned']['accuracy']:.3f}",
                f"[{low:.3f}, {high:.3f}]",
                f"{attack['reference']['accuracy']:.3f}",
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
        out.print(table)
        out.print(certificate["summary"])
        err.print(f"wrote {out_dir / 'certificate.json'}, {pages['html']}, {pages['markdown']}")
        if certificate["verdict"] != "pass":
            raise typer.Exit(1 if certificate["verdict"] == "fail" else 3)


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
