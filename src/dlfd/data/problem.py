"""The five index sets of an unlearning problem over one :class:`ImageRecords` table.

``train = retain ∪ forget`` is what the original model saw; the retrained reference saw only
``retain``. ``val`` is for monitoring and model selection only; ``test`` reports task accuracy;
``unseen`` holds the non-members of the membership-inference attack. Construction validates the
splits and refuses leaks, naming the offending items.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from dlfd.data.leakage import LEVELS, SPLITS, Leak, find_leaks
from dlfd.data.records import ImageRecords
from dlfd.errors import DataError, LeakError, SplitError
from dlfd.io import sha256_bytes

Level = Literal["identity", "mixed", "instance"]
_MAX_NAMED = 5


def _name_items(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    more = len(items) - _MAX_NAMED
    return shown + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True, eq=False)
class UnlearningProblem:
    """Retain/forget/val/test/unseen index arrays over ``records``, validated on construction.
    ``level`` is ``"identity"`` when whole people are assigned to splits (then an identity in two
    splits is a leak), ``"instance"`` when images are (identities may repeat across splits), or
    ``"mixed"`` when forget and retain are images of the same people while val/test/unseen hold
    people never trained on (MUFAC's published split). ``check_content`` hashes every image's pixels
    to refuse identical pictures in two splits. A multiclass problem needs at least two classes (a
    DataError otherwise: a one-class task would train a one-output model that learns nothing);
    :meth:`check_trainable`, called before training, also needs two of them present in the training
    data. ``dropped`` lists the samples a builder removed as leaks (kept for the record; they are in
    no split)."""

    records: ImageRecords
    retain: np.ndarray
    forget: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unseen: np.ndarray
    level: Level = "identity"
    split_seed: int = 0
    name: str = ""
    check_content: bool = True
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise SplitError(f"level must be one of {LEVELS}, got {self.level!r}")
        for split in SPLITS:
            raw = np.asarray(getattr(self, split))
            if raw.size and not np.issubdtype(raw.dtype, np.integer):
                raise SplitError(f"{split} indices must be integers, got dtype {raw.dtype}")
            arr = np.sort(raw.astype(np.int64).ravel())
            arr.setflags(write=False)
            object.__setattr__(self, split, arr)
        self._validate()

    def split(self, name: str) -> np.ndarray:
        """Index array of split ``name`` (one of :data:`SPLITS`, or ``"train"``)."""
        if name == "train":
            return self.train
        if name not in SPLITS:
            raise SplitError(f"unknown split {name!r}; expected one of {(*SPLITS, 'train')}")
        return getattr(self, name)

    @property
    def train(self) -> np.ndarray:
        """retain ∪ forget, sorted: the original model's training set."""
        return np.sort(np.concatenate([self.retain, self.forget]))

    @property
    def forget_keys(self) -> list[str]:
        """Sorted relative paths of the forget set (what the forget-list hash covers)."""
        return sorted(self.records.paths[i] for i in self.forget)

    @property
    def forget_sha256(self) -> str:
        """sha256 of the newline-joined sorted forget keys: identifies the forget request."""
        return sha256_bytes("\n".join(self.forget_keys).encode("utf-8"))

    def forget_identities(self) -> list[str]:
        """Sorted identities of the forget set (empty when identities are unknown)."""
        return sorted({self.records.identities[i] for i in self.forget} - {""})

    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {split: len(self.split(split)) for split in SPLITS}

    def summary(self) -> dict[str, dict[str, object]]:
        """Per split: sample count, identity count and class counts."""
        out: dict[str, dict[str, object]] = {}
        for split in SPLITS:
            idx = self.split(split)
            who = {self.records.identities[i] for i in idx} - {""}
            out[split] = {
                "samples": len(idx),
                "identities": len(who),
                "classes": self.records.class_counts(idx),
            }
        return out

    def with_forget(self, indices: np.ndarray) -> UnlearningProblem:
        """A new problem whose forget set is ``indices`` (taken from train; the rest is retain)."""
        indices = np.unique(np.asarray(indices, np.int64))
        train = self.train
        outside = np.setdiff1d(indices, train)
        if outside.size:
            n = len(self.records)
            names = [self.records.paths[i] if 0 <= i < n else f"sample {i}" for i in outside]
            raise SplitError(f"forget items not in the training set: {_name_items(names)}")
        return replace(self, retain=np.setdiff1d(train, indices), forget=indices)

    def _validate(self) -> None:
        n = len(self.records)
        for split in ("forget", "retain"):
            if len(self.split(split)) == 0:
                raise SplitError(f"the {split} set of {self.name or self.records.name!r} is empty")
        owner: dict[int, str] = {}
        for split in SPLITS:
            idx = self.split(split)
            if idx.size and (idx[0] < 0 or idx[-1] >= n):
                bad = int(idx[0] if idx[0] < 0 else idx[-1])
                raise SplitError(f"{split} refers to sample {bad}, not in the {n}-sample dataset")
            dup = idx[1:][idx[1:] == idx[:-1]]
            if dup.size:
                names = [self.records.paths[i] for i in np.unique(dup)]
                raise SplitError(f"{split} lists the same sample twice: {_name_items(names)}")
            clashes = [f"{self.records.paths[i]} ({owner[i]}, {split})" for i in idx if i in owner]
            if clashes:
                raise SplitError(f"samples in two splits: {_name_items(clashes)}")
            owner.update((int(i), split) for i in idx)
        self._check_class_names()
        assignment = {split: self.split(split) for split in SPLITS}
        content = self.records.content_hashes if self.check_content else None
        report = find_leaks(self.records.identities, content, assignment, level=self.level)
        if report.leaks:
            raise LeakError(
                self._describe(report.leaks),
                report=report,
                assignment=assignment,
                records=self.records,
                level=self.level,
            )

    def _check_class_names(self) -> None:
        """Refuse a multiclass task with fewer than two classes."""
        records = self.records
        names = records.class_names
        if records.task == "multiclass" and len(names) < 2:
            only = f"only the class {names[0]!r}" if names else "no class"
            raise DataError(
                f"dataset {self.name or records.name!r} defines {only}: a classification task "
                f"needs at least 2 (check the label column)"
            )

    def check_trainable(self, split: str = "train") -> None:
        """Refuse to train a multiclass model on ``split`` (default: retain + forget, the
        original's data) when fewer than two classes are present in it, naming the dataset
        and the class; multilabel problems pass."""
        self._check_class_names()
        records = self.records
        if records.task != "multiclass":
            return
        present = np.unique(np.asarray(records.labels)[self.split(split)])
        if present.size < 2:
            names = records.class_names
            only = repr(names[int(present[0])]) if present.size else "none"
            what = "retain + forget" if split == "train" else split
            raise DataError(
                f"the training data ({what}) of {self.name or records.name!r} holds only the "
                f"class {only} of {len(names)}: a classification task needs at least 2 classes "
                f"present (check the label column, the forget list or the split options)"
            )

    def _describe(self, leaks: tuple[Leak, ...]) -> str:
        """One line naming the leaks, with the way out."""
        paths = self.records.paths
        shown = []
        for leak in leaks:
            where = " and ".join(f"{split} ({paths[i]})" for split, i in _firsts(leak.items))
            label = leak.key if leak.kind == "identity" else leak.key[:12]
            shown.append(f"{label!r} in {where}")
        what = {"identity": "identity", "duplicate": "identical image content"}
        kinds = sorted({what[leak.kind] for leak in leaks})
        return (
            f"{' and '.join(kinds)} shared across splits: {_name_items(shown)}; "
            f"`dlfd data check` reports all leaks, scenario option leaks=drop removes them"
        )


def _firsts(items: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """The first item of each split."""
    seen: dict[str, int] = {}
    for split, i in items:
        seen.setdefault(split, i)
    return list(seen.items())
