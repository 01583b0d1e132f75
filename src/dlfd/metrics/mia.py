"""The MUFAC/MUCAC benchmark's loss-based membership-inference attack (arXiv 2311.02240).

Members are forget samples (label 1), non-members are unseen samples (label 0). A logistic
regression on the 1-D per-sample loss is cross-validated with
``StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)``; the attack accuracy is
the mean fold accuracy. 0.5 means the attacker cannot tell forget from unseen samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from dlfd.errors import ConfigError
from dlfd.metrics.classification import finite_array

__all__ = [
    "BENCHMARK_SHUFFLE_SEED",
    "balance_members",
    "loss_attack_fold_accuracies",
    "mia_accuracies",
    "mia_accuracy",
]


#: The benchmark notebooks call ``set_seed(42)`` right before shuffling the forget losses.
BENCHMARK_SHUFFLE_SEED = 42


def balance_members(
    member_losses: object, nonmember_losses: object, seed: int = BENCHMARK_SHUFFLE_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Balance the attack's two sides exactly as the benchmark does, and also when it does not.

    The benchmark shuffles the forget (member) losses with ``np.random.seed(42)`` and truncates
    them to ``len(unseen)``, leaving the unseen losses in their order. That is reproduced bit for
    bit (``np.random.RandomState(seed).shuffle``). When unseen is the larger side the benchmark
    stays unbalanced; here the non-member losses are then shuffled by the same generator and
    truncated instead, so chance level stays 0.5.
    """
    members = finite_array(member_losses, "member_losses").copy()
    nonmembers = finite_array(nonmember_losses, "nonmember_losses").copy()
    generator = np.random.RandomState(seed)
    generator.shuffle(members)
    if nonmembers.size > members.size:
        generator.shuffle(nonmembers)
        nonmembers = nonmembers[: members.size]
    return members[: nonmembers.size], nonmembers


def check_attack_split(
    n_members: int, n_nonmembers: int, n_splits: int, test_size: float | int
) -> None:
    """Refuse inputs for which StratifiedShuffleSplit cannot put each class in train and test."""
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ConfigError(f"n_splits must be a positive integer, got {n_splits!r}")
    n = n_members + n_nonmembers
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, float) and 0.0 < test_size < 1.0:
        n_test = math.ceil(test_size * n)
    else:
        raise ConfigError(f"test_size must be a float in (0, 1) or an integer, got {test_size!r}")
    counts = f"{n_members} member(s) and {n_nonmembers} non-member(s)"
    if min(n_members, n_nonmembers) < 2:
        raise ConfigError(f"the attack needs >= 2 samples per class, got {counts}")
    # Stratification gives class c about count_c * n_test / n test samples (rounded down first)
    # and about count_c * n_train / n training samples; ask for >= 1 of each in both.
    n_train = n - n_test
    if any(min(c * n_test, c * n_train) < n for c in (n_members, n_nonmembers)):
        raise ConfigError(
            f"too few samples for test_size={test_size}: the test fold ({n_test} of {n}) and "
            f"the training set must each hold >= 1 sample per class, got {counts}"
        )


def loss_attack_fold_accuracies(
    member_losses: object,
    nonmember_losses: object,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    random_state: int = 0,
    balance_seed: int = BENCHMARK_SHUFFLE_SEED,
    balance: bool = True,
) -> np.ndarray:
    """Per-fold accuracies (float64, length ``n_splits``) of the loss-based attack.

    Non-members come first and members second in the feature matrix, as in the benchmark's
    ``cal_mia``; with ``balance`` the two sides are first shuffled and truncated to equal size
    (see :func:`balance_members`).
    """
    members = finite_array(member_losses, "member_losses")
    nonmembers = finite_array(nonmember_losses, "nonmember_losses")
    if balance:
        members, nonmembers = balance_members(members, nonmembers, seed=balance_seed)
    check_attack_split(members.size, nonmembers.size, n_splits, test_size)
    x = np.concatenate([nonmembers, members]).reshape(-1, 1)
    y = np.concatenate([np.zeros(nonmembers.size, dtype=np.int64), np.ones(members.size, np.int64)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=random_state)
    scores = cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=cv, scoring="accuracy")
    return np.asarray(scores, dtype=np.float64)


