"""The human-readable side of an audit: figures, a Markdown page and a self-contained HTML page.

Built only from the certificate and the models' outputs; no raw image is drawn or embedded,
and people appear only under the ids the dataset gave them.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from dlfd.io import atomic_write_bytes, atomic_write_text
from dlfd.metrics import SplitOutputs, per_sample_loss
from dlfd.metrics.protocol import MAIN_METRICS

COLORS = {"forget": "#d62728", "unseen": "#1f77b4", "retain": "#7f7f7f"}
MODEL_ORDER = ("original", "unlearned", "reference")


def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def loss_figure(outputs: dict[str, dict[str, SplitOutputs]], task: str) -> bytes:
    """Per-sample loss distributions of forget, unseen and retain for each model: forgetting
    shows as the red (forget) curve moving onto the blue (never seen) one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    for ax, name in zip(axes, MODEL_ORDER, strict=True):
        for split in ("retain", "unseen", "forget"):
            if split not in outputs[name]:
                continue
            out = outputs[name][split]
            losses = np.log10(per_sample_loss(out.logits, out.labels, task) + 1e-6)
            ax.hist(
                losses,
                bins=25,
                density=True,
                histtype="step",
                linewidth=1.8,
                color=COLORS[split],
                label=split,
            )
        ax.set_title(name)
        ax.set_xlabel("log10 per-sample loss")
    axes[0].set_ylabel("density")
    axes[0].legend()
    fig.tight_layout()
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def people_figure(people: list[dict[str, Any]]) -> bytes:
    """Mean exposure of each forgotten person's photos, per model (0.5 = like a stranger)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def _tables(cert: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
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
    return tables


def write_pages(
    cert: dict[str, Any], outputs: dict[str, dict[str, SplitOutputs]], task: str, out_dir: Path
) -> dict[str, Path]:
    """Write ``figures/*.png``, ``audit.md`` and a self-contained ``audit.html``."""
    figures = {"losses": loss_figure(outputs, task), "people": people_figure(cert["people"])}
    for name, data in figures.items():
        atomic_write_bytes(out_dir / "figures" / f"{name}.png", data)
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
    for name, caption in (
        ("losses", "Per-sample losses: forget (red) vs unseen (blue) vs retain"),
        ("people", "Forgotten people, before and after unlearning"),
    ):
        md += [f"![{caption}](figures/{name}.png)", ""]
        encoded = base64.b64encode(figures[name]).decode()
        body.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,"
            f"{encoded}'><figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    for caption, header, rows in _tables(cert):
        md += [
            f"## {caption}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
        ]
        body.append(
            f"<h2>{html.escape(caption)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr>"
            + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            + "</table>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:"
        "collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:"
        "right}th{background:#f3f3f3}img{max-width:100%}"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    paths = {"markdown": out_dir / "audit.md", "html": out_dir / "audit.html"}
    atomic_write_text(paths["markdown"], "\n".join(md))
    atomic_write_text(paths["html"], page)
    return paths
