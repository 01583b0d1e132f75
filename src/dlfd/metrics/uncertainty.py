"""Uncertainty of reported figures: bootstrap intervals and across-seed mean ± std.

Attack accuracies on small splits (e.g. 40 people) are noisy; docs/evaluation-protocol.md asks
for a bootstrap interval next to each one and for mean ± std over seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dlfd.errors import ConfigError
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED, mia_accuracies
from dlfd.metrics.scores import forgetting_score, nomus

__all__ = ["bootstrap_interval", "mean_std", "mia_interval", "nomus_interval"]


def _array(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a non-empty numpy array (torch tensors are copied to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ConfigError(f"{name} must be a non-empty array, got shape {arr.shape}")
    return arr


#: Rounds computed together by a ``batched`` statistic.
BATCH_ROUNDS = 25


def bootstrap_interval(
    statistic: Callable[..., Any],
    *samples: object,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    on_round: Callable[[], None] | None = None,
    batched: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples)`` at confidence ``level``.

    In each of ``n_boot`` rounds every sample is resampled independently, with replacement, to
    its own length (along its first axis) and the statistic is recomputed; the interval is the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of those values. Deterministic for a seed.
    ``batched``: ``statistic`` takes each sample's resamples of several rounds stacked
    (``(rounds, n, ...)``) and returns one value per round (the same resamples as unbatched).
    ``on_round`` is called after every round (progress).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ConfigError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    try:
        lvl = float(level)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"level must be a number in (0, 1), got {level!r}") from exc
    if not (0.0 < lvl < 1.0):
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    if not samples:
        raise ConfigError("bootstrap_interval needs at least one sample")
    arrays = [_array(s, f"sample {i}") for i, s in enumerate(samples)]
    rng = np.random.default_rng(seed)
    values = np.empty(int(n_boot), dtype=np.float64)
    step = BATCH_ROUNDS if batched else 1
    for start in range(0, int(n_boot), step):
        count = min(step, int(n_boot) - start)
        rounds = [
            [a[rng.integers(0, a.shape[0], size=a.shape[0])] for a in arrays] for _ in range(count)
        ]
        if batched:
            stacked = [np.stack([r[i] for r in rounds]) for i in range(len(arrays))]
            values[start : start + count] = statistic(*stacked)
        else:
            values[start] = float(statistic(*rounds[0]))
        for _ in range(count if on_round is not None else 0):
            on_round()
    n_bad = int((~np.isfinite(values)).sum())
    if n_bad:
        raise ConfigError(f"the statistic was non-finite in {n_bad} of {n_boot} bootstrap rounds")
    alpha = 1.0 - lvl
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def mia_interval(
    member_losses: object,
    nonmember_losses: object,
    *,
    balance_seed: int = BENCHMARK_SHUFFLE_SEED,
    **kw: object,
) -> tuple[float, float]:
    """Bootstrap interval of the benchmark's ``mia_acc`` (:func:`~dlfd.metrics.mia.mia_accuracy`).

    Members and non-members are resampled independently; ``kw`` goes to
    :func:`bootstrap_interval` (n_boot, level, seed). Every round refits the attack's 10
    logistic regressions, all rounds' fits solved together (:func:`~dlfd.metrics.mia.
    mia_accuracies`).
    """

    def stat(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
        return mia_accuracies(members, nonmembers, balance_seed=balance_seed)

    return bootstrap_interval(stat, member_losses, nonmember_losses, batched=True, **kw)


def nomus_interval(
    test_correct: object,
    member_losses: object,
    nonmember_losses: object,
    lam: float = 0.5,
    *,
    balance_seed: int = BENCHMARK_SHUFFLE_SEED,
    **kw: object,
) -> tuple[float, float]:
    """Bootstrap interval of NoMUS = ``nomus(mean(test_correct), |mia_acc - 0.5|, lam)``.

    ``test_correct`` holds one value in [0, 1] per test sample (1/0 for a correct/wrong
    prediction, or the fraction of correct labels for multi-label tasks). Test samples, members
    and non-members are resampled independently; ``kw`` goes to :func:`bootstrap_interval`.
    Cost as :func:`mia_interval` (10 logistic regressions per round).
    """
    correct = _array(test_correct, "test_correct").astype(np.float64)
    if correct.ndim != 1:
        raise ConfigError(f"test_correct must be 1-D, got shape {correct.shape}")
    if not bool(((correct >= 0.0) & (correct <= 1.0)).all()):
        raise ConfigError("test_correct values must be in [0, 1]")

    def stat(c: np.ndarray, members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
        mia = mia_accuracies(members, nonmembers, balance_seed=balance_seed)
        accuracy = c.mean(axis=1)
        return np.array(
            [
                nomus(float(a), forgetting_score(float(m)), lam)
                for a, m in zip(accuracy, mia, strict=True)
            ]
        )

    return bootstrap_interval(stat, correct, member_losses, nonmember_losses, batched=True, **kw)


def mean_std(values: object) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of per-seed figures; std is 0.0 for one value."""
    arr = _array(values, "values")
    try:
        v = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError("values must be numbers") from exc
    if v.ndim != 1:
        raise ConfigError(f"values must be 1-D, got shape {v.shape}")
    if not bool(np.isfinite(v).all()):
        raise ConfigError("values must be finite")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), std
