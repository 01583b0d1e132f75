"""Label-matched membership evaluation: the attack may use membership, not the label.

The benchmark's attack compares the losses of forget photos (members) with those of unseen
photos (non-members). When the two sets hold different classes — a forgotten person who wears
glasses, unseen people who do not — the loss differs by class, and the attack measures the
label instead of membership: a retrained model that never saw the forget set can score 1.0.
:func:`matched_mia_accuracy` attacks a seeded subsample with the same class mix on both sides
(:func:`matched_indices`); :func:`label_shift` measures the mixes' distance so commands can warn.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dlfd.errors import ConfigError
from dlfd.metrics.mia import check_attack_split, mia_accuracy

#: Seed of the per-class subsampling (fixed: every model of a comparison sees the same samples).
MATCH_SEED = 0
#: Total variation between the class mixes of forget and unseen above which commands warn.
LABEL_SHIFT_TV = 0.1
_NO_SHARED_CLASS = "forget and unseen samples share no class"


def _keys(labels: object, task: str) -> list[Hashable]:
    """One hashable class key per sample: the class index, or the 0/1 label combination."""
    array = np.asarray(torch.as_tensor(labels).cpu().numpy())
    if task == "multiclass":
        if array.ndim != 1:
            raise ConfigError(f"multiclass labels must be 1-D, got shape {array.shape}")
        return [int(v) for v in array]
    if task == "multilabel":
        if array.ndim != 2:
            raise ConfigError(f"multilabel labels must be 2-D, got shape {array.shape}")
        return [tuple(round(float(v)) for v in row) for row in array]
    raise ConfigError(f"unknown task {task!r}")


def matched_indices(
    forget_labels: object, unseen_labels: object, task: str, *, seed: int = MATCH_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of forget and of unseen samples with equal counts per class key. For each class key
    both sides hold, ``min(count_forget, count_unseen)`` samples of each side are drawn without
    replacement (``np.random.RandomState(seed)``, classes in sorted order); keys only one side holds
    are dropped. Both arrays are sorted; both are empty when the sides share no class."""
    by_forget: dict[Hashable, list[int]] = {}
    by_unseen: dict[Hashable, list[int]] = {}
    for by_key, labels in ((by_forget, forget_labels), (by_unseen, unseen_labels)):
        for i, key in enumerate(_keys(labels, task)):
            by_key.setdefault(key, []).append(i)
    generator = np.random.RandomState(seed)
    chosen_forget: list[int] = []
    chosen_unseen: list[int] = []
    for key in sorted(set(by_forget) & set(by_unseen)):
        n = min(len(by_forget[key]), len(by_unseen[key]))
        chosen_forget += generator.permutation(by_forget[key])[:n].tolist()
        chosen_unseen += generator.permutation(by_unseen[key])[:n].tolist()
    return np.asarray(sorted(chosen_forget), np.int64), np.asarray(sorted(chosen_unseen), np.int64)


@dataclass(frozen=True)
class MatchedAttack:
    """The label-matched attack: its accuracy (None when it cannot be run, with ``reason``) and
    the number of samples per side it used."""

    accuracy: float | None
    per_side: int
    reason: str | None = None


def matched_mia_accuracy(
    forget_losses: object,
    unseen_losses: object,
    forget_labels: object,
    unseen_labels: object,
    task: str,
    *,
    seed: int = MATCH_SEED,
) -> MatchedAttack:
    """The benchmark's loss attack (:func:`~dlfd.metrics.mia.mia_accuracy`) on the
    label-matched subsample of forget and unseen; no accuracy (and the reason) when the sides
    share no class or the matched sides are too small for the attack's 10 folds."""
    forget_idx, unseen_idx = matched_indices(forget_labels, unseen_labels, task, seed=seed)
    if forget_idx.size == 0:
        return MatchedAttack(None, 0, _NO_SHARED_CLASS)
    members = np.asarray(forget_losses, dtype=np.float64)[forget_idx]
    nonmembers = np.asarray(unseen_losses, dtype=np.float64)[unseen_idx]
    try:
        accuracy = mia_accuracy(members, nonmembers, balance=False)
    except ConfigError as exc:
        return MatchedAttack(None, int(forget_idx.size), f"too few matched samples ({exc})")
    return MatchedAttack(accuracy, int(forget_idx.size))


