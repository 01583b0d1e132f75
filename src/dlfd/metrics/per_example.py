"""Per-example (epsilon, delta)-unlearning score of the NeurIPS 2023 unlearning challenge.

Population attacks (one threshold over the whole forget set) can call a model "forgotten" while
individual examples stay recognisable. The challenge instead compares, per forget example, the
distribution of one output statistic under N unlearned models with that under N retrained
models, turns the best threshold attack between the two samples into a per-example epsilon,
maps each epsilon to points and averages them.

Sources (an independent implementation): [M] ``metric.py`` and [P] ``main.py`` of
google-deepmind/unlearning_evaluation (commit ffae0ff), read line by line; the Kaggle evaluation
page and the findings paper (Triantafillou et al. 2024, arXiv 2406.09073) describe the same.

Definitions
-----------
* **Statistic** (:func:`logit_scaled_confidence`, [M] ``compute_logit_scaled_confidence``):
  ``log p_y - log(1 - p_y)`` of the softmax, computed as ``z_y - logsumexp(z_other)``.
  Multi-label (not in [M]): ``(2 y - 1) z`` per label (for a sigmoid,
  ``log sigma(z) - log(1 - sigma(z)) = z``), averaged over the labels of the sample.
* **Positive side** ([M] ``compute_forget_score_from_confs``): per example, the retrained sample
  if its median is strictly larger than the unlearned sample's, else the unlearned sample.
* **Peaky shortcut** ([M] ``_get_epsilons``): with ``r`` the two samples' ranges (max - min),
  ``min(r) / max(r) < 0.01`` gives the cap, ``EPSILON_CAP = 50``.
* **Threshold attacks** ([M] ``_get_single_threshold_rates``, ``_get_double_threshold_rates``),
  ``100`` thresholds per unit of the statistic:

  - single: ``t`` on ``linspace(min, max, ceil((max - min) * 100))`` over both samples; a value
    ``>= t`` is called positive;
  - double: the *peakier* sample (smaller range; on equal ranges the negative one) is called
    when the value lies in ``[l, r]``; with ``w`` the peakier range and ``b = 2``,
    ``r`` on ``linspace(min_p + w - b, max_p + b, ceil((max_p + b - min_p - w + b) * 100))``
    and, for each ``r``, ``l`` on ``linspace(r - w - b, r - w + b, ceil(2 b * 100))``.

  Each threshold gives FPR and FNR over the N models of each side (ties counted as in [M]).
* **Epsilon of a threshold** ([M]): FPR = FNR = 0 gives infinity; exactly one of them 0
  discards the threshold ("insufficient samples"); otherwise
  ``max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR))`` over the defined
  terms (none defined: discarded), clipped below at 0, ``delta = 1e-5``. The example's epsilon
  is the largest over the kept thresholds of both families, clipped to ``[0, 50]``.
* **Buckets** ([M]): ``max_eps = ceil(log(N - 1))``; buckets ``[0, 0.5)``, ``[0.5, 1)``, ...
  while a bucket's upper edge is at most ``max_eps``; bucket ``k`` is worth ``2**-k`` points;
  an epsilon at or above the last edge is worth 0, one on an edge belongs to the upper bucket.
* **Forgetting quality** ([M]): the mean points over the forget set.
* **Final score** ([P] ``main``): ``F * (mean unlearned retain acc / mean retrained retain acc)
  * (mean unlearned test acc / mean retrained test acc)``, means over the N models of each side.

Deviations from [M] / [P]
-------------------------
* float64 with sorted-array counting (``searchsorted``) instead of float32 GPU tensors: the
  grids are the same, so the rates are the same fractions and epsilons differ only by float32
  rounding (relevant only within ~1e-6 of a bucket edge).
* [M] adds ``1e-45`` to both probabilities before the logs (bounding the statistic near
  +-103.6); here the statistic is exact. They differ only for probabilities below ~1e-45.
* When no threshold survives (e.g. both samples the same constant), [M] fails an assertion;
  here the epsilon is 0. Two *different* constants are perfectly separated by a double
  threshold: epsilon = cap, as in [M]. When both ranges are 0, [M]'s ratio test compares NaN
  and is skipped; so it is here.
* Both sides must have the same number of models N >= 2 ([M] assumes it and takes
  ``log(N - 1)``). With ``N = 2`` there is no bucket and every forgetting quality is 0, as in
  [M]; use ``N >= 3`` (``N = 4``: buckets up to 2, worth 1, 1/2, 1/4, 1/8).
* A retrained mean accuracy of 0 makes its ratio undefined: :func:`final_score` returns NaN.

Worth knowing: the tails of two samples of one distribution often differ by a few models, and a
single threshold there gives ``log(tpr / fpr)`` (``log 4`` for 4 against 1 model), so even two
independent samples of the *same* Gaussian typically get epsilons of 1 to 2.5 (F around
0.15-0.2 with N = 512); only identical samples get 0. Compare methods at the same N only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlfd.errors import ConfigError
from dlfd.metrics.classification import as_binary_targets, as_logits, check_task
from dlfd.metrics.lira import confidence_margins, logit_confidence

#: delta of (epsilon, delta)-unlearning [M].
DELTA = 1e-5
#: Largest epsilon an example can get [M].
EPSILON_CAP = 50.0
#: Threshold grid density: thresholds per unit of the statistic [M].
THRESHOLDS_PER_UNIT = 100
#: Width of one scoring bucket of epsilon [M].
BUCKET_WIDTH = 0.5
#: Range ratio below which the peakier sample is "too peaky": epsilon = cap [M].
PEAKY_RATIO = 0.01
#: Margin ``b`` of the double-threshold grid [M].
DOUBLE_BUFFER = 2.0


def logit_scaled_confidence(logits: object, labels: object, task: str = "multiclass") -> np.ndarray:
    """The statistic of each sample, shape (N,), float64. ``multiclass``: ``log p_y - log(1 - p_y)``
    of the softmax (``logits`` (N, C), C >= 2, integer ``labels`` (N,)). ``multilabel``: mean over
    the L labels of ``(2 y - 1) * z`` (the logit-scaled confidence of each label's true value under
    a sigmoid), ``labels`` {0, 1} of shape (N, L)."""
    check_task(task)
    if task == "multiclass":
        return logit_confidence(logits, labels)
    z = as_logits(logits)
    y = as_binary_targets(labels, tuple(z.shape))
    return confidence_margins(z, y, "multilabel").numpy()


def _finite(values: object, name: str, ndim: int) -> np.ndarray:
    """``values`` as finite float64: a 1-d sample of at least 2 values (``ndim=1``) or a
    (models, examples) matrix with at least 2 models and 1 example (``ndim=2``)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[0] < 2 or arr.size == 0:
        what = "(models, examples) with at least 2 models and 1 example"
        what = "a 1-d sample of at least 2 values" if ndim == 1 else what
        raise ConfigError(f"{name} must be {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} has non-finite values")
    return arr


