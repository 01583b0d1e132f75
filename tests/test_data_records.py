"""ImageRecords (labels, paths, hashes, counts) and safe_relative_path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlfd.data.records import ImageRecords, safe_relative_path
from dlfd.errors import DataError


def _records(labels, *, task="multiclass", class_names=("a", "b"), root=Path("/data"), **kw):
    n = len(labels)
    return ImageRecords(
        root=root,
        paths=kw.pop("paths", tuple(f"img{i}.png" for i in range(n))),
        labels=np.asarray(labels),
        identities=kw.pop("identities", tuple(f"id{i % 2}" for i in range(n))),
        class_names=class_names,
        task=task,
        name="toy",
        **kw,
    )


# ------------------------------------------------------------------------------ labels
def test_multiclass_labels_are_read_only_int64():
    records = _records([0, 1, 1])
    assert records.labels.dtype == np.int64
    assert records.labels.tolist() == [0, 1, 1]
    assert records.num_classes == 2
    with pytest.raises(ValueError):
        records.labels[0] = 1


def test_float_labels_holding_integers_are_accepted():
    assert _records(np.array([0.0, 1.0, 1.0])).labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("labels", "bad"),
    [([0, 2, 1], "label 2 of 'img1.png'"), ([0, 1, -1], "label -1 of 'img2.png'")],
)
def test_label_outside_the_classes_names_the_file(labels, bad):
    with pytest.raises(DataError, match=bad) as info:
        _records(labels)
    assert "2 classes" in str(info.value)


@pytest.mark.parametrize("value", [1.5, float("nan"), float("inf")])
def test_non_integer_multiclass_label_is_refused_not_truncated(value):
    with pytest.raises(DataError, match=r"of 'img1\.png' is not a class index"):
        _records(np.array([0.0, value, 1.0]))


def test_multiclass_labels_of_wrong_shape():
    with pytest.raises(DataError, match=r"shape \(3,\), got \(3, 1\)"):
        _records(np.zeros((3, 1), np.int64))
    with pytest.raises(DataError, match=r"shape \(3,\), got \(2,\)"):
        ImageRecords(Path("/d"), ("a", "b", "c"), np.array([0, 1]), ("", "", ""), ("x", "y"))


def test_multilabel_labels():
    records = _records([[0, 1], [1, 1], [0, 0]], task="multilabel", class_names=("smile", "male"))
    assert records.labels.dtype == np.float32
    assert records.labels.shape == (3, 2)
    assert records.class_counts() == {"smile": 1.0, "male": 2.0}
    assert records.class_counts(np.array([0, 2])) == {"smile": 0.0, "male": 1.0}
    assert records.class_counts(np.array([], np.int64)) == {"smile": 0.0, "male": 0.0}


@pytest.mark.parametrize("labels", [[0, 1, 1], [[0, 1, 0]] * 3])
def test_multilabel_labels_of_wrong_shape(labels):
    with pytest.raises(DataError, match=r"multilabel labels must have shape \(3, 2\)"):
        _records(labels, task="multilabel")


def test_multilabel_values_other_than_0_1_name_the_file():
    with pytest.raises(DataError, match=r"must be 0 or 1, got \[1\.0, 0\.5\] for 'img2\.png'"):
        _records([[0, 1], [1, 0], [1, 0.5]], task="multilabel")


def test_identity_count_must_match_samples():
    with pytest.raises(DataError, match="2 identities for 3 samples"):
        _records([0, 1, 0], identities=("x", "y"))


def test_unknown_task_and_empty_dataset():
    with pytest.raises(DataError, match="unknown task 'regression'"):
        _records([0, 1], task="regression")
    with pytest.raises(DataError, match="'toy' has no samples"):
        _records([], paths=(), identities=())


def test_duplicate_path_is_refused_by_name():
    with pytest.raises(DataError, match=r"file 'img0\.png' is listed twice in 'toy'"):
        _records([0, 1, 0], paths=("img0.png", "img1.png", "img0.png"))


# ------------------------------------------------------------------------------ lookups
def test_lookups_and_identities():
    records = _records([0, 1, 0, 1], identities=("bob", "al", "bob", ""))
    assert records.index_of("img2.png") == 2
    assert records.index_of("nope.png") is None
    assert records.indices_of_identities(["bob"]).tolist() == [0, 2]
    assert records.indices_of_identities(["nobody"]).tolist() == []
    assert records.unique_identities() == ["al", "bob"]
    assert not records.has_identities
    assert _records([0, 1]).has_identities
    assert records.abspath(3) == Path("/data/img3.png")


def test_class_counts_multiclass():
    records = _records([0, 1, 1, 2, 1], class_names=("a", "b", "c", "d"))
    assert records.class_counts() == {"a": 1.0, "b": 3.0, "c": 1.0, "d": 0.0}
    assert records.class_counts(np.array([1, 3])) == {"a": 0.0, "b": 1.0, "c": 1.0, "d": 0.0}
    assert records.class_counts(np.array([], np.int64)) == dict.fromkeys("abcd", 0.0)


# ------------------------------------------------------------------------------ hashes
def test_content_hashes_compare_pixels_not_files(tmp_path, write_image):
    write_image(tmp_path / "x" / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes((tmp_path / "b.png").read_bytes())
    with Image.open(tmp_path / "b.png") as img:
        img.save(tmp_path / "d.pgm")  # same pixels, another file format
    records = _records([0, 1, 1, 0], root=tmp_path, paths=("x/a.png", "b.png", "c.png", "d.pgm"))
    assert (tmp_path / "b.png").read_bytes() != (tmp_path / "d.pgm").read_bytes()
    hashes = records.content_hashes
    assert hashes[1] == hashes[2] == hashes[3] != hashes[0]
    with Image.open(tmp_path / "x" / "a.png") as img:
        by_hand = hashlib.sha256(
            f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode() + img.tobytes()
        ).hexdigest()
    assert hashes[0] == by_hand


def test_fingerprint_changes_with_labels_and_content(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    base = _records([0, 1], root=tmp_path, paths=("a.png", "b.png"))
    relabelled = _records([1, 1], root=tmp_path, paths=("a.png", "b.png"))
    assert base.fingerprint == _records([0, 1], root=tmp_path, paths=("a.png", "b.png")).fingerprint
    assert base.fingerprint != relabelled.fingerprint
    write_image(tmp_path / "a.png")  # new pixels under the same name
    assert base.fingerprint != _records([0, 1], root=tmp_path, paths=("a.png", "b.png")).fingerprint


def test_content_hashes_name_a_missing_file(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    records = _records([0, 1], root=tmp_path, paths=("a.png", "gone.png"))
    with pytest.raises(DataError, match=r"image file not found: .*gone\.png"):
        _ = records.content_hashes


# ------------------------------------------------------------------------------ paths
@pytest.mark.parametrize(
    ("given", "key"),
    [
        ("./a/b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        (".\\a\\b.png", "a/b.png"),
        ("a//./b.png", "a/b.png"),
        ("  a/b.png ", "a/b.png"),
        ("b.png", "b.png"),
    ],
)
def test_safe_relative_path_normalises(given, key):
    assert safe_relative_path(given, Path("/root")) == key


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("/etc/passwd", "is absolute"),
        ("C:\\faces\\a.png", "is absolute"),
        ("\\\\server\\share\\a.png", "is absolute"),
        ("../a.png", "escapes its folder"),
        ("a/../../b.png", "escapes its folder"),
        ("..\\a.png", "escapes its folder"),
        (".", "escapes its folder"),
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00.png", "NUL byte"),
    ],
)
def test_safe_relative_path_refuses(given, reason):
    with pytest.raises(DataError, match=reason) as info:
        safe_relative_path(given, Path("/root"), what="manifest path")
    assert "manifest path" in str(info.value)
