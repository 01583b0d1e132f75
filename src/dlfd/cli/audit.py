"""``dlfd audit``: does the unlearned model still remember the forget set? One certificate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlfd.audit.render import warnings, write_pages
from dlfd.audit.runner import (
    MODELS,
    AuditSettings,
    check_audit_models,
    check_shadow_settings,
    load_models,
    run_audit,
)
from dlfd.cli import common
from dlfd.cli.app import app, err, out, styled, warn
from dlfd.errors import ConfigError
from dlfd.io import atomic_write_json
from dlfd.runs.scenario import ScenarioRequest

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
    model: Annotated[Path, common.opt("--model -m FILE", "The unlearned checkpoint.")],
    original: Annotated[Path, common.opt("--original FILE", "The model before unlearning.")],
    reference: Annotated[
        Path, common.opt("--reference -r FILE", "The retrained reference (retain only).")
    ],
    out_dir: Annotated[Path, common.opt("--out -o DIR", "Folder for the audit.")],
    dataset: common.RecordedDatasetOpt = None,
    split_seed: common.RecordedSplitSeedOpt = None,
    data_root: common.DataRootOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
    tolerance: Annotated[
        float,
        common.opt(
            "--tolerance DELTA",
            "An attack passes when its accuracy on the unlearned "
            "model is within this of its accuracy on the retrained reference.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.05,
    utility_tolerance: Annotated[
        float,
        common.opt(
            "--utility-tolerance DELTA",
            "Retain and test accuracy pass when the unlearned model's is at most this "
            "(absolute accuracy) below the retrained reference's.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.05,
    n_boot: Annotated[
        int, common.opt("--n-boot N", "Bootstrap rounds.", min=10, max=100_000)
    ] = 200,
    shadows: Annotated[
        int,
        common.opt(
            "--shadows N",
            "LiRA budget: shadow models trained with and without the forget set, per side "
            "(each is one full training run; 0 = no LiRA).",
            min=0,
            max=256,
        ),
    ] = 0,
    shadow_dir: Annotated[
        Path | None,
        common.opt(
            "--shadow-dir DIR",
            "Cache of shadow models (default: OUT/shadows); finished ones are reused.",
        ),
    ] = None,
    top_k: Annotated[
        int, common.opt("--top-k N", "Most exposed photos listed.", min=0, max=10_000)
    ] = 10,
    device: common.DeviceOpt = "auto",
    force: Annotated[
        bool, common.opt("--force", "Replace files in --out that dlfd did not write.")
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
    request = ScenarioRequest(dataset, split_seed, data_root, forget, option)
    settings = AuditSettings(
        tolerance=tolerance,
        n_boot=n_boot,
        shadows=shadows,
        top_k=top_k,
        utility_tolerance=utility_tolerance,
    )
    shadow_dir = shadow_dir or out_dir / "shadows"
    checkpoints = {"original": original, "unlearned": model, "reference": reference}
    opened = common.on_checkpoints(
        [model, original, reference], request, written, "--out", device=device, force=force
    )
    with opened as (scenario, torch_device):
        check_shadow_settings(settings, scenario.task, shadow_dir)
        models = load_models(checkpoints, torch_device)
        check_audit_models(models, scenario)
        with common.progress_bar("audit", quiet=False) as bar:
            certificate, outputs = run_audit(
                scenario,
                models,
                device=torch_device,
                settings=settings,
                shadow_dir=shadow_dir,
                log=lambda m: err.print(styled((m, "dim"))),
                progress=bar,
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

    f3 = "{:.3f}".format

    def number(summary: dict[str, float] | None) -> str:
        return "n/a" if summary is None else f3(summary["accuracy"])

    for name, attack in certificate["attacks"].items():
        interval = attack["unlearned_interval"]
        ci = "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
        original, unlearned, reference = (number(attack[m]) for m in MODELS)
        table.add_row(name, original, unlearned, ci, reference, attack["verdict"])
    if lira := certificate["lira"]:
        target, control = (f3(lira[f"member_fraction_{k}"]) for k in ("target", "control"))
        table.add_row("lira (forget photos flagged)", "-", target, "-", control, lira["verdict"])
    utility = certificate.get("utility") or {}
    for key, label in (("retain_acc", "retain accuracy"), ("test_acc", "test accuracy")):
        if key in utility:
            row = utility[key]
            low, high = row["difference_interval"]
            original, unlearned, reference = (f3(row[m]) for m in MODELS)
            ci = f"U-R [{low:+.3f}, {high:+.3f}]"
            table.add_row(label, original, unlearned, ci, reference, row["verdict"])
    return table
