"""Pages and figures from tables and numbers, shared by ``dlfd report`` and the audit's pages.

Pages: a self-contained HTML file (figures embedded as base64 PNG) and a Markdown file with its
figures in a folder beside it, both with dlfd's output markers (:mod:`dlfd.outputs`). Every text
from a user (method names, options, identities, file names) goes through :func:`md_text` into
Markdown and :func:`html.escape` into HTML, so no page carries raw HTML or Markdown from a record.

Figures are drawn from numbers only; forget red, unseen blue, retain grey, so forgetting shows as
the red curve moving onto the blue one. Names in a figure go through :func:`plain` (``$...$`` is
not mathtext), with ``text.usetex`` off (:func:`literal_text`), and legends take their entries
explicitly (a label starting with ``_`` is shown, not dropped).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dlfd import __version__
from dlfd.bench.records import finite_number
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
    "font-size:90%}p.verdict{display:block;clear:both;font-size:110%;margin:1em 0 1.5em;"
    "padding:8px 12px;border-left:6px solid #888;background:#f6f6f6}"
    "p.verdict-fail{border-color:#c00;background:#fdecea}strong.verdict-fail{color:#b00}"
    "p.verdict-pass{border-color:#2a7d2a;background:#e8f5e8}strong.verdict-pass{color:#1e6b1e}"
    "p.verdict-inconclusive{border-color:#e69500;background:#fff4e0}"
    "strong.verdict-inconclusive{color:#a05a00}code{background:#f0f0f0;padding:0 3px}"
)

#: Cells up to this many characters (numbers, mean ± std) never wrap.
SHORT_CELL = 24

#: Parts of a longer cell that never wrap inside: ``mean ± std`` and an interval ``[low, high]``.
_UNBROKEN = re.compile(r"\S+ ± \S+|\[[^\[\]]{0,60}\]")


def escape_with(pattern: re.Pattern[str], text: str, wrap: Callable[[str], str]) -> str:
    """``text`` HTML-escaped, each match of ``pattern`` (its group 1 if it has one, else the
    whole match) escaped and wrapped by ``wrap`` (which adds markup only)."""
    parts, last = [], 0
    for match in pattern.finditer(text):
        parts.append(html.escape(text[last : match.start()]))
        parts.append(wrap(html.escape(match.group(1 if pattern.groups else 0))))
        last = match.end()
    parts.append(html.escape(text[last:]))
    return "".join(parts)


def _cell_html(text: str) -> str:
    """``text`` escaped, its ``mean ± std`` and ``[low, high]`` parts kept on one line each."""
    if len(text) <= SHORT_CELL:
        return html.escape(text)
    return escape_with(_UNBROKEN, text, lambda part: f"<span class='nw'>{part}</span>")


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
    """``text`` as literal Markdown inline text: no raw HTML (entities), no code, emphasis,
    link, image or cell end (backslash escapes), one line (a cell or a heading stays one)."""
    text = str(text)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in _MD_ACTIVE:
        text = text.replace(char, "\\" + char)
    return " ".join(text.splitlines()) if text else text


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes whose ``Software`` chunk marks them as dlfd's (``fig`` left open)."""
    buffer = io.BytesIO()
    software = {"Software": f"{PNG_SOFTWARE} {__version__}"}
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata=software)
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


def write_figures(figures: list[Figure], folder: Path) -> dict[str, Path]:
    """Write each figure as ``folder/<name>.png`` (atomically)."""
    paths = {figure.name: folder / f"{figure.name}.png" for figure in figures}
    for figure in figures:
        atomic_write_bytes(paths[figure.name], figure.png)
    return paths


