"""The MUFAC/MUCAC benchmark's loss-based membership-inference attack (arXiv 2311.02240).

Members are forget samples (label 1), non-members are unseen samples (label 0). A logistic
regression on the 1-D per-sample loss is cross-validated with
``StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)``; the attack accuracy is
the mean fold accuracy. 0.5 means the attacker cannot tell forget from unseen samples.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from dlfd.errors import ConfigError
from dlfd.metrics.classification import finite_array

__all__ = [
    "BENCHMARK_SHUFFLE_SEED",
    "balance_members",
    "loss_attack_fold_accuracies",
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


def mia_accuracy(
    member_losses: object,
    nonmember_losses: object,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    random_state: int = 0,
    balance_seed: int = BENCHMARK_SHUFFLE_SEED,
    balance: bool = True,
) -> float:
    """Mean fold accuracy of :func:`loss_attack_fold_accuracies` (the benchmark's ``mia_acc``)."""
    folds = loss_attack_fold_accuracies(
        member_losses,
        nonmember_losses,
        n_splits=n_splits,
        test_size=test_size,
        random_state=random_state,
        balance_seed=balance_seed,
        balance=balance,
    )
    return float(folds.mean())
