"""Summary scores of the MUFAC/MUCAC protocol: forgetting score, NoMUS and gaps to a reference."""

from __future__ import annotations

import math
from collections.abc import Mapping

from dlfd.errors import ConfigError

#: Metrics compared with the retrained reference; ``gap_<key>`` is their absolute difference.
GAP_KEYS: tuple[str, ...] = ("test_acc", "forget_acc", "retain_acc", "mia_acc")


def _in_range(value: float, name: str, lo: float, hi: float) -> float:
    """Return ``value`` as a float if it is a number in [lo, hi]; ConfigError otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}") from exc
    if not (lo <= v <= hi):  # also rejects NaN
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    return v


def forgetting_score(mia_acc: float) -> float:
    """``|mia_acc - 0.5|``: distance of the attack from chance (0 is perfect forgetting). Published
    tables call this column "MIA"."""
    return abs(_in_range(mia_acc, "mia_acc", 0.0, 1.0) - 0.5)


def nomus(test_acc: float, forgetting_score: float, lam: float = 0.5) -> float:
    """Normalized Machine Unlearning Score: ``lam*test_acc + (1-lam)*(1 - 2*forgetting_score)``.
    Trades utility (test accuracy) against forgetting; 1 is best. Check: MUFAC's original model
    (test_acc 0.5951, score 0.2136) gives 0.58395."""
    lam_v = _in_range(lam, "lam", 0.0, 1.0)
    acc = _in_range(test_acc, "test_acc", 0.0, 1.0)
    fs = _in_range(forgetting_score, "forgetting_score", 0.0, 0.5)
    return lam_v * acc + (1.0 - lam_v) * (1.0 - 2.0 * fs)


def reference_gaps(
    metrics: Mapping[str, float], reference: Mapping[str, float]
) -> dict[str, float]:
    """Absolute differences ``gap_<key>`` to a retrained reference, and their mean ``avg_gap``. Keys
    are test_acc, forget_acc, retain_acc and mia_acc. ``retain_acc`` is optional: when neither
    mapping has it, ``gap_retain_acc`` is left out and ``avg_gap`` averages the other three (so
    compare avg_gap only between results with the same splits). Any other key missing from either
    side is a ConfigError."""
    gaps: dict[str, float] = {}
    for key in GAP_KEYS:
        has_m, has_r = key in metrics, key in reference
        if key == "retain_acc" and not has_m and not has_r:
            continue
        if not (has_m and has_r):
            side = "metrics" if not has_m else "reference"
            raise ConfigError(f"{side} lacks {key!r}, needed for gap_{key}")
        a, b = float(metrics[key]), float(reference[key])
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ConfigError(f"{key} must be finite to compute a gap, got {a} and {b}")
        gaps[f"gap_{key}"] = abs(a - b)
    gaps["avg_gap"] = sum(gaps.values()) / len(gaps)
    return gaps
