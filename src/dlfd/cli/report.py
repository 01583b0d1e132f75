"""``dlfd report``: tables, figures, one self-contained HTML file and a Markdown file, built
only from a ``dlfd bench`` folder's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from dlfd.bench.records import RESULTS_FILE
from dlfd.cli.app import app, err, out
from dlfd.cli.common import claimed, opt
from dlfd.report import PageTable, build_report, main_table
from dlfd.report.build import FIGURE_NAMES
from dlfd.report.paired import DEFAULT_REFERENCE


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
    out.print(rich_table(main_table(result.records, digits=3, sep="±")))
    for line in result.paired_lines:
        out.print(Text(line))
    err.print(f"wrote {result.html} (self-contained) and {result.markdown}")
