"""``dlfd report``: a benchmark folder's JSON -> tables, figures, one HTML file, one Markdown file.

Only ``DIR/results.json`` and the run records it names are read (never a model or an image),
and only inside ``DIR``. Every record is checked (:func:`validate_bench_record`) before use, so a
malformed folder ends in one :class:`ConfigError` naming the file, record and field.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dlfd import pages as plots
from dlfd.bench.records import (
    MAX_RECORD_BYTES,
    RESULTS_FILE,
    RUN_FORMAT,
    finite_number,
    validate_bench_record,
)
from dlfd.errors import ConfigError
from dlfd.io import read_json_file
from dlfd.pages import Figure, Page, PageTable, md_text, write_figures
from dlfd.report import paired
from dlfd.report.tables import (
    aggregate,
    as_mapping,
    attacks_table,
    label,
    main_table,
    method_order,
    per_example_table,
    published_table,
    runs_table,
    settings_table,
)

#: The method whose forgetting-score trace is drawn.
TRACE_METHOD = "dlfd"

#: Every figure the report may write (as figures/NAME.png beside the Markdown page).
FIGURE_NAMES = ("losses", "paired", "nomus_time", "dlfd_trace", "features", "epsilons")

Details = dict[tuple[str, int], dict[str, Any]]


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote and the main table it printed."""

    html: Path | None
    markdown: Path | None
    figures: dict[str, Path]
    main: PageTable
    records: list[dict[str, Any]]
    #: The paired comparison with the reference method (None: the reference did not run).
    comparison: paired.Comparison | None = None
    #: Its sentences, or the one-line note saying why there is none.
    paired_lines: tuple[str, ...] = ()


def load_results(folder: Path) -> list[dict[str, Any]]:
    """The records of ``folder/results.json``, each checked with :func:`validate_bench_record`;
    a missing, unreadable, non-JSON or empty file, or a malformed record (named by its 0-based
    index: ``.../results.json record 3: ...``), raises :class:`ConfigError`."""
    path = Path(folder) / RESULTS_FILE
    if not os.path.lexists(path):
        raise ConfigError(f"{path} not found: run `dlfd bench --out {folder}` first")
    data = read_json_file(path, RESULTS_FILE, error=ConfigError)
    if not isinstance(data, list):
        raise ConfigError(f"{path} is not a list of bench records (method, seed, metrics)")
    if not data:
        raise ConfigError(f"{path} holds no finished run")
    return [validate_bench_record(record, f"{path} record {k}") for k, record in enumerate(data)]


def run_file_path(folder: Path, run_file: str, where: str) -> Path:
    """The real path of the run record ``run_file`` (relative to ``folder``, in POSIX form);
    an absolute path, ``..`` or one that resolves (links followed) outside ``folder`` raises
    :class:`ConfigError` naming ``where``: a results file never makes the report read elsewhere.
    """
    shown = repr(run_file) if len(run_file) <= 80 else repr(run_file[:77]) + "..."
    if "\x00" in run_file:
        raise ConfigError(f"{where}: run_file {shown} is not a valid file name")
    relative = PurePosixPath(run_file)
    if relative.is_absolute() or os.path.isabs(run_file):
        raise ConfigError(
            f"{where}: run_file {shown} is an absolute path; it must name a file inside {folder}"
        )
    if ".." in relative.parts:
        raise ConfigError(f"{where}: run_file {shown} leaves the results folder (..)")
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(Path(folder) / relative))
    if real == root or not real.is_relative_to(root):
        raise ConfigError(f"{where}: run_file {shown} resolves outside {folder} (to {real})")
    return real


def load_details(folder: Path, records: Sequence[Mapping[str, Any]]) -> Details:
    """Each run's ``details`` from its run record (``run_file``; none when absent). A run file
    that exists but cannot be used raises :class:`ConfigError` rather than being skipped, so a
    damaged folder is noticed, not drawn with runs missing."""
    folder = Path(folder)
    details: Details = {}
    for index, record in enumerate(records):
        run_file = record.get("run_file")
        if run_file is None:
            continue
        where = f"{folder / RESULTS_FILE} record {index}"
        if not isinstance(run_file, str) or not run_file:
            raise ConfigError(f"{where}: run_file must be a non-empty string")
        real = run_file_path(folder, run_file, where)
        if not os.path.lexists(real):
            continue
        shown = folder / run_file
        full = read_json_file(real, "run file", limit=MAX_RECORD_BYTES, error=ConfigError)
        if not isinstance(full, dict) or full.get("format") != RUN_FORMAT:
            raise ConfigError(f"run file {shown} is not a dlfd bench run record ({RUN_FORMAT})")
        validate_bench_record(full, f"run file {shown}")
        details[(str(record["method"]), int(record["seed"]))] = full.get("details") or {}
    return details


