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

from dlfd.data.leakage import drop_leaked, find_leaks
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.errors import ConfigError, LeakError

LEAK_POLICIES: tuple[str, ...] = ("refuse", "drop", "drop-near")
VAL_FRACTION = 0.2


def carve_val(
    groups: np.ndarray, candidates: np.ndarray, seed: int, fraction: float = VAL_FRACTION
) -> np.ndarray:
    """The samples of a seeded ``fraction`` of the groups (families, people) in ``candidates``:
    a validation split, for model selection only, of people never trained on. At least one group
    is carved and one left for test; with a single group nothing is carved."""
    candidates = np.asarray(candidates, np.int64)
    names = sorted(set(np.asarray(groups)[candidates].tolist()))
    if len(names) < 2:
        return np.zeros(0, np.int64)
    k = min(max(1, round(fraction * len(names))), len(names) - 1)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(np.asarray(names, dtype=object), size=k, replace=False).tolist())
    return np.asarray([i for i in candidates if groups[i] in chosen], np.int64)


def held_out_val(
    groups: np.ndarray, held_test: np.ndarray, seed: int, option: str
) -> dict[str, np.ndarray]:
    """``val`` and ``test`` of a published test set: with option ``carve``, :func:`carve_val`
    of its groups (people, families) becomes ``val``; with ``none``, ``val`` is empty."""
    val = carve_val(groups, held_test, seed) if option == "carve" else np.zeros(0, np.int64)
    return {"val": val, "test": np.setdiff1d(held_test, val)}


def assemble_problem(
    records: ImageRecords,
    assignment: Mapping[str, np.ndarray],
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
        perceptual = records.perceptual_hashes if near else None
        content = records.content_hashes
        report = find_leaks(records.identities, content, arrays, level=level, perceptual=perceptual)
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
    build: Callable[[], UnlearningProblem], split_seed: int, name: str, leaks: str
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
    return assemble_problem(records, assignment, level, split_seed, name, leaks)  # type: ignore[arg-type]