def mia_accuracy(member_losses: object, nonmember_losses: object, **options: Any) -> float:
    """Mean fold accuracy of :func:`loss_attack_fold_accuracies` (the benchmark's ``mia_acc``);
    ``options`` are that function's (``n_splits``, ``test_size``, ``balance_seed``...)."""
    return float(loss_attack_fold_accuracies(member_losses, nonmember_losses, **options).mean())


def _fit_logistic(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Many 1-D logistic regressions at once, solved exactly: rows of ``x`` (features) and ``t``
    (0/1 labels) are separate problems. The objective is scikit-learn's ``LogisticRegression()``
    (L2 penalty 1/2 w^2 with C=1, intercept not penalised); damped Newton steps to machine
    precision, where scikit-learn's lbfgs stops at its tolerance (1e-4), so a prediction can
    differ from scikit-learn's only for a point within that tolerance of the boundary."""

    def objective(w: np.ndarray, b: np.ndarray) -> np.ndarray:
        z = w[:, None] * x + b[:, None]
        return (np.logaddexp(0.0, z) - t * z).sum(axis=1) + 0.5 * w * w

    w = np.zeros(x.shape[0])
    b = np.zeros(x.shape[0])
    f = objective(w, b)
    for _ in range(100):
        p = expit(w[:, None] * x + b[:, None])
        r, s = p - t, p * (1.0 - p)
        gw, gb = (r * x).sum(axis=1) + w, r.sum(axis=1)
        hww, hwb, hbb = (s * x * x).sum(axis=1) + 1.0, (s * x).sum(axis=1), s.sum(axis=1)
        det = np.maximum(hww * hbb - hwb * hwb, 1e-300)
        dw, db = (hbb * gw - hwb * gb) / det, (hww * gb - hwb * gw) / det
        step = np.ones_like(w)
        for _ in range(60):  # halve the step of the problems whose objective would rise
            new_w, new_b = w - step * dw, b - step * db
            new_f = objective(new_w, new_b)
            rising = new_f > f
            if not rising.any():
                break
            step = np.where(rising, step / 2.0, step)
        moved = np.maximum(np.abs(step * dw), np.abs(step * db))
        w, b, f = np.where(rising, w, new_w), np.where(rising, b, new_b), np.minimum(f, new_f)
        if float(moved.max()) < 1e-12:
            break
    return w, b


def mia_accuracies(
    member_losses: np.ndarray,
    nonmember_losses: np.ndarray,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    random_state: int = 0,
    balance_seed: int = BENCHMARK_SHUFFLE_SEED,
) -> np.ndarray:
    """:func:`mia_accuracy` of many loss samples at once (rows of ``(rounds, n)`` arrays: the
    rounds of a bootstrap), with the same balancing and the same folds (which depend on the
    labels only), the logistic regressions solved together by :func:`_fit_logistic` — about
    two orders of magnitude faster than one scikit-learn fit per fold and round."""
    members_rows, nonmember_rows = zip(
        *(
            balance_members(m, n, seed=balance_seed)
            for m, n in zip(member_losses, nonmember_losses, strict=True)
        ),
        strict=True,
    )
    members, nonmembers = np.stack(members_rows), np.stack(nonmember_rows)
    check_attack_split(members.shape[1], nonmembers.shape[1], n_splits, test_size)
    x = np.concatenate([nonmembers, members], axis=1)
    y = np.concatenate([np.zeros(nonmembers.shape[1]), np.ones(members.shape[1])])
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=random_state)
    accuracy = np.zeros(x.shape[0])
    for train, test in cv.split(np.zeros((y.size, 1)), y):
        w, b = _fit_logistic(x[:, train], np.broadcast_to(y[train], (x.shape[0], train.size)))
        predicted = (w[:, None] * x[:, test] + b[:, None]) > 0.0
        accuracy += (predicted == y[test].astype(bool)).mean(axis=1)
    return accuracy / n_splits
