"""The human-readable side of an audit: figures, a Markdown page and a self-contained HTML page.

Built only from the certificate and the models' outputs; no raw image is drawn or embedded,
and people appear only under the ids the dataset gave them. Names (scenario, people, images,
options) are text from the user's data: they go through :func:`md_text` into Markdown,
:func:`html.escape` into HTML and :func:`plain` into figures, so none is read as markup.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np

from dlfd.metrics import SplitOutputs, per_sample_loss
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.pages import (
    Figure,
    Page,
    PageTable,
    escape_with,
    figure_png,
    legend,
    literal_text,
    loss_histograms,
    md_text,
    plain,
    pyplot,
    write_figures,
)

MODEL_ORDER = ("original", "unlearned", "reference")


def loss_figure(outputs: dict[str, dict[str, SplitOutputs]], task: str) -> bytes:
    """Per-sample loss distributions of forget, unseen and retain for each model: forgetting
    shows as the red (forget) curve moving onto the blue (never seen) one."""
    panels = {
        name: {
            split: per_sample_loss(out.logits, out.labels, task)
            for split, out in outputs[name].items()
            if split in ("retain", "unseen", "forget")
        }
        for name in MODEL_ORDER
    }
    return loss_histograms(panels, ncols=3)


#: Bars at most this high (exposure axis 0..1) are drawn with a marker and their value.
ZERO_BAR = 0.005


def mark_zero_bars(ax: Any, bars: Any) -> list[Any]:
    """Make bars of (about) zero height visible: a short thick line in the bar's colour on the
    axis and its value above it. Returns the value labels drawn."""
    labels = []
    for rect in bars:
        height = rect.get_height()
        if not np.isfinite(height) or abs(height) > ZERO_BAR:
            continue
        x = rect.get_x() + rect.get_width() / 2
        color = rect.get_facecolor()
        ax.plot(
            [rect.get_x(), rect.get_x() + rect.get_width()],
            [0, 0],
            color=color,
            linewidth=3,
            solid_capstyle="butt",
            clip_on=False,
            zorder=3,
        )
        labels.append(
            ax.annotate(
                f"{height:.1f}",
                (x, 0),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color=color,
            )
        )
    return labels


@literal_text
def people_figure(people: list[dict[str, Any]]) -> bytes:
    """Mean exposure of each forgotten person's photos, per model (0.5 = like a stranger);
    people's ids are drawn literally (:func:`plain`)."""
    plt = pyplot()
    names = [plain(p["person"]) for p in people]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 3.2))
    entries = []
    for k, model in enumerate(MODEL_ORDER):
        bars = ax.bar(x + (k - 1) * 0.27, [p["scores"][model] for p in people], width=0.27)
        mark_zero_bars(ax, bars)
        entries.append((bars, model))
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, names, rotation=60 if len(names) > 12 else 0)
    ax.set_ylabel("exposure (share of strangers\nwith a higher loss)")
    ax.set_ylim(0, 1)
    legend(ax, entries, ncol=3, fontsize=8)
    fig.tight_layout()
    data = figure_png(fig)
    plt.close(fig)
    return data


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def _tables(cert: dict[str, Any]) -> list[PageTable]:
    """Every table of the page."""
    tables = [
        PageTable(
            "Protocol metrics",
            ["model", *MAIN_METRICS, "mia_acc CI", "nomus CI"],
            [
                [
                    m,
                    *(_fmt(cert["protocol"][m].get(k, float("nan"))) for k in MAIN_METRICS),
                    _fmt(cert["intervals"][m]["mia_acc"]),
                    _fmt(cert["intervals"][m]["nomus"]),
                ]
                for m in MODEL_ORDER
            ],
        )
    ]
    rows = []
    for name, attack in cert["attacks"].items():
        rows.append([
            name,
            *("n/a" if (a := attack[m]) is None else f"{a['accuracy']:.3f} / {a['auc']:.3f}"
              for m in MODEL_ORDER),
            _fmt(attack["unlearned_interval"]),
            _fmt(attack["excess_over_reference"]),
            attack["verdict"].upper(),
        ])  # fmt: skip
        if (published := attack.get("published")) is not None:
            rows[-1].append(" / ".join(f"{published[m]['accuracy']:.3f}" for m in MODEL_ORDER))
    matching = cert.get("matching")
    header = ["attack", *MODEL_ORDER, "unlearned acc. CI", "excess over reference", "verdict"]
    if any("published" in attack for attack in cert["attacks"].values()):
        header.append("published acc. (O / U / R)")
    title = "Membership attacks (accuracy / AUC; verdict: unlearned within tolerance of reference)"
    if matching is not None:
        title = (
            f"Membership attacks on the label-matched forget/unseen samples "
            f"({matching['per_side']} per side; accuracy / AUC; verdict: unlearned within "
            "tolerance of reference); published = unmatched, all forget vs all unseen"
        )
    tables.append(PageTable(title, header, rows))
    utility = cert.get("utility")
    if utility is not None:
        tables.append(
            PageTable(
                f"Utility: accuracy of the unlearned model against the reference (verdict: at "
                f"most {utility['tolerance']:g} below it): {utility['verdict'].upper()}",
                ["accuracy", *MODEL_ORDER, "unlearned - reference", "difference CI", "verdict"],
                [
                    [
                        key,
                        *(_fmt(utility[key][m]) for m in MODEL_ORDER),
                        _fmt(utility[key]["difference"]),
                        _fmt(utility[key]["difference_interval"]),
                        utility[key]["verdict"].upper(),
                    ]
                    for key in ("retain_acc", "test_acc")
                    if key in utility
                ],
            )
        )
    quantities = [("Distance to the retrained reference", cert["divergence_to_reference"])]
    if cert.get("lira"):
        quantities.insert(0, ("Per-example likelihood-ratio attack (LiRA)", cert["lira"]))
    for title, values in quantities:
        tables.append(
            PageTable(title, ["quantity", "value"], [[k, _fmt(v)] for k, v in values.items()])
        )
    tables.append(
        PageTable(
            "Forgotten people: mean exposure of their photos (share of never-seen photos with "
            "a higher loss; 0.5 = like a stranger)",
            ["person", "photos", *MODEL_ORDER],
            [
                [p["person"], str(p["images"]), *(_fmt(p["scores"][m]) for m in MODEL_ORDER)]
                for p in cert["people"]
            ],
        )
    )
    tables.append(
        PageTable(
            "Photos the attacker is most sure about (unlearned model)",
            ["image", "person", "exposure"],
            [[e["image"], e["person"], _fmt(e["score"])] for e in cert["most_exposed"]],
        )
    )
    return tables