def load_per_example(folder: Path, records: Sequence[Mapping[str, Any]]) -> Details:
    """Each scored run's per-example entry (``per_example_file``) under the rules of
    :func:`run_file_path`; an entry that is missing or not an object is left out."""
    entries: Details = {}
    for k, record in enumerate(records):
        name = record.get("per_example_file")
        if not isinstance(name, str) or not name:
            continue
        path = run_file_path(folder, name, f"{RESULTS_FILE} record {k}")
        if not path.exists():
            continue
        entry = read_json_file(path, "per-example file", limit=MAX_RECORD_BYTES, error=ConfigError)
        if isinstance(entry, dict):
            entries[(str(record["method"]), int(record["seed"]))] = entry
    return entries


def epsilon_figure(records: Sequence[Mapping[str, Any]], entries: Details) -> Figure | None:
    """Histogram of the per-example epsilons per method, pooled over seeds (None without)."""
    panels: dict[str, list[float]] = {}
    buckets: list[float] = []
    for method in method_order(records):
        for (name, _), entry in sorted(entries.items()):
            if name != method:
                continue
            epsilons = entry.get("epsilons")
            if isinstance(epsilons, list):
                panels.setdefault(label(method), []).extend(
                    v for v in epsilons if finite_number(v) is not None
                )
            edges = entry.get("buckets")
            if isinstance(edges, list) and not buckets:
                buckets = [float(v) for v in edges if finite_number(v) is not None]
    if not panels:
        return None
    return Figure(
        "epsilons",
        plots.epsilon_histograms(panels, buckets),
        "Per-example epsilon of every forget sample (unlearned vs retrained models), pooled "
        "over seeds, with the challenge's bucket edges (dotted): the more mass at the left, "
        "the closer the method is to retraining sample by sample.",
    )


def figures_of(records: Sequence[Mapping[str, Any]], details: Details) -> list[Figure]:
    """The report's figures (each only when its data is present)."""
    methods = method_order(records)
    seeds = sorted({int(r["seed"]) for r in records})
    figures = []

    def run_detail(method: str, seed: int, key: str) -> Any:
        return as_mapping(details.get((method, seed))).get(key)

    losses: dict[str, dict[str, list[float]]] = {}
    for method in methods:
        pooled: dict[str, list[float]] = {}
        for seed in seeds:
            for split, values in as_mapping(run_detail(method, seed, "losses")).items():
                if isinstance(values, list):
                    pooled.setdefault(str(split), []).extend(values)
        if pooled:
            losses[label(method)] = pooled
    if losses:
        figures.append(
            Figure(
                "losses",
                plots.loss_histograms(losses),
                "Per-sample losses of forget (red), unseen (blue, never seen) and retain (grey) "
                f"samples, pooled over seeds {', '.join(map(str, seeds))}: a model has forgotten "
                "when its red curve lies on its blue one"
                + (", as for the retrained reference." if label("retrain") in losses else "."),
            )
        )
    stats = aggregate(records, ("wall_s", "nomus"))
    points = [
        {
            "label": label(m),
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
                "NoMUS against wall time (mean ± std over seeds): up and to the left is better"
                + (
                    "; retrain's time is its training."
                    if any(p["label"] == label("retrain") for p in points)
                    else "."
                ),
            )
        )
    traces = {
        f"seed {seed}": readings
        for seed in seeds
        if isinstance(readings := run_detail(TRACE_METHOD, seed, "readings"), list) and readings
    }
    if traces:
        traced = next((r for r in records if r["method"] == TRACE_METHOD), {})
        params = as_mapping(as_mapping(traced.get("config")).get("params"))
        thresholds = {
            str(k): number
            for k, v in params.items()
            if "threshold" in str(k) and (number := finite_number(v)) is not None
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
        label(m): projection
        for m in methods
        if isinstance(projection := run_detail(m, first, "projection"), Mapping) and projection
    }
    if panels:
        figures.append(
            Figure(
                "features",
                plots.projections(panels),
                f"Penultimate features of forget (red) and unseen (blue) samples, seed {first}, "
                "projected on each model's two main axes (PCA)"
                + (
                    ": before unlearning (original) and after (each method)."
                    if label("original") in panels and len(panels) > 1
                    else ", one panel per model."
                ),
            )
        )
    return figures


