"""``dlfd report``: a benchmark folder's JSON -> tables, figures, one HTML file, one Markdown file.

Only ``DIR/results.json`` and the run records it names are read (never a model or an image).
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlfd.bench.records import RESULTS_FILE, read_record
from dlfd.errors import ConfigError
from dlfd.report import plots
from dlfd.report.pages import (
    Figure,
    PageTable,
    html_figure,
    html_page,
    html_table,
    md_figure,
    md_table,
    write_figures,
    write_text,
)
from dlfd.report.tables import (
    ROW_LABELS,
    aggregate,
    attacks_table,
    main_table,
    method_order,
    published_table,
    runs_table,
    settings_table,
)

#: The method whose forgetting-score trace is drawn.
TRACE_METHOD = "dlfd"

Details = dict[tuple[str, int], dict[str, Any]]


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote and the main table it printed."""

    html: Path | None
    markdown: Path | None
    figures: dict[str, Path]
    main: PageTable
    records: list[dict[str, Any]]


def load_results(folder: Path) -> list[dict[str, Any]]:
    """The records of ``folder/results.json``; a missing or malformed file raises."""
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `dlfd bench --out {folder}` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, list) or not all(
        isinstance(r, dict) and {"method", "seed", "metrics"} <= set(r) for r in data
    ):
        raise ConfigError(f"{path} is not a list of bench records (method, seed, metrics)")
    if not data:
        raise ConfigError(f"{path} holds no finished run")
    return data


def load_details(folder: Path, records: Sequence[Mapping[str, Any]]) -> Details:
    """Each run's ``details`` (losses, projection, readings) from its record file, if any."""
    details: Details = {}
    for record in records:
        run_file = record.get("run_file")
        full = read_record(folder / run_file) if isinstance(run_file, str) else None
        if full is not None:
            details[(record["method"], int(record["seed"]))] = full.get("details") or {}
    return details


def _label(method: str) -> str:
    return ROW_LABELS.get(method, method)


