"""Turn a builder's split assignment into a validated problem, dropping leaks on request.

Published datasets are not always clean (the public MUFAC release has duplicate faces across
its splits). Every scenario over user-held data takes the option ``leaks``:
``refuse`` (default: stop and name the leaks), ``drop`` (remove identity and exact-duplicate
leaks, keeping each forget/training copy) or ``drop-near`` (also near-duplicates, by perceptual
hash). Dropped samples are listed in ``problem.dropped``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from dlfd.data.leakage import DEFAULT_NEAR_BITS, drop_leaked, find_leaks
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.errors import ConfigError, LeakError

LEAK_POLICIES: tuple[str, ...] = ("refuse", "drop", "drop-near")
VAL_FRACTION = 0.2


def carve_val(
    groups: np.ndarray, candidates: np.ndarray, seed: int, fraction: float = VAL_FRACTION
) -> np.ndarray:
    """The samples of a seeded ``fraction`` of the groups (families, people) in ``candidates``.

    Used to carve a validation split, for model selection only, out of a published test set
    whose people were never trained on. At least one group is carved and at least one is left
    for test; with a single group nothing can be carved and an empty array is returned.
    """
    candidates = np.asarray(candidates, np.int64)
    names = sorted(set(np.asarray(groups)[candidates].tolist()))
    if len(names) < 2:
        return np.zeros(0, np.int64)
    k = min(max(1, round(fraction * len(names))), len(names) - 1)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(np.asarray(names, dtype=object), size=k, replace=False).tolist())
    return np.asarray([i for i in candidates if groups[i] in chosen], np.int64)


def assemble_problem(
    records: ImageRecords,
    assignment: Mapping[str, np.ndarray],
    *,
    level: str,
    split_seed: int,
    name: str,
    leaks: str = "refuse",
) -> UnlearningProblem:
    """Build the problem; with ``leaks`` other than ``refuse``, remove leaked samples first."""
    if leaks not in LEAK_POLICIES:
        raise ConfigError(f"leaks must be one of {list(LEAK_POLICIES)}, got {leaks!r}")
    arrays = {split: np.asarray(assignment.get(split, ()), np.int64) for split in SPLITS}
    dropped: list[int] = []
    if leaks != "refuse":
        near = leaks == "drop-near"
        report = find_leaks(
            records.identities,
            records.content_hashes,
            arrays,
            level=level,
            perceptual=records.perceptual_hashes if near else None,
            near_bits=DEFAULT_NEAR_BITS,
        )
        kinds = ("identity", "duplicate", "near-duplicate") if near else ("identity", "duplicate")
        arrays, dropped = drop_leaked(arrays, report, kinds, level=level)
    return UnlearningProblem(
        records=records,
        level=level,  # type: ignore[arg-type]
        split_seed=split_seed,
        name=name,
        dropped=tuple(records.paths[i] for i in dropped),
        **arrays,
    )


def build_with_leak_policy(
    build: Callable[[], UnlearningProblem], *, split_seed: int, name: str, leaks: str
) -> UnlearningProblem:
    """Run a split builder under a leak policy: ``refuse`` keeps its verdict; otherwise its
    assignment (refused or not: near-duplicates never make it refuse) is rebuilt with the
    leaked samples dropped."""
    try:
        problem = build()
    except LeakError as exc:
        if leaks == "refuse":
            raise
        records, assignment, level = exc.records, exc.assignment, exc.level
    else:
        if leaks == "refuse":
            return problem
        records, level = problem.records, problem.level
        assignment = {split: problem.split(split) for split in SPLITS}
    return assemble_problem(
        records,  # type: ignore[arg-type]
        assignment,  # type: ignore[arg-type]
        level=level,
        split_seed=split_seed,
        name=name,
        leaks=leaks,
    )