def label_shift_warnings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The records' label-shift warnings (``label_shift.warning``), each distinct text once
    with the seeds it holds for."""
    seeds_of: dict[str, set[int]] = {}
    for record in records:
        warning = as_mapping(record.get("label_shift")).get("warning")
        if isinstance(warning, str) and warning.strip():
            seeds_of.setdefault(warning.strip(), set()).add(int(record["seed"]))
    return [
        f"Label shift ({'seed' if len(seeds) == 1 else 'seeds'} "
        f"{', '.join(map(str, sorted(seeds)))}): {warning}"
        for warning, seeds in seeds_of.items()
    ]


def _intro(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short facts about the benchmark, as text lines."""
    first = records[0]
    config = as_mapping(first.get("config"))
    recipe = as_mapping(config.get("recipe"))
    size_list = as_mapping(config.get("input")).get("size")
    size = (
        "x".join(str(v) for v in size_list if v is not None) if isinstance(size_list, list) else ""
    )
    sizes = as_mapping(first.get("split_sizes"))
    hardware = as_mapping(first.get("hardware"))
    versions = as_mapping(first.get("versions"))
    request = as_mapping(first.get("forget_request"))
    forgotten = (
        f"forget request {request.get('file', '?')} ({request.get('entries', '?')} entries, "
        f"sha256 {str(request.get('sha256', '?'))[:12]})"
        if request
        else "the scenario's own forget set"
    )
    return [
        f"Scenario {first.get('dataset')} (options {config.get('scenario_options') or 'default'})"
        f"; split sizes {', '.join(f'{k} {v}' for k, v in sizes.items())}; forgotten: "
        f"{forgotten} (forget set sha256 {str(config.get('forget_sha256', '?'))[:12]}).",
        f"Original and retrained: {recipe.get('model')} at {size or '?'}, {recipe.get('epochs')} "
        f"epochs, batch {recipe.get('batch_size')}, lr {recipe.get('lr')}; NoMUS lambda "
        f"{config.get('lambda')}.",
        f"Hardware: {hardware.get('platform', '?')}, {hardware.get('cpu_threads', '?')} CPU "
        f"threads{', ' + str(hardware['cuda_device']) if 'cuda_device' in hardware else ''}; dlfd "
        f"{versions.get('dlfd', '?')}, torch {versions.get('torch', '?')}.",
    ]


def build_report(
    folder: str | Path,
    *,
    html_path: str | Path | None = None,
    md_path: str | Path | None = None,
    compare_to: str = paired.DEFAULT_REFERENCE,
) -> Report:
    """Write the HTML and Markdown reports of benchmark ``folder`` (defaults: inside it).

    ``compare_to``: the reference method of the paired comparison; when it did not run, the
    section is one line saying so."""
    folder = Path(folder)
    records = load_results(folder)
    html_out = Path(html_path) if html_path is not None else folder / "report.html"
    md_out = Path(md_path) if md_path is not None else folder / "report.md"
    main = main_table(records)
    figures = figures_of(records, load_details(folder, records))
    figures.append(epsilon_figure(records, load_per_example(folder, records)))
    comparison = paired.compare_all(records, compare_to)
    if comparison is not None:
        paired_lines = paired.sentences(comparison)
        if panels := paired.figure_panels(comparison):  # none without common seeds
            caption = (
                f"Per-seed differences method - {comparison.reference} (dots, one per seed; same "
                "original model and split), their mean (diamond) with its 95% bootstrap interval, "
                "and zero (dashed): an interval clear of the dashed line on the better side is a "
                "decided difference."
            )
            figures.append(Figure("paired", plots.paired_differences(panels), caption))
    else:
        paired_lines = [paired.absent_note(records, compare_to)]
    figures = [f for f in figures if f is not None]
    created = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    methods = ", ".join(method_order(records))

    page = Page(f"Unlearning benchmark: {records[0].get('dataset')}")
    page.text(f"Built {created} from {len(records)} run records ({methods}).")
    page.bullets(_intro(records))
    for line in label_shift_warnings(records):
        page.add(
            [f"> **Warning.** {md_text(line)}", ""],
            f"<p class='warning'><strong>Warning.</strong> {html.escape(line)}</p>",
        )
    figure_paths = write_figures(figures, md_out.parent / "figures")

    def add_figures(paired_part: bool) -> None:
        for figure in figures:
            if (figure.name == "paired") == paired_part:
                relative = figure_paths[figure.name].relative_to(md_out.parent).as_posix()
                page.figure(figure, relative)

    for table in (main, published_table(records), attacks_table(records)):
        if table is not None:
            page.table(table)
    page.heading(f"Paired comparison with {compare_to}")
    if comparison is not None:
        page.bullets(paired_lines)
        page.table(paired.paired_table(comparison), level=3)
        add_figures(paired_part=True)
    else:
        page.text(paired_lines[0], css="note")
    add_figures(paired_part=False)
    for table in (per_example_table(records), settings_table(records), runs_table(records)):
        if table is not None:
            page.table(table)
    page.write(md_out, html_out)
    return Report(html_out, md_out, figure_paths, main, records, comparison, tuple(paired_lines))