class Page:
    """A page built once and written twice: Markdown lines and HTML body parts side by side."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.md = [f"# {md_text(title)}", ""]
        self.body = [f"<h1>{html.escape(title)}</h1>"]

    def add(self, md: list[str], body: str) -> None:
        self.md += md
        self.body.append(body)

    def text(self, text: str, *, css: str = "") -> None:
        """A paragraph (HTML class ``css``, if given)."""
        self.add(
            [md_text(text), ""], f"<p{f' class={css!r}' if css else ''}>{html.escape(text)}</p>"
        )

    def bullets(self, lines: list[str]) -> None:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        self.add([*(f"- {md_text(line)}" for line in lines), ""], f"<ul>{items}</ul>")

    def heading(self, text: str, level: int = 2) -> None:
        self.add(
            [f"{'#' * level} {md_text(text)}", ""], f"<h{level}>{html.escape(text)}</h{level}>"
        )

    def table(self, table: PageTable, level: int = 2) -> None:
        self.add(md_table(table, heading="#" * level), html_table(table, heading=f"h{level}"))

    def figure(self, figure: Figure, relative: str) -> None:
        """An image ``relative`` to the Markdown page; embedded in the HTML one."""
        caption = html.escape(figure.caption)
        encoded = base64.b64encode(figure.png).decode()
        self.add(
            [f"![{md_text(figure.caption)}]({urllib.parse.quote(relative)})", ""],
            f"<figure><img alt='{caption}' src='data:image/png;base64,{encoded}'>"
            f"<figcaption>{caption}</figcaption></figure>",
        )

    def write(self, md_path: Path, html_path: Path) -> None:
        """Both pages, atomically, each with dlfd's marker."""
        atomic_write_text(md_path, "\n".join([MD_MARK, "", *self.md]).rstrip("\n") + "\n")
        atomic_write_text(
            html_path,
            f"<!DOCTYPE html><html><head><meta charset='utf-8'>{HTML_MARK}<title>"
            f"{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f"{''.join(self.body)}</body></html>",
        )


COLORS = {"forget": "#d62728", "unseen": "#1f77b4", "retain": "#7f7f7f", "test": "#2ca02c"}
LOSS_SPLITS = ("retain", "unseen", "forget")

_F = TypeVar("_F", bound=Callable[..., Any])


def plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: every ``$`` escaped, so no part of it is read
    as mathtext (an unknown ``\\command`` between dollars would crash drawing)."""
    return str(text).replace("$", "\\$")


def literal_text(func: _F) -> _F:
    """Run a figure-drawing function with ``text.usetex`` off (a user's matplotlibrc may turn
    it on, and LaTeX would read names as markup)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        pyplot()
        with matplotlib.rc_context({"text.usetex": False}):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def legend(ax: Any, entries: Sequence[tuple[Any, object]], **kwargs: Any) -> None:
    """A legend of exactly ``entries`` (artist, label), labels drawn literally; matplotlib's
    automatic legend would hide a label starting with ``_``."""
    if entries:
        ax.legend([h for h, _ in entries], [plain(label) for _, label in entries], **kwargs)


def _finite(values: object, points: bool = False) -> np.ndarray:
    """The finite numbers of ``values`` as a 1-D array, or with ``points`` its (n, 2) finite
    points (malformed input, nulls and points with a null coordinate dropped)."""
    try:
        array = np.asarray(values if values is not None else [], dtype=np.float64)
        array = array.reshape(-1, 2) if points else array.ravel()
    except (TypeError, ValueError):
        return np.zeros((0, 2) if points else 0)
    return array[np.isfinite(array).all(axis=1)] if points else array[np.isfinite(array)]


def _grid(
    n: int, ncols: int | None, width: float, height: float, *, sharex: bool = False
) -> tuple[object, list, int]:
    """A figure with ``n`` panels in rows of ``ncols`` (default 4); unused axes hidden."""
    plt = pyplot()
    ncols = max(1, min(n, ncols or 4))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, sharex=sharex
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n], ncols


def _finish(fig: object) -> bytes:
    plt = pyplot()
    fig.tight_layout()  # type: ignore[attr-defined]
    data = figure_png(fig)
    plt.close(fig)
    return data