def _grid(low: float, high: float, per_unit: int = THRESHOLDS_PER_UNIT) -> np.ndarray:
    """``linspace(low, high, ceil((high - low) * per_unit))`` as [M] builds its grids."""
    count = math.ceil((high - low) * per_unit)
    return np.linspace(low, high, max(count, 0))


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _count_inside(sorted_values: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """How many values ``v`` have ``left <= v <= right`` (0 for an empty interval)."""
    upto = np.searchsorted(sorted_values, right, side="right")
    below = np.searchsorted(sorted_values, left, side="left")
    return np.maximum(upto - below, 0)


def _single_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positives called, negatives called) per threshold: a value >= t is called positive."""
    both = np.concatenate([pos, neg])
    thresholds = _grid(float(both.min()), float(both.max()))
    return _count_at_least(np.sort(pos), thresholds), _count_at_least(np.sort(neg), thresholds)


def _double_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(peaky values called, other values called) per (left, right) threshold pair: a value in
    ``[left, right]`` is called the peakier sample."""
    pos_range = float(pos.max() - pos.min())
    neg_range = float(neg.max() - neg.min())
    peaky, other = (neg, pos) if pos_range >= neg_range else (pos, neg)
    width = min(pos_range, neg_range)
    b = DOUBLE_BUFFER
    rights = _grid(float(peaky.min()) + width - b, float(peaky.max()) + b)
    n_left = math.ceil(2 * b * THRESHOLDS_PER_UNIT)
    offsets = np.linspace(-width - b, -width + b, n_left)
    # the same values as linspace(r - w - b, r - w + b, n_left) for each r, up to rounding
    lefts = (rights[:, None] + offsets[None, :]).reshape(-1)
    rights = np.repeat(rights, n_left)
    return tuple(_count_inside(np.sort(v), lefts, rights) for v in (peaky, other))  # type: ignore[return-value]


