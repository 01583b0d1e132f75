"""``dlfd report``: tables, figures, one self-contained HTML file and a Markdown file, built
only from a ``dlfd bench`` folder's JSON."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlfd.bench.records import RESULTS_FILE
from dlfd.cli.app import app, err, out
from dlfd.cli.common import claimed, opt
from dlfd.report import PageTable, build_report, main_table
from dlfd.report.build import FIGURE_NAMES
from dlfd.report.paired import DEFAULT_REFERENCE

#: What a column costs beside its text: padding on both sides and a rule (or space) between.
COLUMN_EXTRA = 3


def _text_width(cell: object) -> int:
    """Widest line of a cell (a str or rich Text)."""
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return max((len(line) for line in text.split("\n")), default=0)


def _groups(costs: list[int], room: int) -> list[list[int]]:
    """Indices of ``costs`` in consecutive groups, each as many as fit in ``room`` (one at
    least)."""
    groups: list[list[int]] = [[]]
    used = 0
    for k, cost in enumerate(costs):
        if groups[-1] and used + cost > room:
            groups.append([])
            used = 0
        groups[-1].append(k)
        used += cost
    return groups


def fit_width(table: Table, width: int, keep: int = 1) -> list[Table]:
    """``table`` as tables no wider than ``width`` that never cut a cell: the whole table when
    it fits, else its columns in groups, each table repeating the first ``keep`` columns (the
    row names; folded, never cut with an ellipsis, when long) with as many of the others as
    fit. The title goes on the first table, the caption on the last."""
    columns = table.columns
    needed = [
        max([_text_width(c.header), *(_text_width(cell) for cell in c._cells)], default=1)
        for c in columns
    ]
    if sum(needed) + COLUMN_EXTRA * len(columns) + 1 <= width or len(columns) <= keep:
        return [table]
    cap = max(12, width // (2 + keep))
    # the same width in every table; a longer name folds onto more lines
    widths = [min(need, cap) for need in needed[:keep]]
    names = [
        dataclasses.replace(c, overflow="fold", no_wrap=False, min_width=None, width=w)
        for c, w in zip(columns[:keep], widths, strict=True)
    ]
    room = width - 1 - sum(widths) - COLUMN_EXTRA * keep
    costs = [need + COLUMN_EXTRA for need in needed[keep:]]
    groups = _groups(costs, room)
    # as many tables, with the columns spread evenly over them when that fits too
    count, start, even = len(groups), 0, []
    for k in range(count):
        size = len(costs) // count + (k < len(costs) % count)
        even.append(list(range(start, start + size)))
        start += size
    if all(sum(costs[i] for i in g) <= room for g in even):
        groups = even
    tables = []
    for k, group in enumerate(groups):
        part = copy.copy(table)
        part.columns = [
            *(dataclasses.replace(c, _cells=list(c._cells)) for c in names),
            *(dataclasses.replace(columns[keep + i], _cells=list(columns[keep + i]._cells))
              for i in group),
        ]  # fmt: skip
        part.title = table.title if k == 0 else None
        part.caption = table.caption if k == len(groups) - 1 else None
        tables.append(part)
    return tables


def print_fitted(console: Console, table: Table, keep: int = 1) -> None:
    """Print ``table`` on ``console`` without cutting a cell (:func:`fit_width`)."""
    for part in fit_width(table, console.width, keep):
        console.print(part)


def rich_table(table: PageTable) -> Table:
    """A :class:`PageTable` for the terminal: means only (best in bold green), headers that
    may wrap at their underscores, no vertical rules."""
    spread = "±" in "".join(cell for row in table.rows for cell in row[1:])
    caption = "means; ± std and 95% intervals: report.html / report.md" if spread else None
    shown = Table(
        title=table.title, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False
    )
    # The mean alone (0.728 of 0.728±0.033 [0.65, 0.81]): the pages carry the spread and the
    # intervals, and a dozen columns then fit a terminal.
    cells = [
        [row[0], *(text.split("±", 1)[0].split(" [", 1)[0].strip() for text in row[1:])]
        for row in table.rows
    ]
    for k, name in enumerate(table.header):
        header = name if k == 0 else name.replace("_", "\n")
        widest = max([len(line) for line in header.split("\n")] + [len(r[k]) for r in cells])
        shown.add_column(
            header, justify="left" if k == 0 else "right", no_wrap=True, min_width=widest
        )
    for r, row in enumerate(cells):
        styles = ["bold green" if (r, c) in table.best else "" for c in range(len(row))]
        shown.add_row(*map(Text, row, styles))
    return shown


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A `dlfd bench --out` folder.")],
    html_out: Annotated[
        Path | None, opt("--html FILE", "HTML file to write (default DIR/report.html).")
    ] = None,
    md_out: Annotated[
        Path | None,
        opt("--md FILE", "Markdown file to write (default DIR/report.md; figures/ beside it)."),
    ] = None,
    compare_to: Annotated[
        str,
        opt(
            "--compare-to METHOD",
            "Reference method of the paired, seed-by-seed comparison (default dlfd).",
        ),
    ] = DEFAULT_REFERENCE,
    force: Annotated[bool, opt("--force", "Replace output files that dlfd did not write.")] = False,
) -> None:
    """Build the benchmark report from DIR/results.json and the run records it names.

    Main table (mean ± std over seeds with the 95% t-interval of the mean, best per column
    marked, retrain as the reference row), the published MUFAC numbers beside it for MUFAC,
    the stronger attacks when they were run, a paired comparison of every method with
    --compare-to seed by seed (mean difference, 95% bootstrap interval, wins/ties/losses,
    Wilcoxon p, "decided" or "not decided"), loss distributions, NoMUS vs wall time, DLFD's
    forgetting-score trace and 2-D feature projections; one self-contained HTML file (opens
    offline) and a Markdown version.
    """
    html_path = html_out if html_out is not None else folder / "report.html"
    md_path = md_out if md_out is not None else folder / "report.md"
    figures = [md_path.parent / "figures" / f"{name}.png" for name in FIGURE_NAMES]
    inputs = [folder / RESULTS_FILE, *sorted(folder.glob("seed-*/*.json"))]
    with claimed([html_path, md_path, *figures], "report", inputs=inputs, force=force):
        result = build_report(folder, html_path=html_path, md_path=md_path, compare_to=compare_to)
    print_fitted(out, rich_table(main_table(result.records, digits=3, sep="±")))
    for line in result.paired_lines:
        out.print(Text(line))
    err.print(f"wrote {result.html} (self-contained) and {result.markdown}")
