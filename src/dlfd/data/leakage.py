"""Leaks between the splits of an unlearning problem: find them, report them, drop them.

Three kinds: the same *identity* in two splits that must hold different people; the same
picture (identical decoded pixels: *duplicate*) in two splits; and *near-duplicates* (perceptual
hashes within a few bits: the same photo resized or re-encoded). Which split pairs must not
share people depends on the problem's level: all pairs for ``identity``; none for ``instance``;
for ``mixed`` (forget and retain are images of the same people, held-out splits are other
people) every pair except retain/forget.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlfd.errors import ConfigError

SPLITS: tuple[str, ...] = ("retain", "forget", "val", "test", "unseen")
#: When a leaked item must go, the copy in the earliest split of this order is kept: a forget
#: request wins over retaining, and evaluation splits give way to training splits.
KEEP_ORDER: tuple[str, ...] = ("forget", "retain", "val", "test", "unseen")
LEVELS: tuple[str, ...] = ("identity", "mixed", "instance")
KINDS: tuple[str, ...] = ("identity", "duplicate", "near-duplicate")
DEFAULT_NEAR_BITS = 4


def identity_pairs(level: str) -> set[frozenset[str]]:
    """Pairs of splits that may not share an identity at ``level``."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {LEVELS}, got {level!r}")
    pairs = {frozenset(p) for p in itertools.combinations(SPLITS, 2)}
    if level == "mixed":
        pairs.discard(frozenset(("retain", "forget")))
    return set() if level == "instance" else pairs


@dataclass(frozen=True)
class Leak:
    """One leaked key and where it occurs: ``items`` are (split, sample index) pairs."""

    kind: str
    key: str
    items: tuple[tuple[str, int], ...]

    @property
    def splits(self) -> list[str]:
        return sorted({split for split, _ in self.items}, key=SPLITS.index)


@dataclass(frozen=True)
class LeakReport:
    """All leaks found in one problem (or one proposed assignment of samples to splits)."""

    leaks: tuple[Leak, ...]

    def of_kind(self, kind: str) -> list[Leak]:
        return [leak for leak in self.leaks if leak.kind == kind]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of_kind(kind)) for kind in KINDS}

    def to_dict(self, paths: Sequence[str], max_examples: int = 10) -> dict[str, Any]:
        """JSON-ready summary: counts per kind and the first examples with their files."""
        return {
            "counts": self.counts(),
            "examples": {
                kind: [
                    {
                        "key": leak.key,
                        "splits": leak.splits,
                        "files": [f"{split}:{paths[i]}" for split, i in leak.items[:6]],
                    }
                    for leak in self.of_kind(kind)[:max_examples]
                ]
                for kind in KINDS
            },
        }


def shared_keys(
    kind: str,
    keys: Sequence[str],
    assignment: Mapping[str, np.ndarray],
    pairs: set[frozenset[str]] | None = None,
) -> list[Leak]:
    """Keys (identities, content hashes) present in two splits of a forbidden pair. ``pairs=None``
    forbids every pair; empty keys (unknown identity) never leak."""
    where: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split in SPLITS:
        for i in assignment.get(split, ()):
            key = keys[int(i)]
            if key:
                where[key].append((split, int(i)))
    leaks = []
    for key, items in where.items():
        present = itertools.combinations(sorted({split for split, _ in items}), 2)
        if any(pairs is None or frozenset(p) in pairs for p in present):
            leaks.append(Leak(kind, key, tuple(items)))
    return sorted(leaks, key=lambda leak: (leak.items[0][1], leak.key))


def near_duplicates(
    hashes: np.ndarray, assignment: Mapping[str, np.ndarray], max_bits: int = DEFAULT_NEAR_BITS
) -> list[Leak]:
    """Pairs of images in different splits whose 64-bit perceptual hashes differ in at most
    ``max_bits`` bits (exact pixel duplicates included)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    leaks = []
    for s1, s2 in itertools.combinations(SPLITS, 2):
        a = np.asarray(assignment.get(s1, ()), np.int64)
        b = np.asarray(assignment.get(s2, ()), np.int64)
        if not a.size or not b.size:
            continue
        hb = hashes[b]
        for start in range(0, a.size, 512):
            rows = a[start : start + 512]
            distance = np.bitwise_count(hashes[rows][:, None] ^ hb[None, :])
            for r, c in zip(*np.nonzero(distance <= max_bits), strict=True):
                items = ((s1, int(rows[r])), (s2, int(b[c])))
                leaks.append(Leak("near-duplicate", f"{int(distance[r, c])} bits", items))
    return leaks


def find_leaks(
    keys_identity: Sequence[str],
    keys_content: Sequence[str] | None,
    assignment: Mapping[str, np.ndarray],
    *,
    level: str,
    perceptual: np.ndarray | None = None,
    near_bits: int = DEFAULT_NEAR_BITS,
) -> LeakReport:
    """Every identity, duplicate and (if ``perceptual`` hashes are given) near-duplicate leak."""
    leaks = shared_keys("identity", keys_identity, assignment, identity_pairs(level))
    if keys_content is not None:
        leaks += shared_keys("duplicate", keys_content, assignment)
    if perceptual is not None:
        leaks += near_duplicates(perceptual, assignment, near_bits)
    return LeakReport(tuple(leaks))


def drop_leaked(
    assignment: Mapping[str, np.ndarray], report: LeakReport, kinds: Sequence[str], *, level: str
) -> tuple[dict[str, np.ndarray], list[int]]:
    """Remove leaked samples; returns the new assignment and the dropped sample indices. For each
    leak the copies in the earliest split of :data:`KEEP_ORDER` stay, together with those in splits
    allowed to share it at ``level`` (forget and retain people at ``mixed``)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown leak kinds {sorted(unknown)}; expected {KINDS}")
    forbidden = identity_pairs(level)
    drop: set[int] = set()
    for leak in report.leaks:
        if leak.kind not in kinds:
            continue
        keep = min((split for split, _ in leak.items), key=KEEP_ORDER.index)
        allowed = {keep}
        if leak.kind == "identity":
            allowed |= {s for s in SPLITS if frozenset((keep, s)) not in forbidden}
        drop.update(i for split, i in leak.items if split not in allowed)
    new = {
        split: np.asarray([i for i in assignment.get(split, ()) if int(i) not in drop], np.int64)
        for split in SPLITS
    }
    return new, sorted(drop)
