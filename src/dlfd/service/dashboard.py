"""The service's dashboard: one self-contained HTML page of a service state.

Requests by status, the lineage of model versions, a table of every version (requests honoured,
audit verdict, key numbers, weights hash) and the forgetting trace across versions as an inline
SVG chart. Nothing is loaded from elsewhere (no external CSS, script, font or image), and every
text of the state (title, scenario, method, settings, store, dates, verdicts) goes through
:func:`html.escape`, as a request or a setting may carry any text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dlfd.bench.records import finite_number
from dlfd.outputs import HTML_MARK
from dlfd.pages import COLORS, STYLE
from dlfd.service import STATUSES

#: Numbers of the versions table (key, header) and the ones drawn in the trace, with colours.
TABLE_METRICS = (
    ("forget_acc", "forget acc"),
    ("retain_acc", "retain acc"),
    ("test_acc", "test acc"),
    ("mia_acc", "MIA acc"),
    ("nomus", "NoMUS"),
)
TRACE = {
    "forget_acc": COLORS["forget"],
    "retain_acc": COLORS["retain"],
    "test_acc": COLORS["test"],
    "mia_acc": "#9467bd",
}
LABELS = dict(TABLE_METRICS)
MISSING = "–"
#: Request ids listed in a cell before the rest goes to the cell's title only.
SHOWN_IDS = 5

_CSS = (
    "div.wide{overflow-x:auto;max-width:100%}div.wide table{margin-bottom:0.5em}"
    "table.versions td{white-space:nowrap}"
    "p{overflow-wrap:anywhere}ol.lineage{list-style:none;padding:0;display:flex;flex-wrap:wrap;"
    "gap:4px 10px}ol.lineage li{white-space:nowrap}ol.lineage a{text-decoration:none}"
    "span.current{font-size:80%;padding:0 4px;border:1px solid #1f77b4;border-radius:3px;"
    "color:#1f77b4;margin-left:4px}tr.current td{background:#eef5fc}"
    "span.badge{padding:1px 6px;border-radius:3px;font-size:90%;white-space:nowrap}"
    "span.verdict-pass{background:#e8f5e8;color:#1e6b1e;border:1px solid #2a7d2a}"
    "span.verdict-fail{background:#fdecea;color:#b00;border:1px solid #c00}"
    "span.verdict-inconclusive{background:#fff4e0;color:#a05a00;border:1px solid #e69500}"
    "span.verdict-none{color:#555;border:1px dashed #999}"
    "ul.counts{display:flex;flex-wrap:wrap;gap:6px 18px;list-style:none;padding:0}"
    "figure.trace svg{width:100%;max-width:760px;height:auto;display:block}"
)


def _e(value: object) -> str:
    """``value`` as escaped HTML text (None as the missing mark)."""
    return MISSING if value is None else html.escape(str(value))


def _number(value: object) -> str:
    """``value`` to 3 decimals, or the missing mark (None, NaN, not a number)."""
    number = finite_number(value)
    return MISSING if number is None else f"{number:.3f}"


def _method_line(state: Mapping[str, Any]) -> str:
    """What new versions are made with, its settings and whether they are audited."""
    settings = ", ".join(f"{k}={v}" for k, v in (state.get("settings") or {}).items())
    method = f"{state.get('method')}" + (f" ({settings})" if settings else "")
    audit = (
        "versions are audited against a retrained reference"
        if state.get("audit")
        else "versions are not audited"
    )
    return f"Scenario {_e(state.get('scenario'))}; method {_e(method)}; {audit}."


def _counts(requests: Mapping[str, Any]) -> str:
    items = "".join(
        f"<li class='count-{s}'>{s}: <strong>{_e(requests.get(s, 0))}</strong></li>"
        for s in STATUSES
    )
    return f"<h2>Requests</h2><ul class='counts'>{items}</ul>"


def _lineage(versions: Sequence[Mapping[str, Any]]) -> str:
    """The chain of versions: ``→ vN`` after its parent, ``vP → vN`` when it branches off."""
    items, previous = [], None
    for k, v in enumerate(versions):
        number, parent = v.get("number"), v.get("parent")
        link = f"<a href='#version-{_e(number)}'>v{_e(number)}</a>"
        if parent is None:
            text, title = link, f"v{number}, the original"
        else:
            text = ("" if parent == previous else f"v{_e(parent)} ") + f"→ {link}"
            title = f"v{number}, made from v{parent}"
        if k == len(versions) - 1:
            text += "<span class='current'>current</span>"
        items.append(f"<li id='lineage-v{_e(number)}' title='{_e(title)}'>{text}</li>")
        previous = number
    return f"<h2>Lineage</h2><ol class='lineage'>{''.join(items)}</ol>"


def _verdict(verdict: object) -> str:
    if verdict is None:
        return "<span class='badge verdict-none'>not audited</span>"
    known = verdict in ("pass", "inconclusive", "fail")
    return f"<span class='badge verdict-{verdict if known else 'other'}'>{_e(verdict)}</span>"


def _requests_cell(count: object, ids: Sequence[Any]) -> str:
    """The number of requests honoured and their first ids (all of them in the title)."""
    ids = list(ids or [])
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS]) + (" …" if len(ids) > SHOWN_IDS else "")
    full = ", ".join(str(i) for i in ids)
    number = _e(len(ids) if count is None else count)
    return f"<td title='{_e(full)}'>{number}" + (f"; {_e(shown)}" if ids else "") + "</td>"


def _row(v: Mapping[str, Any], current: bool) -> str:
    number, parent, sha = v.get("number"), v.get("parent"), v.get("weights_sha256")
    metrics = v.get("metrics") or {}
    label = f"v{_e(number)}" + ("<span class='current'>current</span>" if current else "")
    link = "" if parent is None else f"<a href='#version-{_e(parent)}'>v{_e(parent)}</a>"
    cells = [
        f"<td>{label}</td>",
        f"<td>{link or MISSING}</td>",
        f"<td class='short'>{_e(v.get('created_at'))}</td>",
        _requests_cell(v.get("request_count"), v.get("requests") or []),
        f"<td>{_e(v.get('forgotten_entries'))}</td>",
        f"<td>{_e(v.get('forget_images'))}</td>",
        f"<td>{_verdict(v.get('verdict'))}</td>",
        *(f"<td>{_number(metrics.get(key))}</td>" for key, _ in TABLE_METRICS),
        f"<td><code title='{_e(sha)}'>{_e(str(sha)[:12])}</code></td>" if sha else "<td>–</td>",
    ]
    css = " class='current'" if current else ""
    return f"<tr id='version-{_e(number)}'{css}>{''.join(cells)}</tr>"


def _table(versions: Sequence[Mapping[str, Any]]) -> str:
    header = [
        "version", "parent", "created", "requests (count; ids)", "people forgotten (total)",
        "images forgotten (total)", "verdict", *(h for _, h in TABLE_METRICS), "weights sha256",
    ]  # fmt: skip
    rows = "".join(_row(v, k == len(versions) - 1) for k, v in enumerate(versions))
    head = "".join(f"<th>{h}</th>" for h in header)
    return (
        f"<h2>Versions</h2><div class='wide'><table class='versions'><thead><tr>{head}</tr>"
        f"</thead><tbody>{rows}</tbody></table></div>"
    )


def _trace_svg(points: list[tuple[int, Mapping[str, Any]]]) -> str:
    """Trace metrics against the version number as an SVG line chart (lines break at gaps)."""
    width, height, left, right, top, bottom = 720, 340, 56, 16, 16, 76
    xs = [n for n, _ in points]
    values = [finite_number(m.get(k)) for _, m in points for k in TRACE]
    low = min([0.0, *(y for y in values if y is not None)])
    high = max([1.0, *(y for y in values if y is not None)])
    x0, x1 = (min(xs), max(xs)) if max(xs) > min(xs) else (xs[0] - 0.5, xs[0] + 0.5)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return top + (high - y) / (high - low) * (height - top - bottom)

    base = height - bottom
    parts = [f"<rect x='{left}' y='{top}' width='{width - left - right}' height='{base - top}' "
             "fill='#fff' stroke='#999'/>"]  # fmt: skip
    for k in range(6):
        y = low + (high - low) * k / 5
        parts.append(f"<line x1='{left}' x2='{width - right}' y1='{py(y):.1f}' y2='{py(y):.1f}' "
                     f"stroke='#eee'/><text x='{left - 6}' y='{py(y) + 4:.1f}' "
                     f"text-anchor='end'>{y:.2f}</text>")  # fmt: skip
    step = max(1, math.ceil(len(xs) / 12))
    for x in xs[::-1][::step]:
        parts.append(f"<line x1='{px(x):.1f}' x2='{px(x):.1f}' y1='{base}' y2='{base + 5}' "
                     f"stroke='#333'/><text x='{px(x):.1f}' y='{base + 18}' "
                     f"text-anchor='middle'>v{x}</text>")  # fmt: skip
    parts.append(f"<text x='{(left + width - right) / 2}' y='{base + 36}' "
                 "text-anchor='middle'>model version</text>")  # fmt: skip
    for k, (key, color) in enumerate(TRACE.items()):
        runs: list[list[tuple[int, float]]] = [[]]
        for x, metrics in points:
            y = finite_number(metrics.get(key))
            if y is None:
                runs.append([])
            else:
                runs[-1].append((x, y))
                parts.append(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{color}'>"
                             f"<title>v{x} {LABELS[key]} {y:.3f}</title></circle>")  # fmt: skip
        for run in runs:
            line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            if len(run) > 1:
                parts.append(f"<polyline points='{line}' fill='none' stroke='{color}' "
                             "stroke-width='2'/>")  # fmt: skip
        lx = left + 160 * k
        parts.append(f"<line x1='{lx}' x2='{lx + 24}' y1='{height - 12}' y2='{height - 12}' "
                     f"stroke='{color}' stroke-width='3'/><text x='{lx + 30}' "
                     f"y='{height - 8}'>{LABELS[key]}</text>")  # fmt: skip
    return (
        f"<svg class='trace' role='img' aria-label='forgetting trace across versions' "
        f"viewBox='0 0 {width} {height}' font-size='12' font-family='sans-serif'>"
        f"{''.join(parts)}</svg>"
    )


def _evaluated(metrics: Mapping[str, Any]) -> bool:
    """Whether ``metrics`` holds a finite number drawn in the trace."""
    return any(finite_number(metrics.get(k)) is not None for k in TRACE)


def _trace(versions: Sequence[Mapping[str, Any]]) -> str:
    """The forgetting trace figure, or a sentence when no version has been evaluated."""
    points = [
        (int(v["number"]), m if isinstance(m := v.get("metrics"), Mapping) else {})
        for v in versions
    ]
    first = next((k for k, (_, m) in enumerate(points) if _evaluated(m)), None)
    if first is None:
        return "<h2>Forgetting trace</h2><p class='note'>No version has been evaluated yet.</p>"
    caption = (
        "Forget, retain and test accuracy and MIA accuracy of each version from the first "
        "evaluated one (a gap: a version without that number): forgetting shows as the red "
        "(forget) curve falling while retain and test hold."
    )
    return (
        f"<h2>Forgetting trace</h2><figure class='trace'>{_trace_svg(points[first:])}"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def render_dashboard(state: Mapping[str, Any]) -> str:
    """The dashboard page (one self-contained HTML document) of a service state."""
    title = str(state.get("title") or "dlfd service")
    versions = list(state.get("versions") or [])
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='setup'>{_method_line(state)}</p>",
        f"<p class='note'>Store <code>{_e(state.get('store'))}</code>; generated at "
        f"{_e(state.get('generated_at'))}.</p>",
        _counts(state.get("requests") or {}),
        _lineage(versions),
        _table(versions),
        _trace(versions),
    ]
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{HTML_MARK}"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{STYLE}{_CSS}</style></head><body>"
        f"{''.join(body)}</body></html>"
    )
