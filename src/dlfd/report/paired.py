"""Paired comparison of each method with a reference method, seed by seed.

Every method of a benchmark starts from the same original model and split for a given seed,
so the fair question is not "do the two means differ" but "how does method M do against the
reference R on the same seed". Over the seeds both have, of ``d_s = metric(M, s) - metric(R,
s)``: the mean with a 95% percentile bootstrap interval (seeds resampled, seeded so the report
is reproducible), wins/ties/losses from M's side, the two-sided Wilcoxon signed-rank p-value,
and a verdict: "decided better" when the interval excludes 0 in M's favour *and* the Wilcoxon
test rejects "no difference" at the 5% level, "decided worse" when both speak against M,
otherwise "not decided at N seeds". Both are required because a percentile bootstrap of a mean
over a handful of seeds excludes 0 whenever the few differences share a sign; below 6 seeds
the two-sided Wilcoxon test cannot reach p < 0.05, so nothing is decided there.

Which way is better is defined once, in :data:`BETTER`; metrics with no better direction get
the difference and its interval but no verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlfd.metrics.uncertainty import bootstrap_interval
from dlfd.pages import PageTable
from dlfd.report.tables import label, method_order, value_of

#: The reference method of ``dlfd report`` (``--compare-to``).
DEFAULT_REFERENCE = "dlfd"

#: The headline metrics compared, in table order (each only when some record has it).
HEADLINE_METRICS: tuple[str, ...] = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "mia_acc",
    "forgetting_score",
    "nomus",
    "avg_gap",
    "mia_acc_matched",
    "nomus_matched",
)

#: The metrics the per-method sentences are about (the primary NoMUS, then avg_gap).
SENTENCE_METRICS: tuple[str, ...] = ("nomus", "nomus_matched", "avg_gap")

#: Which way is better, per metric: +1 higher, -1 lower, 0 no direction (no verdict).
BETTER: dict[str, int] = {
    "test_acc": 1,
    "retain_acc": 1,
    "unseen_acc": 1,
    "nomus": 1,
    "nomus_matched": 1,
    "forgetting_score": -1,
    "avg_gap": -1,
    "forget_acc": 0,  # the target is the retrained model's value (judged through avg_gap)
    "mia_acc": 0,  # the target is 0.5 (judged through forgetting_score)
    "mia_acc_matched": 0,
}

#: |d| below this is a tie.
TIE = 1e-12
LEVEL = 0.95
N_BOOT = 2000
BOOT_SEED = 0
#: Below this many seeds a two-sided Wilcoxon test cannot reach p < 0.05 (and a percentile
#: bootstrap interval of the mean is too narrow), so nothing is decided; the sentences say so.
FEW_SEEDS = 6
#: A verdict needs the Wilcoxon p-value below this too.
ALPHA = 0.05


def direction(metric: str) -> int:
    """+1 when higher ``metric`` is better, -1 when lower is, 0 when neither (no verdict)."""
    return BETTER.get(metric, -1 if metric.startswith(("gap_", "kl_")) else 0)


@dataclass(frozen=True)
class Paired:
    """``method`` against ``reference`` on ``metric``, seed by seed; wins/ties/losses from
    ``method``'s side (no direction: higher/equal/lower); ``verdict``: ``better``, ``worse``,
    ``undecided``, ``too few`` (below 2 seeds) or ``no direction``."""

    method: str
    reference: str
    metric: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float | None
    low: float | None
    high: float | None
    wins: int
    ties: int
    losses: int
    p_value: float | None
    verdict: str

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_differences(
    records: Sequence[Mapping[str, Any]], method: str, reference: str, metric: str
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The seeds both methods have ``metric`` on (sorted; per seed, the first record with a
    value) and the per-seed differences ``method - reference``."""

    def per_seed(name: str) -> dict[int, float]:
        values: dict[int, float] = {}
        for record in records:
            seed = int(record["seed"])
            value = value_of(record, metric) if record["method"] == name else None
            if value is not None and seed not in values:
                values[seed] = value
        return values

    mine, theirs = per_seed(method), per_seed(reference)
    seeds = tuple(sorted(set(mine) & set(theirs)))
    return seeds, tuple(mine[s] - theirs[s] for s in seeds)


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of ``differences`` (``|d| < TIE`` counted as 0);
    None below 2 values or when every difference is 0 (nothing to test)."""
    array = np.asarray(differences, dtype=np.float64)
    array = np.where(np.abs(array) < TIE, 0.0, array)
    if array.size < 2 or not np.any(array):
        return None
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(wilcoxon(array, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def compare(
    method: str, reference: str, metric: str, seeds: Sequence[int], differences: Sequence[float]
) -> Paired:
    """The paired statistics of ``differences`` (``method - reference``, one per seed)."""
    sign = direction(metric)
    diffs = tuple(float(d) for d in differences)
    toward = sign if sign else 1  # no direction: count higher / equal / lower
    wins = sum(1 for d in diffs if abs(d) >= TIE and d * toward > 0)
    losses = sum(1 for d in diffs if abs(d) >= TIE and d * toward < 0)
    interval = None
    if len(diffs) >= 2:
        array = np.asarray(diffs, dtype=np.float64)
        interval = bootstrap_interval(np.mean, array, n_boot=N_BOOT, level=LEVEL, seed=BOOT_SEED)
    low, high = interval if interval is not None else (None, None)
    p_value = wilcoxon_p(diffs)
    significant = p_value is not None and p_value < ALPHA
    if interval is None:
        verdict = "too few"
    elif not sign:
        verdict = "no direction"
    elif significant and sign * interval[0] > 0 and sign * interval[1] > 0:
        verdict = "better"
    elif significant and sign * interval[0] < 0 and sign * interval[1] < 0:
        verdict = "worse"
    else:
        verdict = "undecided"
    return Paired(
        method=method,
        reference=reference,
        metric=metric,
        seeds=tuple(int(s) for s in seeds),
        differences=diffs,
        mean=float(np.mean(diffs)) if diffs else None,
        low=low,
        high=high,
        wins=wins,
        ties=len(diffs) - wins - losses,
        losses=losses,
        p_value=p_value,
        verdict=verdict,
    )


def headline_metrics(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The :data:`HEADLINE_METRICS` some record has (``*_matched`` only when present)."""
    return [m for m in HEADLINE_METRICS if any(value_of(r, m) is not None for r in records)]


