"""The human-readable side of an audit: figures, a Markdown page and a self-contained HTML page.

Built only from the certificate and the models' outputs; no raw image is drawn or embedded,
and people appear only under the ids the dataset gave them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from dlfd.metrics import SplitOutputs, per_sample_loss
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.report.pages import (
    Figure,
    PageTable,
    figure_png,
    html_figure,
    html_page,
    html_table,
    md_figure,
    md_table,
    pyplot,
    write_figures,
    write_text,
)
from dlfd.report.plots import loss_histograms

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


def people_figure(people: list[dict[str, Any]]) -> bytes:
    """Mean exposure of each forgotten person's photos, per model (0.5 = like a stranger)."""
    plt = pyplot()
    names = [p["person"] for p in people]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 3.2))
    for k, model in enumerate(MODEL_ORDER):
        ax.bar(x + (k - 1) * 0.27, [p["scores"][model] for p in people], width=0.27, label=model)
    ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, names, rotation=60 if len(names) > 12 else 0)
    ax.set_ylabel("exposure (share of strangers\nwith a higher loss)")
    ax.set_ylim(0, 1)
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    data = figure_png(fig)
    plt.close(fig)
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def _tables(cert: dict[str, Any]) -> list[PageTable]:
    """(title, header, rows) of every table of the page."""
    tables = []
    keys = MAIN_METRICS
    tables.append(
        (
            "Protocol metrics",
            ["model", *keys, "mia_acc CI", "nomus CI"],
            [
                [
                    m,
                    *(_fmt(cert["protocol"][m].get(k, float("nan"))) for k in keys),
                    _fmt(cert["intervals"][m]["mia_acc"]),
                    _fmt(cert["intervals"][m]["nomus"]),
                ]
                for m in MODEL_ORDER
            ],
        )
    )
    rows = []
    for name, attack in cert["attacks"].items():
        cells = [name]
        for m in MODEL_ORDER:
            summary = attack[m]
            cells.append(f"{summary['accuracy']:.3f} / {summary['auc']:.3f}")
        cells += [
            _fmt(attack["unlearned_interval"]),
            _fmt(attack["excess_over_reference"]),
            attack["verdict"].upper(),
        ]
        rows.append(cells)
    tables.append(
        (
            "Membership attacks (accuracy / AUC; verdict: unlearned within tolerance of reference)",
            ["attack", *MODEL_ORDER, "unlearned acc. CI", "excess over reference", "verdict"],
            rows,
        )
    )
    if cert.get("lira"):
        lira = cert["lira"]
        tables.append(
            (
                "Per-example likelihood-ratio attack (LiRA)",
                ["quantity", "value"],
                [[k, _fmt(v)] for k, v in lira.items()],
            )
        )
    tables.append(
        (
            "Distance to the retrained reference",
            ["quantity", "value"],
            [[k, _fmt(v)] for k, v in cert["divergence_to_reference"].items()],
        )
    )
    tables.append(
        (
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
        (
            "Photos the attacker is most sure about (unlearned model)",
            ["image", "person", "exposure"],
            [[e["image"], e["person"], _fmt(e["score"])] for e in cert["most_exposed"]],
        )
    )
    return [PageTable(title, header, rows) for title, header, rows in tables]


def write_pages(
    cert: dict[str, Any], outputs: dict[str, dict[str, SplitOutputs]], task: str, out_dir: Path
) -> dict[str, Path]:
    """Write ``figures/*.png``, ``audit.md`` and a self-contained ``audit.html``."""
    figures = [
        Figure(
            "losses",
            loss_figure(outputs, task),
            "Per-sample losses: forget (red) vs unseen (blue) vs retain",
        ),
        Figure(
            "people",
            people_figure(cert["people"]),
            "Forgotten people, before and after unlearning",
        ),
    ]
    write_figures(figures, out_dir / "figures")
    title = f"Unlearning audit: {cert['scenario']['name']}"
    sha = {name: model["weights_sha256"][:16] for name, model in cert["models"].items()}
    scenario = cert["scenario"]
    intro = (
        f"**Verdict: {cert['summary']}**\n\nModels: original `{sha['original']}`, unlearned "
        f"`{sha['unlearned']}`, reference `{sha['reference']}`; forget list "
        f"`{scenario['forget_sha256'][:16]}` ({scenario['sizes']['forget']} photos). Intervals: "
        f"{cert['settings']['confidence_level']:.0%} bootstrap over {cert['settings']['n_boot']} "
        "rounds; small splits make attack accuracies noisy."
    )
    md = [f"# {title}", "", intro, ""]
    body = [f"<h1>{html.escape(title)}</h1>", "<p>" + html.escape(intro).replace("**", "") + "</p>"]
    for figure in figures:
        md += md_figure(figure, f"figures/{figure.name}.png")
        body.append(html_figure(figure))
    for table in _tables(cert):
        md += md_table(table)
        body.append(html_table(table))
    paths = {"markdown": out_dir / "audit.md", "html": out_dir / "audit.html"}
    write_text(paths["markdown"], "\n".join(md))
    write_text(paths["html"], html_page(title, body))
    return paths