def _threshold_epsilons(
    called_pos: np.ndarray, called_neg: np.ndarray, n: int, delta: float
) -> np.ndarray:
    """Epsilon of each threshold; NaN for a discarded one, inf for perfect separation."""
    fn, fp = n - called_pos, called_neg  # positives not called positive, negatives called
    fnr, fpr = fn / n, fp / n
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1.0 - delta - fpr) - np.log(fnr)
        b = np.log(1.0 - delta - fnr) - np.log(fpr)
    terms = np.stack([a, b])
    defined = ~np.isnan(terms)
    best = np.where(defined, terms, -np.inf).max(axis=0)
    eps = np.where(defined.any(axis=0), np.maximum(best, 0.0), np.nan)
    eps = np.where((fp == 0) != (fn == 0), np.nan, eps)  # exactly one rate 0: discarded
    return np.where((fp == 0) & (fn == 0), np.inf, eps)


def example_epsilon(pos: object, neg: object, *, delta: float = DELTA) -> float:
    """Epsilon of one example from the statistic under the models of each side. ``pos`` is the side
    with the larger median (see :func:`per_example_epsilons`); both are 1-d samples of the same size
    N >= 2. The result is in ``[0, EPSILON_CAP]``."""
    p, q = _finite(pos, "pos", 1), _finite(neg, "neg", 1)
    if p.size != q.size:
        raise ConfigError(f"the two samples must have as many models, got {p.size} and {q.size}")
    ranges = sorted((float(p.max() - p.min()), float(q.max() - q.min())))
    if ranges[1] > 0 and ranges[0] / ranges[1] < PEAKY_RATIO:
        return EPSILON_CAP
    counts = (_double_counts(p, q), _single_counts(p, q))
    eps = np.concatenate([_threshold_epsilons(*called, p.size, delta) for called in counts])
    kept = eps[~np.isnan(eps)]
    if kept.size == 0:
        return 0.0  # [M] asserts here; no threshold attack tells the two samples apart
    return float(np.clip(kept.max(), 0.0, EPSILON_CAP))


def per_example_epsilons(
    unlearned: object, retrained: object, *, delta: float = DELTA
) -> np.ndarray:
    """Epsilon of every example, shape (examples,), from the statistic under each model.
    ``unlearned`` and ``retrained`` are (N models, examples) with the same shape. Per example the
    side with the strictly larger median is the positive one (ties: the unlearned side)."""
    u, r = _finite(unlearned, "unlearned", 2), _finite(retrained, "retrained", 2)
    if u.shape != r.shape:
        raise ConfigError(f"unlearned {u.shape} and retrained {r.shape} must have the same shape")
    if not 0.0 <= delta < 1.0:
        raise ConfigError(f"delta must be in [0, 1), got {delta}")
    retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
    out = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        pos, neg = (r[:, i], u[:, i]) if retrain_positive[i] else (u[:, i], r[:, i])
        out[i] = example_epsilon(pos, neg, delta=delta)
    return out


def max_epsilon(n_models: int) -> float:
    """``ceil(log(N - 1))``: about the largest epsilon N models per side can show [M]."""
    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)) or n_models < 2:
        raise ConfigError(f"the score needs at least 2 models per side, got {n_models!r}")
    return float(math.ceil(math.log(int(n_models) - 1)))