@dataclass(frozen=True)
class Comparison:
    """Every method against ``reference`` on every metric; ``results[method][metric]``."""

    reference: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    results: dict[str, dict[str, Paired]]


def compare_all(
    records: Sequence[Mapping[str, Any]],
    reference: str = DEFAULT_REFERENCE,
    metrics: Sequence[str] | None = None,
) -> Comparison | None:
    """Each method other than ``reference`` (the original and retrain rows included) against
    it; None when ``reference`` is not among the records' methods."""
    order = method_order(records)
    if reference not in order:
        return None
    metrics = list(metrics) if metrics is not None else headline_metrics(records)
    methods = [m for m in order if m != reference]
    results = {
        method: {
            metric: compare(
                method, reference, metric, *paired_differences(records, method, reference, metric)
            )
            for metric in metrics
        }
        for method in methods
    }
    return Comparison(reference, tuple(methods), tuple(metrics), results)


def absent_note(records: Sequence[Mapping[str, Any]], reference: str) -> str:
    """The one line shown instead of the comparison when ``reference`` did not run."""
    return (
        f"No paired comparison: the reference method {reference!r} is not among the runs "
        f"({', '.join(method_order(records))}); choose one with --compare-to."
    )


def _signed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def cell(result: Paired, digits: int = 3) -> str:
    """``+0.012 [-0.030, +0.050] 2/0/1 p=0.50`` (``better``/``worse`` appended when decided);
    ``-`` without common seeds."""
    if result.n == 0:
        return "-"
    text = _signed(result.mean, digits)
    if result.low is not None:
        text += f" [{_signed(result.low, digits)}, {_signed(result.high, digits)}]"
    text += f" {result.wins}/{result.ties}/{result.losses} p={_p(result.p_value)}"
    if result.verdict in ("better", "worse"):
        text += f" {result.verdict}"
    return text


def _p(value: float | None) -> str:
    """A p-value with two decimals (two significant digits below 0.01); ``-`` when None."""
    return "-" if value is None else f"{value:.2f}" if value >= 0.01 else f"{value:.2g}"


