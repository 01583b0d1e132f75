"""``dlfd data check``: leaks between the splits of a scenario, with counts and examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlfd.cli.app import err, note, out, warn
from dlfd.cli.common import (
    DataRootOpt,
    DatasetOpt,
    DataSplitSeedOpt,
    ImageSizeOpt,
    OptionOpt,
    claimed,
    input_files,
    load_scenario,
    refuse_record_outputs,
)
from dlfd.cli.listing import data_app
from dlfd.data.leakage import DEFAULT_NEAR_BITS, KINDS, LeakReport, find_leaks
from dlfd.data.problem import SPLITS
from dlfd.errors import LeakError
from dlfd.evaluation import label_shift_json, split_label_shift, split_matched_reason
from dlfd.io import atomic_write_json

#: Marks ``dlfd data check --json`` files.
LEAK_REPORT_FORMAT = "dlfd-leak-report/1"


@data_app.command("check")
def data_check(
    dataset: DatasetOpt = "orl-glasses",
    split_seed: DataSplitSeedOpt = 0,
    data_root: DataRootOpt = None,
    image_size: ImageSizeOpt = None,
    option: OptionOpt = None,
    near_bits: Annotated[
        int,
        typer.Option(
            "--near-bits",
            min=0,
            max=12,
            metavar="BITS",
            help="Photos whose 64-bit perceptual hashes differ in at most this many bits are "
            "near-duplicates.",
        ),
    ] = DEFAULT_NEAR_BITS,
    examples: Annotated[
        int,
        typer.Option("--examples", min=0, max=10_000, metavar="N", help="Examples per kind."),
    ] = 5,
    json_out: Annotated[
        Path | None, typer.Option("--json", metavar="FILE", help="Write the report here.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a --json file that dlfd did not write.")
    ] = False,
) -> None:
    """Report identities, identical photos and near-duplicate photos shared across splits.

    Exits 1 when identity or exact-duplicate leaks are found (the scenario would refuse them;
    the scenario option leaks=drop removes them), 0 otherwise.
    """
    outputs = [json_out] if json_out is not None else []
    with claimed(outputs, "--json", inputs=input_files(data_root), force=force):
        try:
            scenario = load_scenario(
                dataset,
                split_seed=split_seed,
                data_root=data_root,
                image_size=image_size,
                options=option,
            )
            problem = scenario.problem
            records, level = problem.records, problem.level
            assignment = {split: problem.split(split) for split in SPLITS}
            dropped = problem.dropped
        except LeakError as exc:
            records, level = exc.records, exc.level  # type: ignore[assignment]
            assignment, dropped = exc.assignment, ()  # type: ignore[assignment]
        refuse_record_outputs(outputs, "--json", records, data_root)
        err.print(f"hashing {len(records)} images ...")
        report: LeakReport = find_leaks(
            records.identities,
            records.content_hashes,
            assignment,
            level=level,
            perceptual=records.perceptual_hashes,
            near_bits=near_bits,
        )
        summary = report.to_dict(records.paths, max_examples=examples)
        table = Table(
            title=f"{dataset}: leaks across splits ({level}-level, split seed {split_seed})"
        )
        table.add_column("kind")
        table.add_column("count", justify="right")
        table.add_column("examples (split:file)")
        for kind in KINDS:
            shown = [
                f"{e['key'][:16]}: {', '.join(e['files'][:3])}" for e in summary["examples"][kind]
            ]
            table.add_row(kind, str(summary["counts"][kind]), "\n".join(shown) or "-")
        out.print(table)
        if dropped:
            out.print(
                f"{len(dropped)} samples were dropped by the leaks option, e.g. "
                f"{', '.join(dropped[:3])}"
            )
        forget, unseen = assignment["forget"], assignment["unseen"]
        shift = label_shift_json(split_label_shift(records, forget, unseen))
        if shift is not None:
            if shift["warning"] is not None:
                warn(shift["warning"])
            reason = split_matched_reason(records, forget, unseen)
            if reason is not None:
                note(f"no label-matched attack (mia_acc_matched, nomus_matched): {reason}")
        if json_out is not None:
            atomic_write_json(
                json_out,
                {
                    "format": LEAK_REPORT_FORMAT,
                    "dataset": dataset,
                    "split_seed": split_seed,
                    "level": level,
                    "near_bits": near_bits,
                    "dropped": list(dropped),
                    "label_shift": shift,
                    **summary,
                },
            )
        if summary["counts"]["identity"] or summary["counts"]["duplicate"]:
            raise typer.Exit(1)
