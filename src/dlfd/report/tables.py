"""Tables of a benchmark, built from its JSON records only.

The main table shows each method's mean ± std over seeds (std with ddof=1) and the 95%
Student-t interval of that mean, ``mean ± t(0.975, n-1) * std / sqrt(n)``: a t-interval rather
than a bootstrap one, as with the usual 3 to 5 seeds a percentile bootstrap interval is much
too narrow. "Best" per column (among the unlearning methods) is defined in :func:`_score`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dlfd.bench.records import TIMINGS, finite_number
from dlfd.methods.base import format_setting
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.metrics.uncertainty import mean_std
from dlfd.pages import PageTable

REFERENCE_ROWS = ("original", "retrain")
ROW_LABELS = {"retrain": "retrain (reference)"}
MAIN_COLUMNS: tuple[str, ...] = (*MAIN_METRICS, "wall_s")
#: Keys read from the record itself rather than from its ``metrics``.
TOP_LEVEL = (*TIMINGS, "per_example_score", "forgetting_quality")
_HIGHER = {"test_acc", "retain_acc", "unseen_acc", "val_acc", "nomus"}
_LOWER = {"forgetting_score", "avg_gap", "wall_s", "train_s", "monitor_s"}
#: Confidence level of the main table's intervals.
LEVEL = 0.95
_ATTACK_KEY = re.compile(r"^(?P<name>.+)_auc$")

#: The published MUFAC table (benchmark README; DLFD's own notebook for dlfd), by our keys.
PUBLISHED_MUFAC: dict[str, tuple[str, float, float, float]] = {
    "original": ("Original", 0.5951, 0.2136, 0.5839),
    "retrain": ("Retrained", 0.4880, 0.0445, 0.6995),
    "finetune": ("Fine-tuning", 0.6055, 0.2129, 0.5898),
    "cf_k": ("CF-3", 0.5900, 0.2126, 0.5824),
    "neggrad": ("NegGrad", 0.4048, 0.0485, 0.6539),
    "unsir": ("UNSIR (stage 2)", 0.5925, 0.1990, 0.5972),
    "scrub": ("SCRUB", 0.5984, 0.1415, 0.6577),
    "neggrad_plus": ("Advanced NegGrad", 0.5633, 0.0953, 0.6863),
    "dlfd": ("DLFD (official notebook)", 0.6197, 0.0279, 0.7819),
}

Stat = tuple[float, float, int]
Stats = dict[str, Stat]


def label(method: str) -> str:
    return ROW_LABELS.get(method, method)


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one (absent or null fields)."""
    return value if isinstance(value, Mapping) else {}