@literal_text
def loss_histograms(
    panels: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]], *, ncols: int | None = None
) -> bytes:
    """Per-sample loss distributions (log10) of :data:`LOSS_SPLITS` for each model: one panel
    per model, the same bins everywhere so panels compare."""
    finite = {
        n: {s: _finite(v) for s, v in by.items() if s in LOSS_SPLITS} for n, by in panels.items()
    }
    logs = {
        name: {s: np.log10(np.clip(v, 0.0, None) + 1e-6) for s, v in by_split.items() if len(v)}
        for name, by_split in finite.items()
    }
    every = [v for by_split in logs.values() for v in by_split.values()]
    low = min((float(v.min()) for v in every), default=-6.0)
    high = max((float(v.max()) for v in every), default=1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 26)
    fig, axes, columns = _grid(len(panels), ncols, 4.0, 3.2, sharex=True)
    entries: list[tuple[Any, str]] = []
    for k, (ax, (name, by_split)) in enumerate(zip(axes, logs.items(), strict=True)):
        for split in LOSS_SPLITS:
            if split in by_split:
                step = {"density": True, "histtype": "step", "linewidth": 1.8}
                _, _, patches = ax.hist(by_split[split], bins=bins, color=COLORS.get(split), **step)
                if k == 0:
                    entries.append((patches[0], split))
        ax.set_title(plain(name))
        ax.set_xlabel("log10 per-sample loss")
        ax.tick_params(labelbottom=True)
        if k % columns == 0:
            ax.set_ylabel("density")
    if axes:
        legend(axes[0], entries)
    return _finish(fig)


@literal_text
def nomus_vs_time(points: Sequence[Mapping[str, float | str]]) -> bytes:
    """NoMUS against wall time (points: ``label``, ``wall``, ``wall_std``, ``nomus``,
    ``nomus_std``); the x axis is linear below 1 s, as an original model costs 0 s."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for point in points:
        label = str(point["label"])
        color = {"original": "#7f7f7f", "retrain": "#000000"}.get(label.split(" ")[0])
        x, y = float(point["wall"]), float(point["nomus"])
        bars = {"xerr": float(point["wall_std"]), "yerr": float(point["nomus_std"])}
        ax.errorbar(x, y, fmt="o", capsize=3, color=color, **bars)
        ax.annotate(plain(label), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("symlog", linthresh=1.0)
    retrain = any(str(point["label"]).split(" ")[0] == "retrain" for point in points)
    ax.set_xlabel(
        "wall time of the unlearning call (s" + ("; retrain: its training)" if retrain else ")")
    )
    ax.set_ylabel("NoMUS (higher is better)")
    ax.grid(alpha=0.3)
    return _finish(fig)


def _positions(wheres: Sequence[str]) -> tuple[list[float], str]:
    """x positions of monitor readings: the batch number in ``where`` when every reading names
    one, else the reading's index."""
    numbers = [re.findall(r"\d+", w) for w in wheres]
    if wheres and all(numbers) and all("batch" in w for w in wheres):
        return [float(n[-1]) for n in numbers], "batch"
    return [float(i + 1) for i in range(len(wheres))], "monitored state"


