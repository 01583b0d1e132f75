"""Tests of dlfd.metrics.uncertainty against normal theory and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlfd.errors import ConfigError
from dlfd.metrics import (
    bootstrap_interval,
    forgetting_score,
    mean_std,
    mia_accuracy,
    mia_interval,
    nomus,
    nomus_interval,
)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def test_bootstrap_mean_matches_normal_theory():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    lo, hi = bootstrap_interval(_mean, x, n_boot=5000, seed=1)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.2 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.2 * half)
    assert lo < x.mean() < hi


def test_bootstrap_is_deterministic_and_level_monotone():
    rng = np.random.default_rng(2)
    x = rng.normal(size=50)
    a = bootstrap_interval(_mean, x, seed=5)
    assert a == bootstrap_interval(_mean, x, seed=5)
    assert a != bootstrap_interval(_mean, x, seed=6)
    lo90, hi90 = bootstrap_interval(_mean, x, level=0.9, seed=5)
    assert a[0] <= lo90 <= hi90 <= a[1]


def test_bootstrap_resamples_each_sample_independently_by_hand():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0])
    rng = np.random.default_rng(0)
    values = []
    for _ in range(10):
        xs = x[rng.integers(0, 3, size=3)]
        ys = y[rng.integers(0, 2, size=2)]
        values.append(xs.sum() + ys.sum())
    expected = tuple(np.quantile(values, [0.1, 0.9]))
    got = bootstrap_interval(lambda a, b: a.sum() + b.sum(), x, y, n_boot=10, level=0.8, seed=0)
    assert got == pytest.approx(expected, abs=1e-12)


def test_bootstrap_rejects_bad_arguments():
    x = np.arange(5.0)
    for kw in ({"level": 0.0}, {"level": 1.0}, {"level": "high"}, {"n_boot": 9}, {"n_boot": 1.5}):
        with pytest.raises(ConfigError):
            bootstrap_interval(_mean, x, **kw)
    with pytest.raises(ConfigError):
        bootstrap_interval(_mean, np.array([]))
    with pytest.raises(ConfigError):
        bootstrap_interval(_mean)
    with pytest.raises(ConfigError, match="non-finite"):
        bootstrap_interval(lambda a: float("nan"), x)


def test_mia_interval_contains_point_estimate():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.exponential(0.5, 60), rng.exponential(1.0, 60)
    lo, hi = mia_interval(members, nonmembers, n_boot=50, seed=0)
    assert 0.0 <= lo <= mia_accuracy(members, nonmembers) <= hi <= 1.0
    # It is the bootstrap of mia_accuracy, members and non-members resampled independently.
    expected = bootstrap_interval(mia_accuracy, members, nonmembers, n_boot=10, seed=1)
    # (its fits are solved exactly, not by lbfgs: at most one test point of one fold differs)
    assert mia_interval(members, nonmembers, n_boot=10, seed=1) == pytest.approx(
        expected, abs=1 / 120 + 1e-12
    )


def test_nomus_interval_contains_point_estimate():
    rng = np.random.default_rng(4)
    correct = (rng.random(80) < 0.6).astype(float)
    members, nonmembers = rng.exponential(0.7, 50), rng.exponential(1.0, 50)
    point = nomus(correct.mean(), forgetting_score(mia_accuracy(members, nonmembers)))
    lo, hi = nomus_interval(correct, members, nonmembers, n_boot=50, seed=0)
    assert 0.0 <= lo <= point <= hi <= 1.0

    def stat(c, m, n):
        return 0.3 * c.mean() + 0.7 * (1 - 2 * abs(mia_accuracy(m, n) - 0.5))

    expected = bootstrap_interval(stat, correct, members, nonmembers, n_boot=10, seed=1)
    got = nomus_interval(correct, members, nonmembers, lam=0.3, n_boot=10, seed=1)
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ConfigError):
        nomus_interval(np.array([0.0, 2.0]), members, nonmembers, n_boot=50)


def test_mean_std_by_hand():
    assert mean_std([2.0, 4.0, 6.0]) == (4.0, 2.0)  # sqrt(((-2)^2 + 0 + 2^2) / 2) = 2
    assert mean_std(np.array([0.5])) == (0.5, 0.0)
    mean, std = mean_std([1.0, 2.0])
    assert (mean, std) == pytest.approx((1.5, math.sqrt(0.5)))
    for bad in ([], [1.0, float("nan")], [[1.0, 2.0]], ["a"]):
        with pytest.raises(ConfigError):
            mean_std(bad)


def test_a_batched_statistic_sees_the_same_resamples() -> None:
    from dlfd.metrics.uncertainty import bootstrap_interval as interval

    x = np.random.default_rng(3).normal(size=37)
    one_by_one = interval(lambda a: a.mean(), x, n_boot=60, seed=5)
    batched = interval(lambda a: a.mean(axis=1), x, n_boot=60, seed=5, batched=True)
    assert one_by_one == batched
    ticks: list[int] = []
    interval(lambda a: a.mean(axis=1), x, n_boot=60, batched=True, on_round=lambda: ticks.append(1))
    assert len(ticks) == 60


def test_batched_attack_fits_agree_with_scikit_learn() -> None:
    """The bootstrap's exact logistic regressions give scikit-learn's fold accuracies except
    where lbfgs's tolerance leaves a test point on the other side of the boundary: then one
    point of one fold differs (1 / (test fold size * folds))."""
    from dlfd.metrics.mia import mia_accuracies, mia_accuracy

    rng = np.random.default_rng(0)
    same = total = 0
    for trial in range(20):
        n_members, n_nonmembers = [(60, 60), (45, 80), (100, 70), (30, 30)][trial % 4]
        members = rng.exponential(0.3 + 0.3 * (trial % 4), (5, n_members))
        nonmembers = rng.exponential(1.0, (5, n_nonmembers))
        if trial % 3 == 0:  # ties, as bootstrap resamples make
            members, nonmembers = np.round(members, 1), np.round(nonmembers, 1)
        fast = mia_accuracies(members, nonmembers)
        slow = np.array([mia_accuracy(m, n) for m, n in zip(members, nonmembers, strict=True)])
        n_test = int(np.ceil(0.1 * 2 * min(n_members, n_nonmembers)))
        assert np.abs(fast - slow).max() <= 1 / (10 * n_test) + 1e-12
        same += int((np.abs(fast - slow) < 1e-12).sum())
        total += fast.size
    assert same >= 0.95 * total
