"""Seeded, deterministic split builders and forget-request resolution.

``identity_split`` assigns whole people to splits (the paper's task-agnostic identity setting);
``instance_split`` assigns images (optionally within each person or class). The same records,
sizes and seed always give the same problem; identities are sorted before shuffling so the
result does not depend on file-system order.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict, deque
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords, shown
from dlfd.errors import DataError, SplitError
from dlfd.io import read_file_text

SplitSizes = Mapping[str, int | float]


def allocate(total: int, sizes: SplitSizes) -> dict[str, int]:
    """Turn split sizes into counts out of ``total`` items. Integers are exact counts (their sum may
    not exceed ``total``; leftovers stay unused); floats are fractions that must sum to 1 and are
    rounded by largest remainder."""
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise SplitError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sizes.values()):
        counts = {k: int(v) for k, v in sizes.items()}
        if any(v < 0 for v in counts.values()):
            raise SplitError(f"split sizes must be non-negative, got {dict(sizes)}")
        if sum(counts.values()) > total:
            raise SplitError(
                f"split sizes {counts} need {sum(counts.values())} items, have {total}"
            )
        return counts
    fractions = {k: float(v) for k, v in sizes.items()}
    total_fraction = sum(fractions.values())
    if (
        not all(math.isfinite(v) and v >= 0 for v in fractions.values())
        or abs(total_fraction - 1.0) > 1e-6
    ):
        raise SplitError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    # Rescale so the shares sum to exactly ``total``: within the tolerance above, a sum slightly
    # over 1 would otherwise hand out more items than there are.
    raw = {k: v / total_fraction * total for k, v in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    order = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), SPLITS.index(k)))
    for k in order[: max(0, total - sum(counts.values()))]:
        counts[k] += 1
    return counts


def _stratum_quotas(
    counts: Mapping[str, int], group_sizes: Mapping[Hashable, int]
) -> dict[tuple[str, Hashable], int]:
    """How many items of each group (stratum) each split takes. The proportional share of group
    ``g`` in split ``s`` is ``counts[s] * n_g / n``. The quotas are a controlled rounding of these
    shares: each is the floor or the ceiling of its share, every split gets exactly ``counts[s]``
    items and no group is over-drawn (the items left over when ``counts`` sum to less than ``n``
    form one more row, spread in proportion too). Remainders go largest first; when that greedy pass
    gets stuck, an augmenting path moves earlier choices (a bipartite b-matching, always solvable
    because the fractional shares are themselves a solution)."""
    n = sum(group_sizes.values())
    rows = {s: int(c) for s, c in counts.items() if c}
    if n > sum(rows.values()):
        rows[""] = n - sum(rows.values())  # unused items
    groups = list(group_sizes)
    share = {(s, g): Fraction(rows[s] * group_sizes[g], n) for s in rows for g in groups}
    floor = {cell: math.floor(v) for cell, v in share.items()}
    quota = dict(floor)
    row_need = {s: rows[s] - sum(floor[s, g] for g in groups) for s in rows}
    col_need = {g: group_sizes[g] - sum(floor[s, g] for s in rows) for g in groups}
    row_order = list(rows)
    cells = sorted(
        (cell for cell in share if share[cell] != floor[cell]),
        key=lambda cell: (floor[cell] - share[cell], row_order.index(cell[0]), str(cell[1])),
    )
    for s, g in cells:
        if row_need[s] and col_need[g]:
            quota[s, g] += 1
            row_need[s] -= 1
            col_need[g] -= 1
    for start in row_order:
        while row_need[start]:
            # Breadth-first search for row -> (free cell) -> group -> (raised cell) -> row ...
            # ending at a group that still has items to give.
            came_from: dict[tuple[str, object], tuple[str, object] | None] = {("row", start): None}
            queue = deque([("row", start)])
            end = None
            while queue and end is None:
                kind, key = queue.popleft()
                if kind == "row":
                    nexts = [("group", g) for g in groups if share[key, g] > quota[key, g]]
                else:
                    nexts = [("row", s) for s in row_order if quota[s, key] > floor[s, key]]
                for node in nexts:
                    if node not in came_from:
                        came_from[node] = (kind, key)
                        queue.append(node)
                        if node[0] == "group" and col_need[node[1]]:
                            end = node
                            break
            if end is None:  # unreachable: the fractional shares are a feasible solution
                raise SplitError(
                    f"cannot stratify split sizes {dict(counts)} over {dict(group_sizes)}"
                )
            col_need[end[1]] -= 1
            row_need[start] -= 1
            node = end
            while (prev := came_from[node]) is not None:
                if node[0] == "group":
                    quota[prev[1], node[1]] += 1
                else:
                    quota[node[1], prev[1]] -= 1
                node = prev
    return {cell: q for cell, q in quota.items() if cell[0] and q}


def _stratified_assign(
    items: Sequence[str],
    sizes: SplitSizes,
    rng: np.random.Generator,
    strata: Mapping[str, Hashable] | None,
) -> dict[str, list[str]]:
    """Assign ``items`` to splits; with ``strata``, each split gets a proportional share of each."""
    counts = allocate(len(items), sizes)
    groups: dict[Hashable, list[str]] = defaultdict(list)
    for item in items:
        groups[strata[item] if strata is not None else 0].append(item)
    pools = {
        g: list(rng.permutation(np.asarray(members, dtype=object)))
        for g, members in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }
    quota = _stratum_quotas(counts, {g: len(pool) for g, pool in pools.items()})
    assigned: dict[str, list[str]] = {}
    for split in SPLITS:
        chosen: list[str] = []
        for g, pool in pools.items():
            take = quota.get((split, g), 0)
            chosen.extend(pool[:take])
            pools[g] = pool[take:]
        assigned[split] = chosen
    return assigned


def identity_split(
    records: ImageRecords,
    sizes: SplitSizes,
    *,
    seed: int,
    stratify: Mapping[str, Hashable] | None = None,
    name: str = "",
    check_content: bool = True,
) -> UnlearningProblem:
    """Assign whole identities to splits; ``sizes`` count (or fraction) identities per split.
    ``stratify`` maps each identity to a stratum (e.g. "wears glasses in some photo") so that every
    split receives a proportional share of each stratum."""
    if not records.has_identities:
        missing = [records.paths[i] for i, who in enumerate(records.identities) if not who]
        raise SplitError(
            f"identity split needs an identity for every sample; missing for {missing[:5]}"
        )
    people = records.unique_identities()
    lacking = [p for p in people if p not in stratify] if stratify is not None else []
    if lacking:
        raise SplitError(f"no stratum given for identities {lacking[:5]}")
    assigned = _stratified_assign(people, sizes, np.random.default_rng(seed), stratify)
    arrays = {split: records.indices_of_identities(assigned[split]) for split in SPLITS}
    return UnlearningProblem(
        records=records,
        level="identity",
        split_seed=seed,
        name=name,
        check_content=check_content,
        **arrays,
    )


def instance_split(
    records: ImageRecords,
    sizes: SplitSizes,
    *,
    seed: int,
    group_by: str | None = None,
    name: str = "",
    check_content: bool = True,
) -> UnlearningProblem:
    """Assign images to splits at random; with ``group_by`` ("identity" or "label") the sizes
    apply within every group (e.g. 2 forget images of each person)."""
    if group_by not in (None, "identity", "label"):
        raise SplitError(f"group_by must be None, 'identity' or 'label', got {group_by!r}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for i in range(len(records)):
        if group_by == "identity":
            key = records.identities[i]
            if not key:
                raise SplitError(f"sample {records.paths[i]!r} has no identity to group by")
        elif group_by == "label":
            key = str(records.labels[i].tolist())
        else:
            key = ""
        groups[key].append(str(i))
    arrays: dict[str, list[int]] = {split: [] for split in SPLITS}
    for key in sorted(groups):
        try:
            assigned = _stratified_assign(groups[key], sizes, rng, None)
        except SplitError as exc:
            if group_by is None:
                raise
            raise SplitError(f"{group_by} {key!r}: {exc}") from None
        for split, items in assigned.items():
            arrays[split].extend(int(i) for i in items)
    return UnlearningProblem(
        records=records,
        level="instance",
        split_seed=seed,
        name=name,
        check_content=check_content,
        **{s: np.asarray(sorted(v), np.int64) for s, v in arrays.items()},
    )


#: Largest forget list read (a list of people or image paths, not a data set).
MAX_FORGET_LIST_BYTES = 64 << 20


def parse_forget_line(line: str) -> str:
    """The entry of one forget-list line (``""`` for a blank or comment line). ``#`` starts a
    comment. An identity or file name that contains ``#`` is written either with the ``#`` escaped
    as ``\\#`` (and a literal backslash before it as ``\\\\``), or as a JSON string in double quotes
    (``"person#1"``), which takes the line literally up to its closing quote; a comment may follow
    it."""
    text = line.strip()
    if text.startswith('"'):
        try:
            entry, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            raise DataError(
                f"forget list line {shown(line)} opens a quote it does not close"
            ) from None
        rest = text[end:].strip()
        if not isinstance(entry, str) or (rest and not rest.startswith("#")):
            raise DataError(
                f"forget list line {shown(line)}: only a comment may follow a quoted entry"
            )
        return entry.strip()
    # up to the first unescaped ``#``, then unescaped
    before_comment = re.match(r"(?:\\[#\\]|[^#])*", text).group()  # type: ignore[union-attr]
    return re.sub(r"\\([#\\])", r"\1", before_comment).strip()


def read_forget_list(path: str | Path) -> list[str]:
    """Read a forget request: one identity or relative image path per line (``#`` comments;
    see :func:`parse_forget_line` for names that contain ``#``)."""
    text = read_file_text(path, "forget list", limit=MAX_FORGET_LIST_BYTES)
    entries = [entry for line in text.splitlines() if (entry := parse_forget_line(line))]
    if not entries:
        raise DataError(f"forget list {path} names nobody and no image")
    return entries


def _named(records: ImageRecords, entries: Sequence[str]) -> list[tuple[str, list[int], bool]]:
    """``(key, sample indices, is a person)`` of each forget-request entry, an identity or a
    relative image path; unknown entries raise :class:`SplitError` naming them."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, who in enumerate(records.identities):
        if who:
            members[who].append(i)
    named, unknown = [], []
    for entry in entries:
        key = entry.strip().replace("\\", "/")
        key = key[2:] if key.startswith("./") else key
        index = records.index_of(key)
        if key in members:
            named.append((key, members[key], True))
        elif index is None:
            unknown.append(entry)
        else:
            named.append((key, [index], False))
    if unknown:
        names = ", ".join(repr(u) for u in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise SplitError(f"forget request names unknown people or images: {names}{more}")
    return named


def resolve_forget_request(records: ImageRecords, entries: Sequence[str]) -> np.ndarray:
    """Indices named by a forget request; each entry is an identity or a relative image path.
    Unknown entries raise :class:`SplitError` naming them."""
    chosen = {i for _, indices, _ in _named(records, entries) for i in indices}
    return np.asarray(sorted(chosen), np.int64)


def apply_forget_request(problem: UnlearningProblem, entries: Sequence[str]) -> UnlearningProblem:
    """``problem`` with its forget set replaced by the training images a request names. A named
    person contributes their training images; a named image must be a training image. In an
    identity-level problem a person is forgotten whole or not at all, so naming only some of a
    person's training images is refused with a hint to name the person."""
    records = problem.records
    train = set(problem.train.tolist())
    where = {int(i): split for split in SPLITS for i in problem.split(split)}
    chosen: set[int] = set()
    problems: list[str] = []
    for key, indices, person in _named(records, entries):
        inside = [i for i in indices if i in train]
        chosen.update(inside)
        if person and not inside:
            held = sorted({where.get(i, "no split") for i in indices})
            problems.append(f"person {key!r} has no training images (in {', '.join(held)})")
        elif not inside:
            problems.append(
                f"image {key!r} is in {where.get(indices[0], 'no split')}, not in train"
            )
    if problems:
        raise SplitError(f"forget request: {'; '.join(problems[:5])}")
    if problem.level == "identity":
        for person in sorted({records.identities[i] for i in chosen} - {""}):
            members = records.indices_of_identities([person]).tolist()
            rest = [i for i in members if i in train and i not in chosen]
            if rest:
                raise SplitError(
                    f"{problem.name or 'this scenario'} forgets whole people (identity-level): "
                    f"{person!r} has {len(rest)} more training images that would stay in "
                    f"retain; name the person {person!r} instead of single images"
                )
    return problem.with_forget(np.asarray(sorted(chosen), np.int64))