@literal_text
def forgetting_trace(
    traces: Mapping[str, Sequence[Mapping[str, object]]],
    thresholds: Mapping[str, float] | None = None,
    title: str = "",
) -> bytes:
    """The forgetting score at each monitored state (one line per seed), with thresholds.

    Readings without a finite ``forgetting_score`` (or that are not objects) are left out."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    xlabel = "monitored state"
    entries: list[tuple[Any, object]] = []
    for label, readings in traces.items():
        kept = [
            (str(r.get("where", "")), score)
            for r in readings
            if isinstance(r, Mapping)
            and (score := finite_number(r.get("forgetting_score"))) is not None
        ]
        x, xlabel = _positions([where for where, _ in kept])
        pairs = [(a, b) for a, (_, b) in zip(x, kept, strict=True) if math.isfinite(a)]
        if not pairs:
            continue
        (line,) = ax.plot(*zip(*pairs, strict=True), marker=".", linewidth=1.2)
        entries.append((line, label))
    for k, (name, value) in enumerate((thresholds or {}).items()):
        ax.axhline(value, color="black", linestyle=("--", ":", "-.")[k % 3], linewidth=0.9)
        ax.annotate(plain(name), (0.01, value), xycoords=("axes fraction", "data"), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("forgetting score |mia - 0.5|")
    if title:
        ax.set_title(plain(title))
    legend(ax, entries, fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig)


@literal_text
def projections(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], *, ncols: int | None = None
) -> bytes:
    """2-D projections of penultimate features of forget (red) and unseen (blue) samples, one
    panel per model (each fitted on that model's features)."""
    fig, axes, _ = _grid(len(panels), ncols, 3.6, 3.4)
    entries: list[tuple[Any, str]] = []
    for k, (ax, (name, sides)) in enumerate(zip(axes, panels.items(), strict=True)):
        for split in ("unseen", "forget"):
            points = _finite(sides.get(split) if isinstance(sides, Mapping) else None, points=True)
            dots = ax.scatter(points[:, 0], points[:, 1], s=9, alpha=0.6, color=COLORS[split])
            if k == 0:
                entries.append((dots, split))
        ax.set_title(plain(name))
        ax.set_xticks([])
        ax.set_yticks([])
    if axes:
        legend(axes[0], entries, fontsize=8)
    return _finish(fig)


@literal_text
def paired_differences(
    panels: Mapping[str, Mapping[str, Mapping[str, Any]]], *, ncols: int | None = 3
) -> bytes:
    """Per-seed differences to a reference method, one panel per metric (``{title: {method:
    {"differences", "mean", "low", "high"}}}``, no interval when None): a dot per seed, the
    mean (black diamond) with its interval, and the zero line."""
    from matplotlib.ticker import MaxNLocator

    rows = max((len(methods) for methods in panels.values()), default=1)
    fig, axes, _ = _grid(len(panels), ncols, 4.6, 0.9 + 0.38 * rows)
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        names = list(methods)
        for row, name in enumerate(names):
            y = len(names) - 1 - row
            entry = methods[name]
            values = _finite(entry.get("differences"))
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(values, y + jitter[: len(values)], s=14, alpha=0.7, color="#1f77b4")
            mean = finite_number(entry.get("mean"))
            low, high = finite_number(entry.get("low")), finite_number(entry.get("high"))
            if mean is not None:
                xerr = None
                if low is not None and high is not None:
                    xerr = [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]
                ax.errorbar(mean, y, xerr=xerr, fmt="D", color="black", capsize=3, markersize=5)
        ax.axvline(0.0, color="#d62728", linewidth=1.0, linestyle="--")
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([plain(n) for n in reversed(names)], fontsize=8)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_title(plain(title), fontsize=9)
        ax.set_xlabel("difference to the reference", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.grid(axis="x", alpha=0.3)
    return _finish(fig)


@literal_text
def epsilon_histograms(panels: Mapping[str, Sequence[float]], buckets: Sequence[float]) -> bytes:
    """Per method, the distribution of the forget samples' per-example epsilon (pooled over
    seeds), with the challenge's bucket edges as dotted lines: mass at the left is forgotten."""
    values = {name: _finite(v) for name, v in panels.items()}
    top = max([*buckets, *(float(v.max()) for v in values.values() if len(v))], default=1.0)
    bins = np.linspace(0.0, top if top > 0 else 1.0, 31)
    fig, axes, columns = _grid(len(values), None, 4.0, 3.0, sharex=True)
    for k, (ax, (name, eps)) in enumerate(zip(axes, values.items(), strict=True)):
        if len(eps):
            ax.hist(eps, bins=bins, color=COLORS.get("forget"), alpha=0.8)
        for edge in buckets:
            ax.axvline(edge, color="grey", linestyle=":", linewidth=1)
        ax.set_title(plain(name))
        ax.set_xlabel("per-example epsilon")
        ax.tick_params(labelbottom=True)
        if k % columns == 0:
            ax.set_ylabel("forget samples")
    return _finish(fig)
