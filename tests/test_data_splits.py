"""UnlearningProblem validation, seeded split builders and forget requests."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pytest

from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.splits import (
    allocate,
    apply_forget_request,
    identity_split,
    instance_split,
    read_forget_list,
    resolve_forget_request,
)
from dlfd.errors import DataError, SplitError


@pytest.fixture
def records(make_records) -> ImageRecords:
    """6 people p0..p5 x 4 images p<k>/<j>.png; index = 4 * k + j."""
    return make_records(6, 4)


def _by_person(**people: list[int]) -> dict[str, np.ndarray]:
    """Index arrays of whole people of the 6x4 fixture: ``retain=[0, 1]`` -> p0 and p1."""
    arrays = {s: np.asarray([], np.int64) for s in SPLITS}
    for split, ks in people.items():
        arrays[split] = np.asarray([4 * k + j for k in ks for j in range(4)], np.int64)
    return arrays


def _problem(records, level="identity", **arrays) -> UnlearningProblem:
    return UnlearningProblem(records=records, level=level, name="toy", **arrays)


def _people(problem: UnlearningProblem, split: str) -> set[str]:
    return {problem.records.identities[i] for i in problem.split(split)}


# ---------------------------------------------------------------------- UnlearningProblem
def test_valid_problem_views(records):
    problem = _problem(records, **_by_person(retain=[2, 0], forget=[1], val=[3], test=[4]))
    assert problem.retain.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]  # sorted
    assert not problem.retain.flags.writeable
    assert problem.train.tolist() == sorted(problem.retain.tolist() + problem.forget.tolist())
    assert problem.split("train").tolist() == list(range(12))
    assert problem.sizes() == {"retain": 8, "forget": 4, "val": 4, "test": 4, "unseen": 0}
    assert problem.forget_identities() == ["p1"]
    assert problem.forget_keys == ["p1/0.png", "p1/1.png", "p1/2.png", "p1/3.png"]
    summary = problem.summary()
    assert summary["retain"] == {"samples": 8, "identities": 2, "classes": {"a": 4.0, "b": 4.0}}
    assert summary["unseen"]["samples"] == 0
    with pytest.raises(SplitError, match="unknown split 'holdout'"):
        problem.split("holdout")


def test_identity_in_two_splits_is_refused_at_identity_level(records):
    arrays = _by_person(retain=[0], forget=[1], test=[2])
    arrays["retain"] = np.append(arrays["retain"], 5)  # p1/1.png, p1's other photos are in forget
    arrays["forget"] = arrays["forget"][arrays["forget"] != 5]
    with pytest.raises(SplitError, match="identity shared across splits") as info:
        _problem(records, **arrays)
    assert "'p1' in retain (p1/1.png) and forget (p1/0.png)" in str(info.value)
    problem = _problem(records, level="instance", **arrays)  # fine when images are assigned
    assert 5 in problem.retain


def test_same_sample_in_two_splits_is_refused(records):
    arrays = _by_person(retain=[0], forget=[1], test=[2])
    arrays["test"] = np.append(arrays["test"], 1)
    with pytest.raises(SplitError, match=r"samples in two splits: p0/1\.png \(retain, test\)"):
        _problem(records, level="instance", **arrays)


def test_same_sample_twice_in_one_split_is_refused(records):
    arrays = _by_person(retain=[0], forget=[1])
    arrays["forget"] = np.append(arrays["forget"], 6)
    with pytest.raises(SplitError, match=r"forget lists the same sample twice: p1/2\.png"):
        _problem(records, **arrays)


def test_identical_image_content_in_two_splits_is_refused(tmp_path, write_image):
    root = tmp_path / "dups"
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / name)
    (root / "copy_of_a.png").write_bytes((root / "a.png").read_bytes())
    records = ImageRecords(
        root=root,
        paths=("a.png", "b.png", "c.png", "copy_of_a.png"),
        labels=np.array([0, 1, 0, 0]),
        identities=("", "", "", ""),
        class_names=("x", "y"),
    )
    arrays = dict(retain=[0, 1], forget=[2], val=[], test=[3], unseen=[])
    with pytest.raises(SplitError, match="identical image content shared across splits") as info:
        _problem(records, level="instance", **arrays)
    message = str(info.value)
    assert "retain (a.png)" in message and "test (copy_of_a.png)" in message
    assert records.content_hashes[0][:12] in message
    # the same copy inside one split is not a leak; the check can also be switched off
    _problem(records, level="instance", **dict(arrays, retain=[0, 1, 3], test=[]))
    UnlearningProblem(records=records, level="instance", check_content=False, **arrays)


@pytest.mark.parametrize("empty", ["forget", "retain"])
def test_empty_forget_or_retain_is_refused(records, empty):
    arrays = _by_person(retain=[0], forget=[1], test=[2])
    arrays[empty] = np.asarray([], np.int64)
    with pytest.raises(SplitError, match=f"the {empty} set of 'toy' is empty"):
        _problem(records, **arrays)


@pytest.mark.parametrize(("bad", "shown"), [(24, "sample 24"), (-1, "sample -1")])
def test_out_of_range_indices_are_refused(records, bad, shown):
    arrays = _by_person(retain=[0], forget=[1])
    arrays["unseen"] = np.asarray([bad])
    with pytest.raises(SplitError, match=f"unseen refers to {shown}, not in the 24-sample"):
        _problem(records, **arrays)


def test_non_integer_indices_are_refused(records):
    arrays = _by_person(retain=[0], forget=[1])
    arrays["test"] = np.asarray([8.0, 9.0])
    with pytest.raises(SplitError, match="test indices must be integers"):
        _problem(records, **arrays)
    with pytest.raises(SplitError, match="level must be"):
        _problem(records, level="person", **_by_person(retain=[0], forget=[1]))


def test_with_forget_moves_train_items_into_forget(records):
    problem = _problem(records, level="instance", **_by_person(retain=[0, 1], forget=[2], val=[3]))
    moved = problem.with_forget(np.array([0, 5, 5]))
    assert moved.forget.tolist() == [0, 5]
    assert moved.retain.tolist() == [i for i in problem.train.tolist() if i not in (0, 5)]
    assert moved.train.tolist() == problem.train.tolist()
    assert moved.val.tolist() == problem.val.tolist()
    assert (moved.level, moved.name) == ("instance", "toy")


def test_with_forget_refuses_items_outside_train_by_name(records):
    problem = _problem(records, **_by_person(retain=[0, 1], forget=[2], val=[3], test=[4]))
    with pytest.raises(SplitError, match="not in the training set") as info:
        problem.with_forget(np.array([0, 13, 17]))
    assert "p3/1.png" in str(info.value) and "p4/1.png" in str(info.value)
    assert "p0/0.png" not in str(info.value)
    with pytest.raises(SplitError, match="not in the training set: sample 99"):
        problem.with_forget(np.array([0, 99]))


def test_forget_sha256_is_stable_and_tracks_the_forget_set(records):
    arrays = _by_person(retain=[0, 1], forget=[2], val=[3], test=[4])
    first, again = _problem(records, **arrays), _problem(records, **arrays)
    keys = "\n".join(f"p2/{j}.png" for j in range(4))
    assert first.forget_sha256 == again.forget_sha256 == hashlib.sha256(keys.encode()).hexdigest()
    shuffled = dict(arrays, forget=arrays["forget"][::-1])
    assert _problem(records, **shuffled).forget_sha256 == first.forget_sha256
    other = _problem(records, **_by_person(retain=[0, 2], forget=[1], val=[3], test=[4]))
    assert other.forget_sha256 != first.forget_sha256
    larger = first.with_forget(np.concatenate([first.forget, [0, 1, 2, 3]]))  # p0 too
    assert larger.forget_sha256 not in (first.forget_sha256, other.forget_sha256)


# ------------------------------------------------------------------------------ allocate
@pytest.mark.parametrize(
    ("total", "sizes", "expected"),
    [
        (10, {"forget": 2, "retain": 5}, {"forget": 2, "retain": 5}),
        (10, {"retain": 0.5, "forget": 0.5}, {"retain": 5, "forget": 5}),
        # 3.5 / 1.75 / 1.75: the two largest remainders (.75) get the 2 leftover items
        (7, {"forget": 0.5, "retain": 0.25, "val": 0.25}, {"forget": 3, "retain": 2, "val": 2}),
        # equal remainders: the leftover goes to the first split in SPLITS order
        (
            10,
            {"val": 1 / 3, "forget": 1 / 3, "retain": 1 / 3},
            {"val": 3, "forget": 3, "retain": 4},
        ),
        (
            20,
            {"forget": 0.1, "retain": 0.5, "val": 0.1, "test": 0.15, "unseen": 0.15},
            {"forget": 2, "retain": 10, "val": 2, "test": 3, "unseen": 3},
        ),
        (5, {"retain": 0.9, "forget": 0.1}, {"retain": 5, "forget": 0}),  # 4.5 / 0.5: retain first
    ],
)
def test_allocate_by_hand(total, sizes, expected):
    assert allocate(total, sizes) == expected


def test_allocate_never_hands_out_more_than_total():
    # 3 x 0.3333334 = 1.0000002 passes the tolerance; the counts must still sum to the total
    counts = allocate(10_000_000, dict.fromkeys(("retain", "forget", "val"), 0.3333334))
    assert sum(counts.values()) == 10_000_000
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ({"forget": 2, "holdout": 3}, r"unknown split names \['holdout'\]"),
        ({"forget": 6, "retain": 5}, "need 11 items, have 10"),
        ({"forget": -1, "retain": 5}, "must be non-negative"),
        ({"forget": 0.5, "retain": 0.4}, "must be >= 0 and sum to 1"),
        ({"forget": -0.5, "retain": 1.5}, "must be >= 0 and sum to 1"),
        ({"forget": math.nan, "retain": 1.0}, "must be >= 0 and sum to 1"),
        ({"forget": math.inf, "retain": 1.0}, "must be >= 0 and sum to 1"),
    ],
)
def test_allocate_refuses_bad_sizes(sizes, match):
    with pytest.raises(SplitError, match=match):
        allocate(10, sizes)


# ------------------------------------------------------------------------ identity_split
SIZES = {"forget": 2, "retain": 5, "val": 1, "test": 2, "unseen": 2}


def _arrays(problem):
    return {s: problem.split(s).tolist() for s in SPLITS}


def test_identity_split_is_seeded(make_records):
    records = make_records(12, 2)
    first = identity_split(records, SIZES, seed=3)
    assert _arrays(first) == _arrays(identity_split(records, SIZES, seed=3))
    assert _arrays(first) != _arrays(identity_split(records, SIZES, seed=4))
    assert (first.level, first.split_seed) == ("identity", 3)


def test_identity_split_does_not_depend_on_record_order(make_records):
    records = make_records(12, 2)
    order = np.random.default_rng(0).permutation(len(records))
    shuffled = ImageRecords(
        root=records.root,
        paths=tuple(records.paths[i] for i in order),
        labels=records.labels[order],
        identities=tuple(records.identities[i] for i in order),
        class_names=records.class_names,
    )
    a, b = identity_split(records, SIZES, seed=1), identity_split(shuffled, SIZES, seed=1)
    assert all(_people(a, s) == _people(b, s) for s in SPLITS)


def test_identity_split_sizes_and_disjoint_people(make_records):
    records = make_records(12, 2)
    problem = identity_split(records, SIZES, seed=0)
    people = {s: _people(problem, s) for s in SPLITS}
    assert {s: len(p) for s, p in people.items()} == SIZES
    assert {s: len(problem.split(s)) for s in SPLITS} == {s: 2 * k for s, k in SIZES.items()}
    everyone = [p for s in SPLITS for p in people[s]]
    assert len(everyone) == len(set(everyone)) == 12
    for split in SPLITS:  # whole people: all their images
        for person in people[split]:
            assert set(records.indices_of_identities([person])) <= set(problem.split(split))


def test_identity_split_integer_sizes_may_leave_people_out(make_records):
    problem = identity_split(make_records(12, 2), {"forget": 1, "retain": 3, "test": 2}, seed=0)
    assert problem.sizes() == {"retain": 6, "forget": 2, "val": 0, "test": 4, "unseen": 0}


def test_identity_split_fractions(make_records):
    sizes = {"forget": 0.1, "retain": 0.5, "val": 0.1, "test": 0.15, "unseen": 0.15}
    problem = identity_split(make_records(20, 2), sizes, seed=0)
    assert {s: len(_people(problem, s)) for s in SPLITS} == allocate(20, sizes)


def _check_proportional(problem, strata, sizes_in_people):
    n = len(strata)
    per_stratum = Counter(strata.values())
    for split in SPLITS:
        got = Counter(strata[p] for p in _people(problem, split))
        for stratum, n_g in per_stratum.items():
            share = sizes_in_people.get(split, 0) * n_g / n
            assert math.floor(share) <= got[stratum] <= math.ceil(share), (split, stratum, got)


@pytest.mark.parametrize("seed", range(4))
def test_stratified_identity_split_gives_each_split_its_share(make_records, seed):
    records = make_records(7, 1)
    strata = {f"p{k}": "glasses" if k in (2, 5) else "none" for k in range(7)}
    sizes = {"retain": 1, "forget": 1, "val": 1, "test": 3, "unseen": 1}
    problem = identity_split(records, sizes, seed=seed, stratify=strata)
    # test should hold 3 * 2 / 7 = 0.86 glasses wearers: 0 or 1, never both
    _check_proportional(problem, strata, sizes)


@pytest.mark.parametrize("seed", range(3))
def test_stratified_identity_split_three_strata(make_records, seed):
    records = make_records(40, 1)
    strata = {f"p{k}": ("a", "b", "c")[min(k // 7, 2)] for k in range(40)}  # 7 / 7 / 26
    sizes = {"forget": 6, "retain": 18, "val": 4, "test": 6, "unseen": 6}
    problem = identity_split(records, sizes, seed=seed, stratify=strata, check_content=False)
    _check_proportional(problem, strata, sizes)
    fractions = {"forget": 0.15, "retain": 0.45, "val": 0.1, "test": 0.15, "unseen": 0.15}
    problem = identity_split(records, fractions, seed=seed, stratify=strata, check_content=False)
    _check_proportional(problem, strata, allocate(40, fractions))


def test_identity_split_refusals(make_records, records):
    with pytest.raises(SplitError, match=r"no stratum given for identities \['p3'\]"):
        identity_split(records, SIZES, seed=0, stratify={f"p{k}": 0 for k in (0, 1, 2, 4, 5)})
    with pytest.raises(SplitError, match="need 12 items, have 6"):
        identity_split(records, SIZES, seed=0)
    with pytest.raises(SplitError, match="unknown split names"):
        identity_split(records, {"forget": 1, "train": 5}, seed=0)
    anonymous = ImageRecords(
        root=records.root,
        paths=records.paths,
        labels=records.labels,
        identities=("", *records.identities[1:]),
        class_names=records.class_names,
    )
    with pytest.raises(SplitError, match=r"identity for every sample; missing for \['p0/0\.png'\]"):
        identity_split(anonymous, {"forget": 1, "retain": 5}, seed=0)


# ------------------------------------------------------------------------ instance_split
PER_PERSON = {"forget": 2, "retain": 5, "val": 1, "test": 1, "unseen": 1}


def test_instance_split_per_person_counts(make_records):
    records = make_records(5, 10)
    problem = instance_split(records, PER_PERSON, seed=0, group_by="identity")
    assert problem.level == "instance"
    for split, k in PER_PERSON.items():
        assert Counter(records.identities[i] for i in problem.split(split)) == dict.fromkeys(
            records.unique_identities(), k
        )
    again = instance_split(records, PER_PERSON, seed=0, group_by="identity")
    assert _arrays(again) == _arrays(problem)
    other = instance_split(records, PER_PERSON, seed=1, group_by="identity")
    assert _arrays(other) != _arrays(problem)


def test_instance_split_by_label_and_overall(make_records):
    records = make_records(5, 4)  # 10 images of class a, 10 of class b
    sizes = {"forget": 0.2, "retain": 0.6, "test": 0.2}
    by_label = instance_split(records, sizes, seed=0, group_by="label")
    for split, k in {"forget": 2, "retain": 6, "test": 2}.items():
        assert records.class_counts(by_label.split(split)) == {"a": k, "b": k}
    overall = instance_split(records, sizes, seed=0)
    assert overall.sizes() == {"retain": 12, "forget": 4, "val": 0, "test": 4, "unseen": 0}
    assert len(set(overall.split("train")) | set(overall.test)) == 20


def test_instance_split_refusals(make_records):
    records = make_records(3, 10)
    with pytest.raises(SplitError, match="group_by must be"):
        instance_split(records, PER_PERSON, seed=0, group_by="family")
    short = ImageRecords(
        root=records.root,
        paths=records.paths[:-1],
        labels=records.labels[:-1],
        identities=records.identities[:-1],
        class_names=records.class_names,
    )
    with pytest.raises(SplitError, match=r"identity 'p2': .*need 10 items, have 9"):
        instance_split(short, PER_PERSON, seed=0, group_by="identity")
    with pytest.raises(SplitError, match="sum to 1"):
        instance_split(records, {"forget": 0.5}, seed=0)


# ------------------------------------------------------------------------ forget requests
def test_read_forget_list_skips_comments_and_blanks(tmp_path):
    path = tmp_path / "forget.txt"
    path.write_text("# people to forget\n\np1\n  p2/0.png   # one photo\n\t\n#p3\n")
    assert read_forget_list(path) == ["p1", "p2/0.png"]
    path.write_bytes(b"\xef\xbb\xbfp4\r\np5\r\n")  # BOM and CRLF, as Windows editors write it
    assert read_forget_list(path) == ["p4", "p5"]


def test_read_forget_list_refusals(tmp_path):
    with pytest.raises(DataError, match=r"forget list not found: .*nope\.txt"):
        read_forget_list(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n\n")
    with pytest.raises(DataError, match="names nobody and no image"):
        read_forget_list(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00p1")
    with pytest.raises(DataError, match=r"forget list .* is not UTF-8 text"):
        read_forget_list(binary)


def test_resolve_forget_request_identities_and_paths(records):
    chosen = resolve_forget_request(records, ["p1", "./p3/2.png", "p4\\0.png", "p1/0.png"])
    assert chosen.tolist() == [4, 5, 6, 7, 14, 16]


def test_resolve_forget_request_names_unknown_entries(records):
    with pytest.raises(SplitError, match=r"unknown people or images: 'p9', 'p2/7\.png'") as info:
        resolve_forget_request(records, ["p1", "p9", "p2/7.png"])
    assert "'p1'" not in str(info.value)


def test_forget_request_end_to_end(tmp_path, records):
    problem = instance_split(records, {"retain": 3, "forget": 1}, seed=0, group_by="identity")
    path = tmp_path / "forget.txt"
    path.write_text("p0\n")
    moved = problem.with_forget(resolve_forget_request(records, read_forget_list(path)))
    assert moved.forget_identities() == ["p0"]
    assert moved.forget.tolist() == [0, 1, 2, 3]
    assert 0 not in moved.retain


# ------------------------------------------------------------------- apply_forget_request
def _people_problem(make_records, level: str) -> UnlearningProblem:
    """identity: p0 forget, p1-p3 retain, p4 val, p5 test, p6 unseen (4 photos each);
    instance: photo 0 of everyone forget, 1 retain, 2 val, 3 test (of 5 photos), 4 unseen."""
    if level == "identity":
        records = make_records(people=7, per_person=4)
        person = {f"p{k}": records.indices_of_identities([f"p{k}"]) for k in range(7)}
        arrays = {
            "forget": person["p0"],
            "retain": np.concatenate([person["p1"], person["p2"], person["p3"]]),
            "val": person["p4"],
            "test": person["p5"],
            "unseen": person["p6"],
        }
    else:
        records = make_records(people=3, per_person=5)
        photo = np.asarray([int(p.split("/")[1][0]) for p in records.paths])
        arrays = {split: np.flatnonzero(photo == k) for k, split in enumerate(SPLITS)}
    return UnlearningProblem(records=records, level=level, **arrays)  # type: ignore[arg-type]


def test_forget_request_takes_only_training_images_of_a_person(make_records) -> None:
    problem = _people_problem(make_records, "instance")
    updated = apply_forget_request(problem, ["p1"])
    # p1's forget and retain photos are in train; its other photos stay where they are
    assert sorted(problem.records.paths[i] for i in updated.forget) == ["p1/0.png", "p1/1.png"]
    assert np.array_equal(updated.val, problem.val) and np.array_equal(updated.test, problem.test)
    assert len(updated.retain) == len(problem.train) - 2


def test_forget_request_refuses_held_out_people_and_images(make_records) -> None:
    problem = _people_problem(make_records, "identity")
    with pytest.raises(SplitError, match=r"person 'p4' has no training images \(in val\)"):
        apply_forget_request(problem, ["p4"])
    with pytest.raises(SplitError, match=r"image 'p6/0.png' is in unseen, not in train"):
        apply_forget_request(problem, ["p6/0.png"])
    with pytest.raises(SplitError, match="unknown people or images: 'p9'"):
        apply_forget_request(problem, ["p1", "p9"])


def test_identity_level_forgets_whole_people_only(make_records) -> None:
    problem = _people_problem(make_records, "identity")
    with pytest.raises(SplitError, match=r"forgets whole people.*'p2' has 3 more training"):
        apply_forget_request(problem, ["p2/0.png"])
    whole = apply_forget_request(problem, ["p2"])
    assert whole.forget_identities() == ["p2"]
    assert "p0" not in whole.forget_identities() and len(whole.retain) == 12
    by_paths = apply_forget_request(problem, [f"p2/{j}.png" for j in range(4)])
    assert np.array_equal(by_paths.forget, whole.forget)
