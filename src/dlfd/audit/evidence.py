"""Per-person and per-image membership evidence on the benchmark attack's feature (the loss).

Each forgotten photo gets an *exposure*: the share of never-seen photos (unseen split) that the
model fits worse. Comparing a person's photos under the original, the unlearned and the
retrained model shows whether *that person* still looks remembered (0.5 = like a stranger).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def loss_exposure(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> np.ndarray:
    """For each member (forget) image: the share of never-seen photos whose loss is higher (ties
    count half). A non-parametric membership score on the benchmark attack's feature: about 0.5
    when the model treats forgotten photos like strangers', near 1 when it still fits them
    better than any stranger's."""
    members = np.asarray(member_losses, np.float64)
    nonmembers = np.sort(np.asarray(nonmember_losses, np.float64))
    below = np.searchsorted(nonmembers, members, side="left")
    not_above = np.searchsorted(nonmembers, members, side="right")
    higher = len(nonmembers) - not_above
    ties = not_above - below
    return (higher + 0.5 * ties) / len(nonmembers)


@dataclass(frozen=True)
class PersonEvidence:
    """Mean exposure of one forgotten person's images under each model."""

    person: str
    images: int
    scores: dict[str, float]
    per_image: list[dict[str, object]]


def per_person(
    identities: Sequence[str], scores: dict[str, np.ndarray], keys: Sequence[str] | None = None
) -> list[PersonEvidence]:
    """Each person's mean score per model, and (with ``keys``) every image's scores; persons
    sorted, images without an identity grouped under ``"(unknown)"``."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, who in enumerate(identities):
        groups[who or "(unknown)"].append(i)
    evidence = []
    for person, idx in sorted(groups.items()):
        means = {m: float(np.mean(s[idx])) for m, s in scores.items()}
        images = (
            []
            if keys is None
            else [{"image": keys[i], **{m: float(s[i]) for m, s in scores.items()}} for i in idx]
        )
        evidence.append(PersonEvidence(person, len(idx), means, images))
    return evidence


def most_exposed(
    keys: Sequence[str], identities: Sequence[str], scores: np.ndarray, k: int
) -> list[dict[str, object]]:
    """The ``k`` forget images the attacker is most sure are members (highest score first)."""
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return [{"image": keys[i], "person": identities[i], "score": float(scores[i])} for i in order]
