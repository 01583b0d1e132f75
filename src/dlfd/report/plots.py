"""Figures of a benchmark or an audit, drawn from numbers only (never from images or models).

Each function returns PNG bytes. Colours: forget red, unseen (never seen) blue, retain grey, so
forgetting shows as the red curve or cloud moving onto the blue one.

Names in a figure come from records (method names, seeds, settings): each one goes through
:func:`plain`, so matplotlib draws it literally (``$...$`` is not mathtext), figures are drawn
with ``text.usetex`` off (:func:`literal_text`), and legends take their entries explicitly, so a
label starting with ``_`` is shown rather than dropped.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from dlfd.bench.records import finite_number
from dlfd.report.pages import figure_png, pyplot

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


def _finite_values(values: object) -> np.ndarray:
    """The finite numbers of ``values`` as a 1-D array (malformed input or nulls dropped)."""
    try:
        array = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)
    return array[np.isfinite(array)]


def _finite_points(values: object) -> np.ndarray:
    """(n, 2) finite points of ``values`` (malformed input or null coordinates dropped)."""
    try:
        points = np.asarray(values if values is not None else [], dtype=np.float64)
        points = points.reshape(-1, 2)
    except (TypeError, ValueError):
        return np.zeros((0, 2))
    return points[np.isfinite(points).all(axis=1)]


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
    panels: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    *,
    ncols: int | None = None,
    splits: Sequence[str] = LOSS_SPLITS,
) -> bytes:
    """Per-sample loss distributions (log10) of ``splits`` for each model: one panel per model,
    the same bins everywhere so panels compare."""
    logs: dict[str, dict[str, np.ndarray]] = {}
    for name, by_split in panels.items():
        logs[name] = {}
        for split, values in by_split.items():
            v = _finite_values(values) if split in splits else np.zeros(0)
            if len(v):
                logs[name][split] = np.log10(np.clip(v, 0.0, None) + 1e-6)
    every = [v for by_split in logs.values() for v in by_split.values()]
    low = min((float(v.min()) for v in every), default=-6.0)
    high = max((float(v.max()) for v in every), default=1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 26)
    fig, axes, columns = _grid(len(panels), ncols, 4.0, 3.2, sharex=True)
    entries: list[tuple[Any, str]] = []
    for k, (ax, (name, by_split)) in enumerate(zip(axes, logs.items(), strict=True)):
        for split in splits:
            if split in by_split:
                _, _, patches = ax.hist(
                    by_split[split],
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.8,
                    color=COLORS.get(split),
                )
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
    """NoMUS against wall time, one point per method (mean over seeds with std bars).

    Each point: ``label``, ``wall``, ``wall_std``, ``nomus``, ``nomus_std``. The x axis is
    logarithmic above 1 s and linear below (the original model costs 0 s).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for point in points:
        label = str(point["label"])
        color = {"original": "#7f7f7f", "retrain": "#000000"}.get(label.split(" ")[0])
        ax.errorbar(
            float(point["wall"]),
            float(point["nomus"]),
            xerr=float(point["wall_std"]),
            yerr=float(point["nomus_std"]),
            fmt="o",
            capsize=3,
            color=color,
        )
        ax.annotate(
            plain(label),
            (float(point["wall"]), float(point["nomus"])),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("wall time of the unlearning call (s; retrain: its training)")
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
            points = _finite_points(sides.get(split) if isinstance(sides, Mapping) else None)
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
    """Per-seed differences to a reference method, one panel per metric: one row per method,
    a dot per seed, the mean (black diamond) with its interval, and the zero line.

    ``panels``: ``{title: {method: {"differences": [...], "mean": m, "low": l, "high": h}}}``
    (``low``/``high`` may be None: no interval)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes, _ = _grid(len(panels), ncols, 4.6, 0.9 + 0.38 * _rows(panels))
    for ax, (title, methods) in zip(axes, panels.items(), strict=True):
        names = list(methods)
        for row, name in enumerate(names):
            y = len(names) - 1 - row
            entry = methods[name]
            values = _finite_values(entry.get("differences"))
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


def _rows(panels: Mapping[str, Mapping[str, object]]) -> int:
    """The most methods of any panel (the figure's height follows it)."""
    return max((len(methods) for methods in panels.values()), default=1)


@literal_text
def epsilon_histograms(panels: Mapping[str, Sequence[float]], buckets: Sequence[float]) -> bytes:
    """Per method, the distribution of the forget samples' per-example epsilon (pooled over
    seeds), with the challenge's bucket edges as dotted lines: mass at the left is forgotten."""
    values = {name: _finite_values(v) for name, v in panels.items()}
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