def method_order(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Methods in table order: original, retrain, then the others as they first appear."""
    seen = list(dict.fromkeys(str(r["method"]) for r in records))
    return [m for m in REFERENCE_ROWS if m in seen] + [m for m in seen if m not in REFERENCE_ROWS]


def value_of(record: Mapping[str, Any], key: str) -> float | None:
    """A metric of a record (:data:`TOP_LEVEL` keys from the record itself); None if absent or
    not a finite number."""
    return finite_number(
        record.get(key) if key in TOP_LEVEL else as_mapping(record.get("metrics")).get(key)
    )


def aggregate(records: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> dict[str, Stats]:
    """``{method: {key: (mean, std, n seeds)}}`` over the records that have the key."""
    keys = list(keys)
    out: dict[str, Stats] = {}
    for method in method_order(records):
        out[method] = {}
        for key in keys:
            values = [
                v for r in records if r["method"] == method if (v := value_of(r, key)) is not None
            ]
            if values:
                out[method][key] = (*mean_std(values), len(values))
    return out


def fmt(stat: Stat | None, digits: int = 4, sep: str = " ± ") -> str:
    """``mean ± std`` (one seed: the mean alone); ``-`` when absent."""
    if stat is None:
        return "-"
    mean, std, n = stat
    return f"{mean:.{digits}f}{sep}{std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def t_interval(stat: Stat, level: float = LEVEL) -> tuple[float, float] | None:
    """``mean ± t((1+level)/2, n-1) * std / sqrt(n)``; None below 2 seeds."""
    mean, std, n = stat
    if n < 2:
        return None
    from scipy.stats import t

    half = float(t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def fmt_interval(stat: Stat | None, digits: int = 4, sep: str = " ± ") -> str:
    """:func:`fmt`, then the :func:`t_interval` with one decimal fewer (at least one)."""
    text = fmt(stat, digits, sep)
    interval = t_interval(stat) if stat is not None else None
    if interval is None:
        return text
    places = max(digits - 1, 1)
    return f"{text} [{interval[0]:.{places}f}, {interval[1]:.{places}f}]"


def _score(key: str, reference: Stats | None) -> Callable[[float], float] | None:
    """Higher is better after this transform; None: the column has no best."""
    if key in _HIGHER:
        return lambda v: v
    if key in _LOWER or key.startswith(("gap_", "kl_")):
        return lambda v: -v
    if key == "mia_acc":
        return lambda v: -abs(v - 0.5)
    if key == "forget_acc" and reference and key in reference:
        target = reference[key][0]
        return lambda v: -abs(v - target)
    return None


def best_cells(
    stats: Mapping[str, Stats], methods: Sequence[str], keys: Sequence[str], first_col: int = 1
) -> set[tuple[int, int]]:
    """(row, column) of the best mean of each key among non-reference methods (ties: all)."""
    marked: set[tuple[int, int]] = set()
    candidates = [m for m in methods if m not in REFERENCE_ROWS]
    if len(candidates) < 2:
        return marked
    for c, key in enumerate(keys):
        score = _score(key, stats.get("retrain"))
        if score is None:
            continue
        scored = {m: score(stats[m][key][0]) for m in candidates if key in stats[m]}
        if len(scored) < 2:
            continue
        top = max(scored.values())
        for m, s in scored.items():
            if math.isclose(s, top, rel_tol=1e-12, abs_tol=1e-12):
                marked.add((methods.index(m), c + first_col))
    return marked


def main_table(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[str] = MAIN_COLUMNS,
    *,
    digits: int = 4,
    sep: str = " ± ",
) -> PageTable:
    """One row per method: :func:`fmt_interval` of each column some record has (``digits``
    decimals, timings one; ``sep`` between mean and std)."""
    present = [c for c in columns if any(value_of(r, c) is not None for r in records)]
    stats = aggregate(records, present)
    methods = method_order(records)
    runs = {m: sum(1 for r in records if r["method"] == m) for m in methods}
    most = max(runs.values())
    rows = [
        [
            label(m) + (f" (n={runs[m]})" if runs[m] < most else ""),
            *(
                fmt_interval(stats[m].get(c), 1 if c.endswith("_s") else digits, sep)
                for c in present
            ),
        ]
        for m in methods
    ]
    seeds = sorted({int(r["seed"]) for r in records})
    dataset = ", ".join(sorted({str(r.get("dataset")) for r in records}))
    spread = "mean ± std [95% interval] over seeds " if len(seeds) > 1 else "seed "
    return PageTable(
        title=f"{dataset}: {spread}{', '.join(map(str, seeds))}",
        header=["method", *present],
        rows=rows,
        best=best_cells(stats, methods, present),
        note="Cells: mean ± std over seeds [95% Student-t interval of the mean, "
        "mean ± t(0.975, n-1)·std/√n; wide with few seeds, as it should be]. "
        "Best unlearning method per column in bold (the original and the retrained "
        "reference are not candidates): higher test/retain/unseen accuracy and NoMUS; lower "
        "forgetting score, avg_gap and wall time; mia_acc closest to 0.5; forget_acc closest "
        "to the retrained reference. wall_s: seconds of the unlearning call (monitoring "
        "included); retrain: its training time; original: 0. (n=K): a method with fewer "
        "finished seeds than the others.",
    )


def published_table(records: Sequence[Mapping[str, Any]]) -> PageTable | None:
    """Our MUFAC numbers next to the published ones (only for the ``mufac`` scenario)."""
    if not records or any(r.get("dataset") != "mufac" for r in records):
        return None
    keys = ("test_acc", "forgetting_score", "nomus")
    stats = aggregate(records, keys)
    rows = []
    for method in method_order(records):
        name, *published = PUBLISHED_MUFAC.get(method, ("", math.nan, math.nan, math.nan))
        row = [f"{method} ({name})" if name else method]
        for key, value in zip(keys, published, strict=True):
            row += [fmt(stats[method].get(key)), "-" if math.isnan(value) else f"{value:.4f}"]
        rows.append(row)
    return PageTable(
        title="MUFAC: these runs next to the published table",
        header=["method", *(f"{k} ({who})" for k in keys for who in ("ours", "published"))],
        rows=rows,
        note="Published: MUFAC benchmark README (ResNet-18 from scratch); DLFD: its official "
        "notebook with its own split use. Splits, recipes and selection rules differ where the "
        "recipe file says so; compare trends, not the last digit.",
    )


def attacks_table(records: Sequence[Mapping[str, Any]]) -> PageTable | None:
    """The stronger attacks (``dlfd bench --attacks``, metric keys ``<name>_auc``): accuracy /
    AUC / TPR at 1% FPR of each, and the bootstrap intervals of mia_acc and NoMUS; means over
    seeds. None if absent."""
    names = list(
        dict.fromkeys(
            match["name"]
            for r in records
            for key in as_mapping(r.get("metrics"))
            if (match := _ATTACK_KEY.match(str(key)))
        )
    )
    intervals = [
        k for k in ("mia_acc", "nomus") if any(value_of(r, f"{k}_ci_low") for r in records)
    ]
    if not names and not intervals:
        return None
    parts = ("accuracy", "auc", "tpr_at_1pct_fpr")
    keys = [f"{n}_{part}" for n in names for part in parts]
    keys += [f"{k}_ci_{side}" for k in intervals for side in ("low", "high")]
    stats = aggregate(records, keys)

    def mean(method: str, key: str) -> str:
        stat = stats[method].get(key)
        return "-" if stat is None else f"{stat[0]:.3f}"

    rows = [
        [
            label(method),
            *(" / ".join(mean(method, f"{n}_{p}") for p in parts) for n in names),
            *(
                f"[{mean(method, f'{k}_ci_low')}, {mean(method, f'{k}_ci_high')}]"
                for k in intervals
            ),
        ]
        for method in method_order(records)
    ]
    return PageTable(
        title="Stronger attacks: accuracy / AUC / TPR at 1% FPR (means over seeds)",
        header=["method", *names, *(f"{k} 95% CI" for k in intervals)],
        rows=rows,
        note="Forget (members) vs unseen (non-members); 0.5 accuracy and AUC is chance. "
        "Intervals: bootstrap over samples, averaged over seeds.",
    )


def settings_table(records: Sequence[Mapping[str, Any]]) -> PageTable:
    """Each method's resolved settings and how its returned state was chosen (first seed)."""
    rows = []
    for method in method_order(records):
        first = min((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        params = as_mapping(as_mapping(first.get("config")).get("params"))
        selected = first.get("selected")
        settings = ", ".join(f"{k}={format_setting(v)}" for k, v in params.items()) or "-"
        rows.append([label(method), settings, "" if selected is None else str(selected)])
    return PageTable(
        title="Settings of each method (and the state it returned, first seed)",
        header=["method", "settings", "returned state"],
        rows=rows,
    )


def runs_table(records: Sequence[Mapping[str, Any]]) -> PageTable:
    """Every run: its seed, headline numbers and timings."""
    keys = ("test_acc", "forget_acc", "mia_acc", "forgetting_score", "nomus", "avg_gap")
    timings = ("wall_s", "monitor_s", "eval_s")
    order = {m: k for k, m in enumerate(method_order(records))}

    def one(record: Mapping[str, Any], key: str, digits: int) -> str:
        value = value_of(record, key)
        return fmt(None if value is None else (value, 0.0, 1), digits)

    rows = [
        [
            label(r["method"]),
            str(r["seed"]),
            *(one(r, k, 4) for k in keys),
            *(one(r, k, 1) for k in timings),
        ]
        for r in sorted(records, key=lambda r: (order[r["method"]], r["seed"]))
    ]
    return PageTable(title="Every run", header=["method", "seed", *keys, *timings], rows=rows)


def per_example_table(records: Sequence[Mapping[str, Any]]) -> PageTable | None:
    """The per-example epsilon score (``dlfd bench --per-example N``) and its forgetting
    quality, as the main table; None when no record has it."""
    if not any(value_of(r, "per_example_score") is not None for r in records):
        return None
    table = main_table(records, ("per_example_score", "forgetting_quality"))
    return dataclasses.replace(
        table,
        title="Per-example epsilon score (NeurIPS 2023 unlearning challenge metric): "
        + table.title,
        note="forgetting_quality: mean bucket points of the forget samples' per-example "
        "epsilon (1 = indistinguishable from retraining); per_example_score: forgetting "
        "quality times the retain and test accuracy ratios to the retrained models. "
        "The original row scores the originals themselves; retrain has no score.",
    )