def bucket_edges(n_models: int) -> list[tuple[float, float, float]]:
    """The scoring buckets for N models: ``(low, high, points)``, low included, high excluded."""
    count = int(max_epsilon(n_models) / BUCKET_WIDTH)  # every bucket ends at most at max_eps
    return [(k * BUCKET_WIDTH, (k + 1) * BUCKET_WIDTH, 0.5**k) for k in range(count)]


def bucket_points(epsilons: object, n_models: int) -> np.ndarray:
    """Points of each epsilon: ``2**-k`` in bucket k, 0 at or beyond the last edge."""
    eps = np.asarray(epsilons, dtype=np.float64).reshape(-1)
    if np.any(np.isnan(eps)) or np.any(eps < 0):
        raise ConfigError("epsilons must be non-negative numbers")
    buckets = bucket_edges(n_models)
    points = np.zeros(eps.shape)
    index = np.floor(eps / BUCKET_WIDTH)
    inside = index < len(buckets)
    points[inside] = 0.5 ** index[inside]
    return points


def forgetting_quality(epsilons: object, n_models: int) -> float:
    """``F``: the mean of :func:`bucket_points` over the forget set [M]."""
    points = bucket_points(epsilons, n_models)
    if points.size == 0:
        raise ConfigError("no epsilons: the forget set is empty")
    return float(points.sum() / points.size)


def _mean_accuracy(values: Sequence[float], name: str) -> float:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any((arr < 0) | (arr > 1)):
        raise ConfigError(f"{name} must be accuracies in [0, 1], got {list(arr)}")
    return float(arr.mean())


def final_score(
    quality: float,
    *,
    unlearned_retain: Sequence[float],
    retrained_retain: Sequence[float],
    unlearned_test: Sequence[float],
    retrained_test: Sequence[float],
) -> float:
    """``F * (RA_u / RA_r) * (TA_u / TA_r)`` with means over the models of each side [P];
    NaN when a retrained mean accuracy is 0 (the ratio is undefined)."""
    retain = _ratio(unlearned_retain, retrained_retain, "retain")
    return float(quality) * retain * _ratio(unlearned_test, retrained_test, "test")


def _ratio(unlearned: Sequence[float], retrained: Sequence[float], split: str) -> float:
    """Mean unlearned accuracy / mean retrained accuracy (NaN for a retrained mean of 0)."""
    mean_u = _mean_accuracy(unlearned, f"unlearned_{split}")
    mean_r = _mean_accuracy(retrained, f"retrained_{split}")
    return mean_u / mean_r if mean_r else math.nan


@dataclass(frozen=True)
class PerExampleScore:
    """Everything the challenge score gives for one method: per-example epsilons, their
    points, ``F``, the two accuracy ratios and the final score."""

    epsilons: np.ndarray
    points: np.ndarray
    n_models: int
    forgetting_quality: float
    retain_ratio: float
    test_ratio: float
    score: float

    def to_dict(self) -> dict[str, object]:
        return {
            "per_example_score": self.score,
            "forgetting_quality": self.forgetting_quality,
            "retain_ratio": self.retain_ratio,
            "test_ratio": self.test_ratio,
            "n_models": self.n_models,
            "delta": DELTA,
            "max_epsilon": max_epsilon(self.n_models),
            "buckets": [list(b) for b in bucket_edges(self.n_models)],
            "epsilons": [float(e) for e in self.epsilons],
            "points": [float(p) for p in self.points],
        }


def per_example_score(
    unlearned_stats: object,
    retrained_stats: object,
    *,
    unlearned_retain: Sequence[float],
    retrained_retain: Sequence[float],
    unlearned_test: Sequence[float],
    retrained_test: Sequence[float],
    delta: float = DELTA,
) -> PerExampleScore:
    """The whole challenge score from the (models, examples) statistics and the accuracies."""
    eps = per_example_epsilons(unlearned_stats, retrained_stats, delta=delta)
    n = int(np.asarray(unlearned_stats).shape[0])
    quality = forgetting_quality(eps, n)
    ra = _ratio(unlearned_retain, retrained_retain, "retain")
    ta = _ratio(unlearned_test, retrained_test, "test")
    return PerExampleScore(eps, bucket_points(eps, n), n, quality, ra, ta, quality * ra * ta)
