"""``dlfd data check``: leaks between the splits of a scenario, with counts and examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from dlfd.cli import common
from dlfd.cli.app import err, note, out, warn
from dlfd.cli.listing import data_app
from dlfd.data.leakage import DEFAULT_NEAR_BITS, KINDS, LeakReport, find_leaks
from dlfd.data.problem import SPLITS
from dlfd.errors import LeakError
from dlfd.evaluation import label_notes, label_shift_json, split_label_shift, split_matched_reason
from dlfd.io import atomic_write_json
from dlfd.runs.scenario import ScenarioRequest

#: Marks ``dlfd data check --json`` files.
LEAK_REPORT_FORMAT = "dlfd-leak-report/1"


@data_app.command("check")
def data_check(
    dataset: common.DatasetOpt = "orl-glasses",
    split_seed: common.DataSplitSeedOpt = 0,
    data_root: common.DataRootOpt = None,
    image_size: common.ImageSizeOpt = None,
    option: common.OptionOpt = None,
    near_bits: Annotated[
        int,
        common.opt(
            "--near-bits BITS",
            "Photos whose 64-bit perceptual hashes differ in at most this many bits are "
            "near-duplicates.",
            min=0,
            max=12,
        ),
    ] = DEFAULT_NEAR_BITS,
    examples: Annotated[
        int, common.opt("--examples N", "Examples per kind.", min=0, max=10_000)
    ] = 5,
    json_out: Annotated[Path | None, common.opt("--json FILE", "Write the report here.")] = None,
    force: common.JsonForceOpt = False,
) -> None:
    """Report identities, identical photos and near-duplicate photos shared across splits.

    Exits 1 when identity or exact-duplicate leaks are found (the scenario would refuse them;
    the scenario option leaks=drop removes them), 0 otherwise.
    """
    outputs = [json_out] if json_out is not None else []
    with common.claimed(outputs, "--json", inputs=common.input_files(data_root), force=force):
        try:
            request = ScenarioRequest(dataset, split_seed, data_root, None, option)
            problem = request.load(image_size).problem
            records, level = problem.records, problem.level
            assignment = {split: problem.split(split) for split in SPLITS}
            dropped = problem.dropped
        except LeakError as exc:
            records, level = exc.records, exc.level  # type: ignore[assignment]
            assignment, dropped = exc.assignment, ()  # type: ignore[assignment]
        common.refuse_data_outputs(outputs, "--json", records, data_root)
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
        title = f"{dataset}: leaks across splits ({level}-level, split seed {split_seed})"
        count = Column("count", justify="right")
        table = Table("kind", count, "examples (split:file)", title=title)
        for kind in KINDS:
            examples = summary["examples"][kind]
            shown = [f"{e['key'][:16]}: {', '.join(e['files'][:3])}" for e in examples]
            table.add_row(kind, str(summary["counts"][kind]), "\n".join(shown) or "-")
        out.print(table)
        if dropped:
            out.print(
                f"{len(dropped)} samples were dropped by the leaks option, e.g. "
                f"{', '.join(dropped[:3])}"
            )
        forget, unseen = assignment["forget"], assignment["unseen"]
        shift = label_shift_json(split_label_shift(records, forget, unseen))
        reason = None if shift is None else split_matched_reason(records, forget, unseen)
        for kind, text in label_notes(shift, reason):
            (warn if kind == "warning" else note)(text)
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