def figures_of(records: Sequence[Mapping[str, Any]], details: Details) -> list[Figure]:
    """The report's figures (each only when its data is present)."""
    methods = method_order(records)
    seeds = sorted({int(r["seed"]) for r in records})
    figures = []
    losses: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        pooled: dict[str, list[float]] = {}
        for seed in seeds:
            for split, values in details.get((method, seed), {}).get("losses", {}).items():
                pooled.setdefault(split, []).extend(values)
        if pooled:
            losses[_label(method)] = pooled
    if losses:
        figures.append(
            Figure(
                "losses",
                plots.loss_histograms(losses),
                "Per-sample losses of forget (red), unseen (blue, never seen) and retain (grey) "
                f"samples, pooled over seeds {', '.join(map(str, seeds))}: a model has forgotten "
                "when its red curve lies on its blue one, as for the retrained reference.",
            )
        )
    stats = aggregate(records, ("wall_s", "nomus"))
    points = [
        {
            "label": _label(m),
            "wall": stats[m]["wall_s"][0],
            "wall_std": stats[m]["wall_s"][1],
            "nomus": stats[m]["nomus"][0],
            "nomus_std": stats[m]["nomus"][1],
        }
        for m in methods
        if {"wall_s", "nomus"} <= set(stats[m])
    ]
    if points:
        figures.append(
            Figure(
                "nomus_time",
                plots.nomus_vs_time(points),
                "NoMUS against wall time (mean ± std over seeds): up and to the left is better.",
            )
        )
    traces = {
        f"seed {seed}": details[(TRACE_METHOD, seed)]["readings"]
        for seed in seeds
        if details.get((TRACE_METHOD, seed), {}).get("readings")
    }
    if traces:
        params = next(
            (r.get("config", {}).get("params", {}) for r in records if r["method"] == TRACE_METHOD),
            {},
        )
        thresholds = {
            k: float(v)
            for k, v in params.items()
            if "threshold" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        figures.append(
            Figure(
                "dlfd_trace",
                plots.forgetting_trace(traces, thresholds, title=TRACE_METHOD),
                "DLFD's forgetting score at every monitored state (validation people vs forget "
                "samples), one line per seed, with its thresholds.",
            )
        )
    first = seeds[0]
    panels = {
        _label(m): details[(m, first)]["projection"]
        for m in methods
        if details.get((m, first), {}).get("projection")
    }
    if panels:
        figures.append(
            Figure(
                "features",
                plots.projections(panels),
                f"Penultimate features of forget (red) and unseen (blue) samples, seed {first}, "
                "projected on each model's two main axes (PCA): before unlearning (original) "
                "and after (each method).",
            )
        )
    return figures


def _intro(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short facts about the benchmark, as text lines."""
    first = records[0]
    config = first.get("config", {})
    recipe = config.get("recipe", {})
    size = "x".join(str(v) for v in config.get("input", {}).get("size", [])) or "?"
    sizes = first.get("split_sizes", {})
    hardware = first.get("hardware", {})
    versions = first.get("versions", {})
    lines = [
        f"Scenario {first.get('dataset')} (options {config.get('scenario_options') or 'default'})"
        f"; split sizes {', '.join(f'{k} {v}' for k, v in sizes.items())}.",
        f"Original and retrained: {recipe.get('model')} at {size}, {recipe.get('epochs')} "
        f"epochs, batch {recipe.get('batch_size')}, lr {recipe.get('lr')}; NoMUS lambda "
        f"{config.get('lambda')}.",
        f"Hardware: {hardware.get('platform', '?')}, {hardware.get('cpu_threads', '?')} CPU "
        f"threads{', ' + hardware['cuda_device'] if 'cuda_device' in hardware else ''}; dlfd "
        f"{versions.get('dlfd', '?')}, torch {versions.get('torch', '?')}.",
    ]
    return lines


def build_report(
    folder: str | Path, *, html_path: str | Path | None = None, md_path: str | Path | None = None
) -> Report:
    """Write the HTML and Markdown reports of benchmark ``folder`` (defaults: inside it)."""
    folder = Path(folder)
    records = load_results(folder)
    details = load_details(folder, records)
    html_out = Path(html_path) if html_path is not None else folder / "report.html"
    md_out = Path(md_path) if md_path is not None else folder / "report.md"
    main = main_table(records)
    tables = [main, published_table(records), attacks_table(records)]
    tables += [settings_table(records), runs_table(records)]
    figures = figures_of(records, details)
    title = f"Unlearning benchmark: {records[0].get('dataset')}"
    intro = _intro(records)
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    methods = ", ".join(method_order(records))
    lead = f"Built {created} from {len(records)} run records ({methods})."

    md = [f"# {title}", "", lead, "", *(f"- {line}" for line in intro), ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(lead)}</p><ul>"]
    body += [f"<li>{html.escape(line)}</li>" for line in intro]
    body.append("</ul>")
    figure_dir = md_out.parent / "figures"
    figure_paths = write_figures(figures, figure_dir)
    by_name = {f.name: f for f in figures}

    def add_figure(name: str) -> None:
        figure = by_name.get(name)
        if figure is None:
            return
        relative = figure_paths[name].relative_to(md_out.parent).as_posix()
        md.extend(md_figure(figure, relative))
        body.append(html_figure(figure))

    main_figures = ("losses",)
    for table in tables[:3]:
        if table is not None:
            md.extend(md_table(table))
            body.append(html_table(table))
    for name in main_figures:
        add_figure(name)
    for figure in figures:
        if figure.name not in main_figures:
            add_figure(figure.name)
    for table in tables[3:]:
        if table is not None:
            md.extend(md_table(table))
            body.append(html_table(table))
    write_text(md_out, "\n".join(md))
    write_text(html_out, html_page(title, body))
    return Report(html_out, md_out, figure_paths, main, records)