_HEX = re.compile(r"[0-9a-fA-F]*")


def _md_code(value: object) -> str:
    """A hash as inline code; anything that is not hexadecimal as escaped plain text (a code
    span shows its content verbatim, so it could not carry escapes)."""
    text = str(value)
    return f"`{text}`" if _HEX.fullmatch(text) else md_text(text)


_CODE = re.compile(r"`([^`\n]+)`")


def inline_html(text: object) -> str:
    """``text`` as HTML with its Markdown code spans (`` `x` ``) as ``<code>``; everything,
    inside a span or not, escaped (no markup from the data is passed through)."""
    return escape_with(_CODE, str(text), lambda code: f"<code>{code}</code>")


def inline_md(text: object) -> str:
    """``text`` as Markdown with its code spans kept as code spans (those without ``<``, ``>``
    or ``&``; others stay escaped text) and every other part through :func:`md_text`."""
    text = " ".join(str(text).splitlines())
    parts, last = [], 0
    for match in _CODE.finditer(text):
        parts.append(md_text(text[last : match.start()]))
        code = match.group(1)
        # a span with markup characters stays escaped text: no raw HTML even in code
        parts.append(f"`{code}`" if not set(code) & set("<>&") else md_text(match.group()))
        last = match.end()
    parts.append(md_text(text[last:]))
    return "".join(parts)


VERDICTS = ("pass", "fail", "inconclusive")