def paired_table(comparison: Comparison, digits: int = 3) -> PageTable:
    """One row per method, one column per metric: :func:`cell` of each; decided-better cells
    marked best."""
    reference = comparison.reference
    rows = []
    best: set[tuple[int, int]] = set()
    for r, method in enumerate(comparison.methods):
        row = [label(method)]
        for c, metric in enumerate(comparison.metrics, start=1):
            result = comparison.results[method][metric]
            row.append(cell(result, digits))
            if result.verdict == "better":
                best.add((r, c))
        rows.append(row)
    undirected = [m for m in comparison.metrics if not direction(m)]
    seeds = sorted({s for by in comparison.results.values() for p in by.values() for s in p.seeds})
    return PageTable(
        title=f"Method minus {reference}, seed by seed: mean [95% interval] wins/ties/losses p",
        header=["method", *(f"{m} ({_arrow(m)})" for m in comparison.metrics)],
        rows=rows,
        best=best,
        note=(
            f"Each cell: mean over the seeds both ran ({len(seeds)} here) of the per-seed "
            f"difference method - {reference} (same original, same split), its 95% percentile "
            f"bootstrap interval ({N_BOOT} resamples of the seeds, seed {BOOT_SEED}), wins/ties/"
            f"losses of the method against {reference} (tie: |d| < 1e-12), and the two-sided "
            "Wilcoxon signed-rank p-value (p=-: fewer than 2 seeds or every difference 0). "
            "'better'/'worse' (and bold): the interval excludes 0 in the method's favour / "
            f"against it and the Wilcoxon p-value is below {ALPHA:g}; otherwise not decided. "
            + (
                f"{', '.join(undirected)}: no better direction (the targets are the retrained "
                "model's forget accuracy and 0.5, judged through avg_gap and forgetting_score), "
                "so no verdict and the counts are higher/equal/lower. "
                if undirected
                else ""
            )
            + f"Below {FEW_SEEDS} seeds the Wilcoxon test cannot reach p < {ALPHA:g}, so "
            "nothing is decided: run more seeds (e.g. --seeds 0-9)."
        ),
    )


def _arrow(metric: str) -> str:
    sign = direction(metric)
    return "higher is better" if sign > 0 else "lower is better" if sign < 0 else "no direction"


def _phrase(result: Paired) -> str:
    """``nomus: decided better (+0.050 [+0.020, +0.080] over 10 seeds, 9/0/1, p=0.004)``."""
    if (n := result.n) == 0:
        return f"{result.metric}: no common seed"
    if result.verdict == "too few":
        return (
            f"{result.metric}: not enough seeds (1 common seed, difference {_signed(result.mean)})"
        )
    verdict = {
        "better": "decided better",
        "worse": "decided worse",
        "no direction": "no verdict (no better direction)",
    }.get(result.verdict, f"not decided at {n} seeds")
    p = f"p={_p(result.p_value)}" if result.p_value is not None else "p=- (all differences 0)"
    details = (
        f"{_signed(result.mean)} [{_signed(result.low)}, {_signed(result.high)}] over {n} seeds, "
        f"{result.wins}/{result.ties}/{result.losses}, Wilcoxon {p}"
    )
    caveat = (
        f"; fewer than {FEW_SEEDS} seeds cannot decide"
        if result.verdict == "undecided" and n < FEW_SEEDS
        else ""
    )
    return f"{result.metric}: {verdict} ({details}{caveat})"


def sentences(comparison: Comparison) -> list[str]:
    """One plain sentence per method on the primary metrics (NoMUS, then avg_gap; the
    label-matched NoMUS when present)."""
    metrics = [m for m in SENTENCE_METRICS if m in comparison.metrics]
    metrics = metrics or list(comparison.metrics[:1])
    return [
        f"{label(method)} vs {comparison.reference}: "
        + "; ".join(_phrase(comparison.results[method][m]) for m in metrics)
        + "."
        for method in comparison.methods
    ]


def figure_panels(comparison: Comparison) -> dict[str, dict[str, dict[str, Any]]]:
    """Data of the per-seed difference figure: ``{panel title: {method label: {"seeds",
    "differences", "mean", "low", "high"}}}``, one panel per metric with common seeds."""
    panels: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in comparison.metrics:
        panel = {
            label(method): {
                "seeds": list(p.seeds),
                "differences": list(p.differences),
                "mean": p.mean,
                "low": p.low,
                "high": p.high,
            }
            for method in comparison.methods
            if (p := comparison.results[method][metric]).n
        }
        if panel:
            panels[f"{metric} ({_arrow(metric)})"] = panel
    return panels
