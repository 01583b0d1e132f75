"""Pages from tables and figures: one self-contained HTML file (figures embedded as base64 PNG,
no external reference) and a Markdown file whose figures sit in a folder beside it.

Shared by ``dlfd report`` and the audit's pages. Every text that comes from a user (method
names, options, identities, file names) goes through :func:`md_text` on its way into Markdown
and through :func:`html.escape` on its way into HTML, so neither page carries raw HTML or
Markdown from a record. The pages carry dlfd's output markers (:mod:`dlfd.outputs`).
"""

from __future__ import annotations

import base64
import html
import io
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlfd import __version__
from dlfd.io import atomic_write_bytes, atomic_write_text
from dlfd.outputs import HTML_MARK, MD_MARK, PNG_SOFTWARE

STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child"
    "{text-align:left}td.short{white-space:nowrap}td.best{font-weight:bold;background:#e6f4e6}"
    "span.nw{white-space:nowrap}p.warning{background:#fff4e0;border-left:4px solid #e69500;"
    "padding:6px 10px}img{max-width:100%}"
    "figure{margin:1em 0 2em}figcaption{color:#444;font-size:90%}p.note{color:#444;"
    "font-size:90%}"
)

#: Cells up to this many characters (numbers, mean ± std) never wrap.
SHORT_CELL = 24

#: Parts of a longer cell that never wrap inside: ``mean ± std`` and an interval ``[low, high]``.
_UNBROKEN = re.compile(r"\S+ ± \S+|\[[^\[\]]{0,60}\]")


def _cell_html(text: str) -> str:
    """``text`` escaped, its ``mean ± std`` and ``[low, high]`` parts kept on one line each."""
    if len(text) <= SHORT_CELL:
        return html.escape(text)
    parts, last = [], 0
    for match in _UNBROKEN.finditer(text):
        parts.append(html.escape(text[last : match.start()]))
        parts.append(f"<span class='nw'>{html.escape(match.group())}</span>")
        last = match.end()
    parts.append(html.escape(text[last:]))
    return "".join(parts)


@dataclass
class PageTable:
    """A table of text cells; ``best`` holds the (row, column) cells to emphasise."""

    title: str
    header: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""


@dataclass
class Figure:
    """A PNG figure with its file stem (for the Markdown folder) and caption."""

    name: str
    png: bytes
    caption: str


#: Characters a Markdown text escapes with a backslash: inline code, emphasis, links, images,
#: table cells (``\\`` first, so an escape cannot be undone).
_MD_ACTIVE = ("\\", "`", "*", "[", "]", "|")


def md_text(text: object) -> str:
    """``text`` as literal Markdown inline text: ``&``, ``<`` and ``>`` become HTML entities
    (no raw HTML gets through), the characters that start code, emphasis, links or images or
    end a table cell are backslash-escaped, and line breaks become spaces (a cell or a heading
    stays one line)."""
    text = str(text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in _MD_ACTIVE:
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines()) if text else text


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes whose ``Software`` chunk marks it as dlfd's (the figure
    is left open)."""
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=dpi,
        bbox_inches="tight",
        metadata={"Software": f"{PNG_SOFTWARE} {__version__}"},
    )
    return buffer.getvalue()


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def md_table(table: PageTable, *, heading: str = "##") -> list[str]:
    """Markdown lines of ``table`` (best cells in bold; every text through :func:`md_text`)."""

    def cell(r: int, c: int, text: str) -> str:
        text = md_text(text)
        return f"**{text}**" if (r, c) in table.best and text else text

    lines = [f"{heading} {md_text(table.title)}", ""] if table.title else []
    lines += [
        "| " + " | ".join(md_text(h) for h in table.header) + " |",
        "|" + "---|" * len(table.header),
        *(
            "| " + " | ".join(cell(r, c, t) for c, t in enumerate(row)) + " |"
            for r, row in enumerate(table.rows)
        ),
        "",
    ]
    if table.note:
        lines += [md_text(table.note), ""]
    return lines


def html_table(table: PageTable, *, heading: str = "h2") -> str:
    """HTML of ``table`` (best cells get class ``best``)."""

    def cell(r: int, c: int, text: str) -> str:
        classes = ["best"] * ((r, c) in table.best) + ["short"] * (len(text) <= SHORT_CELL)
        css = f" class='{' '.join(classes)}'" if classes else ""
        return f"<td{css}>{_cell_html(text)}</td>"

    parts = [f"<{heading}>{html.escape(table.title)}</{heading}>"] if table.title else []
    parts.append(
        "<table><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
        + "</tr></thead><tbody>"
        + "".join(
            "<tr>" + "".join(cell(r, c, t) for c, t in enumerate(row)) + "</tr>"
            for r, row in enumerate(table.rows)
        )
        + "</tbody></table>"
    )
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    return "".join(parts)


def html_figure(figure: Figure) -> str:
    encoded = base64.b64encode(figure.png).decode()
    caption = html.escape(figure.caption)
    return (
        f"<figure><img alt='{caption}' src='data:image/png;base64,{encoded}'>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def html_page(title: str, body: list[str]) -> str:
    """A complete, self-contained HTML document (dlfd's marker in its head)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{HTML_MARK}<title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def write_figures(figures: list[Figure], folder: Path) -> dict[str, Path]:
    """Write each figure as ``folder/<name>.png`` (atomically)."""
    paths = {}
    for figure in figures:
        path = folder / f"{figure.name}.png"
        atomic_write_bytes(path, figure.png)
        paths[figure.name] = path
    return paths


def md_figure(figure: Figure, relative: str) -> list[str]:
    """Markdown lines of an image ``relative`` to the page, its caption as the alt text."""
    return [f"![{md_text(figure.caption)}]({urllib.parse.quote(relative)})", ""]


def md_page(lines: list[str]) -> str:
    """A Markdown document of ``lines`` whose first line is dlfd's marker."""
    return "\n".join([MD_MARK, "", *lines]).rstrip("\n") + "\n"


def write_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path