def verdict_parts(cert: dict[str, Any]) -> tuple[str, str]:
    """The overall verdict word (upper case; ``?`` when unknown) and the rest of the summary
    (the summary without its leading ``WORD:``)."""
    summary = str(cert.get("summary", "")).strip()
    word = str(cert.get("verdict", "")).lower()
    head, sep, rest = summary.partition(":")
    if sep and head.strip().lower() in VERDICTS:
        word, summary = head.strip().lower(), rest.strip()
    return (word.upper() if word in VERDICTS else "?"), summary


def verdict_block(cert: dict[str, Any]) -> tuple[list[str], str]:
    """The verdict as its own block: Markdown lines (the word in bold) and HTML (the word in
    ``<strong class='verdict-word verdict-<word>'>`` inside ``<p class='verdict ...'>``)."""
    word, rest = verdict_parts(cert)
    css = f"verdict-{word.lower()}" if word != "?" else "verdict-unknown"
    tail_md = f" — {inline_md(rest)}" if rest else ""
    tail_html = f" — {inline_html(rest)}" if rest else ""
    return (
        [f"**Verdict: {md_text(word)}**{tail_md}", ""],
        f"<p class='verdict {css}'><strong class='verdict-word {css}'>Verdict: "
        f"{html.escape(word)}</strong>{tail_html}</p>",
    )


def warnings(cert: dict[str, Any]) -> list[str]:
    """The lines a reader must see before any number: the label shift between forget and
    unseen, and why the label-matched attacks could not judge membership (older certificates
    have neither)."""
    lines = []
    shift = cert.get("label_shift") or {}
    if shift.get("warning"):
        lines.append(str(shift["warning"]))
    matching = cert.get("matching") or {}
    if matching.get("reason"):
        lines.append(
            f"the membership attacks cannot judge forgetting: {matching['reason']}; their "
            "verdicts are inconclusive"
        )
    return lines


def write_pages(
    cert: dict[str, Any], outputs: dict[str, dict[str, SplitOutputs]], task: str, out_dir: Path
) -> dict[str, Path]:
    """Write ``figures/*.png``, ``audit.md`` and a self-contained ``audit.html``."""
    figures = [
        Figure("losses", loss_figure(outputs, task),
               "Per-sample losses: forget (red) vs unseen (blue) vs retain"),
        Figure("people", people_figure(cert["people"]),
               "Forgotten people, before and after unlearning"),
    ]  # fmt: skip
    write_figures(figures, out_dir / "figures")
    title = f"Unlearning audit: {cert['scenario']['name']}"
    sha = {name: model["weights_sha256"][:16] for name, model in cert["models"].items()}
    scenario = cert["scenario"]
    settings = cert["settings"]

    def facts(code: Any, text: Any) -> str:
        """The models and settings line; ``code`` shows a hash, ``text`` any other value."""
        return (
            f"Models: original {code(sha['original'])}, unlearned {code(sha['unlearned'])}, "
            f"reference {code(sha['reference'])}; forget list "
            f"{code(str(scenario['forget_sha256'])[:16])} ({text(scenario['sizes']['forget'])} "
            f"photos). Intervals: {settings['confidence_level']:.0%} bootstrap over "
            f"{text(settings['n_boot'])} rounds; small splits make attack accuracies noisy."
        )

    def escaped(value: Any) -> str:
        return html.escape(str(value))

    page = Page(title)
    page.add(*verdict_block(cert))
    for warning in warnings(cert):
        page.add(
            [f"> **Warning:** {inline_md(warning)}", ""],
            '<p style="border:2px solid #c60;background:#fff3e0;padding:0.5em">'
            f"<strong>Warning:</strong> {inline_html(warning)}</p>",
        )
    page.add([facts(_md_code, md_text), ""], f"<p>{facts(escaped, escaped)}</p>")
    for figure in figures:
        page.figure(figure, f"figures/{figure.name}.png")
    for table in _tables(cert):
        page.table(table)
    paths = {"markdown": out_dir / "audit.md", "html": out_dir / "audit.html"}
    page.write(paths["markdown"], paths["html"])
    return paths
