"""Label-matched attack and label-shift measure, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlfd.metrics.matching import (
    label_shift,
    matched_indices,
    matched_mia_accuracy,
)
from dlfd.metrics.mia import mia_accuracy


def test_matched_indices_take_the_smaller_count_of_each_shared_class() -> None:
    forget = torch.tensor([0, 0, 0, 1, 2, 2])  # class 2 exists only in forget
    unseen = torch.tensor([1, 1, 0, 3])  # class 3 exists only in unseen
    f, u = matched_indices(forget, unseen, "multiclass", seed=0)
    assert sorted(forget[f].tolist()) == [0, 1]  # one 0 (unseen has one), one 1 (forget has one)
    assert sorted(unseen[u].tolist()) == [0, 1]
    assert len(set(f.tolist())) == f.size and len(set(u.tolist())) == u.size
    again = matched_indices(forget, unseen, "multiclass", seed=0)
    assert np.array_equal(again[0], f) and np.array_equal(again[1], u)


def test_multilabel_samples_are_matched_on_their_label_combination() -> None:
    forget = torch.tensor([[1, 0], [1, 0], [1, 1]])
    unseen = torch.tensor([[1, 0], [0, 1], [1, 1], [1, 1]])
    f, u = matched_indices(forget, unseen, "multilabel")
    assert f.tolist() == [0, 2] or f.tolist() == [1, 2]
    assert sorted(map(tuple, unseen[u].tolist())) == [(1, 0), (1, 1)]


def test_no_class_in_common_is_said_not_scored() -> None:
    ones, zeros = torch.ones(20, dtype=torch.long), torch.zeros(20, dtype=torch.long)
    result = matched_mia_accuracy(np.zeros(20), np.ones(20), ones, zeros, "multiclass")
    assert result.accuracy is None and result.per_side == 0
    assert "share no class" in (result.reason or "")


def test_a_loss_that_depends_only_on_the_label_fools_the_published_attack_not_the_matched_one():
    # The glasses example: every forgotten photo has glasses (class 1); most unseen photos do
    # not. The loss depends on the class only (class 1 easy, class 0 hard), never on membership.
    rng = np.random.default_rng(0)
    forget_labels = torch.ones(60, dtype=torch.long)
    unseen_labels = torch.tensor([1] * 20 + [0] * 40)
    loss = {0: 2.0, 1: 0.2}
    forget_losses = np.array([loss[1] for _ in range(60)]) + rng.normal(0, 0.05, 60)
    unseen_losses = np.array([loss[int(c)] for c in unseen_labels]) + rng.normal(0, 0.05, 60)
    published = mia_accuracy(forget_losses, unseen_losses)
    matched = matched_mia_accuracy(
        forget_losses, unseen_losses, forget_labels, unseen_labels, "multiclass"
    )
    assert published > 0.8
    assert matched.per_side == 20 and matched.accuracy is not None
    assert abs(matched.accuracy - 0.5) < 0.2
    shift = label_shift(forget_labels, unseen_labels, "multiclass", ["no", "yes"])
    assert shift.tv == pytest.approx(2 / 3)  # 0.5 * (|0 - 2/3| + |1 - 1/3|)
    warning = shift.warning()
    assert warning is not None and "0.67" in warning and "yes 1.00" in warning


def test_label_shift_by_hand() -> None:
    shift = label_shift(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2]), "multiclass")
    assert shift.forget == {"0": 0.5, "1": 0.25, "2": 0.25}
    assert shift.tv == pytest.approx(0.25)
    assert shift.warning(0.3) is None and shift.warning(0.2) is not None
    multi = label_shift(
        torch.tensor([[1, 0], [1, 1]]), torch.tensor([[0, 0], [1, 0]]), "multilabel", ["m", "s"]
    )
    assert multi.forget == {"m": 1.0, "s": 0.5} and multi.unseen == {"m": 0.5, "s": 0.0}
    assert multi.tv == pytest.approx(0.5)


def test_a_shift_of_exactly_the_threshold_does_not_warn() -> None:
    forget = torch.tensor([0] * 7 + [1] * 3)
    unseen = torch.tensor([0] * 8 + [1] * 2)
    shift = label_shift(forget, unseen, "multiclass")
    assert shift.tv == pytest.approx(0.1) and shift.warning() is None
    assert shift.warning(0.05) is not None