@dataclass(frozen=True)
class LabelShift:
    """How far the class mixes of forget and unseen are apart. ``tv`` is the total variation
    distance between the two class distributions (multi-class), or the largest difference of a
    label's positive rate (multi-label: each label's own total variation); ``forget`` and ``unseen``
    are the per-class shares (positive rates)."""

    tv: float
    forget: dict[str, float]
    unseen: dict[str, float]

    def warning(self, threshold: float = LABEL_SHIFT_TV) -> str | None:
        """A one-line warning with the numbers when ``tv`` exceeds ``threshold``, else None."""
        if self.tv <= threshold + 1e-9:  # 0.8 - 0.7 is 0.10000000000000009 in floats
            return None
        forget, unseen = (
            ", ".join(f"{k} {v:.2f}" for k, v in d.items()) for d in (self.forget, self.unseen)
        )
        return (
            f"forget and unseen have different class mixes (total variation {self.tv:.2f} > "
            f"{threshold:g}; forget: {forget}; unseen: {unseen}): the "
            "published attack (mia_acc, nomus) can measure the label instead of membership; "
            "read mia_acc_matched and nomus_matched"
        )

    def to_dict(self) -> dict[str, object]:
        return {"tv": self.tv, "forget": self.forget, "unseen": self.unseen}


def _shares(keys: list[Hashable], task: str, names: Sequence[str]) -> dict[str, float]:
    if not keys:
        return {name: 0.0 for name in names}
    if task == "multiclass":
        counts = np.bincount(np.asarray(keys, np.int64), minlength=len(names))
        return {name: float(c) / len(keys) for name, c in zip(names, counts, strict=False)}
    rates = np.asarray(keys, np.float64).mean(axis=0)
    return {name: float(r) for name, r in zip(names, rates, strict=False)}


def label_shift(
    forget_labels: object,
    unseen_labels: object,
    task: str,
    class_names: Sequence[str] | None = None,
) -> LabelShift:
    """The :class:`LabelShift` between forget and unseen labels (``class_names`` name the
    classes or labels; default their indices)."""
    forget_keys, unseen_keys = _keys(forget_labels, task), _keys(unseen_labels, task)
    if class_names is None:
        if task == "multiclass":
            n = max([*forget_keys, *unseen_keys], default=-1) + 1
        else:
            n = len(next(iter(forget_keys or unseen_keys), ()))
        class_names = [str(i) for i in range(n)]
    forget = _shares(forget_keys, task, class_names)
    unseen = _shares(unseen_keys, task, class_names)
    differences = [abs(forget[name] - unseen[name]) for name in class_names]
    tv = 0.5 * sum(differences) if task == "multiclass" else max(differences, default=0.0)
    return LabelShift(float(tv), forget, unseen)


def matched_attack_reason(
    forget_labels: object, unseen_labels: object, task: str, *, seed: int = MATCH_SEED
) -> str | None:
    """Why :func:`matched_mia_accuracy` cannot be run on these labels (its ``reason``), or None
    when it can: whether it runs depends on the labels only, so commands can say why the
    matched keys are missing without the model's losses."""
    forget_idx, _ = matched_indices(forget_labels, unseen_labels, task, seed=seed)
    if forget_idx.size == 0:
        return _NO_SHARED_CLASS
    try:  # the checks mia_accuracy makes before fitting (its default 10 folds of 10%)
        check_attack_split(int(forget_idx.size), int(forget_idx.size), 10, 0.1)
    except ConfigError as exc:
        return f"too few matched samples ({exc})"
    return None
