"""Dataset readers (CSV manifest, ImageFolder, ORL) and the scenarios built on them."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dlfd.data import manifest as manifest_module
from dlfd.data.manifest import imagefolder_records, read_manifest
from dlfd.data.orl import orl_records, orl_root
from dlfd.data.problem import SPLITS
from dlfd.errors import ConfigError, DataError
from dlfd.scenarios import get_scenario, list_scenarios


def _manifest(root: Path, text: str, write_image, *, images=(), name="manifest.csv") -> Path:
    for image in images:
        write_image(root / (image if "." in image else f"{image}.png"))
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ manifest
def test_multiclass_manifest(tmp_path, write_image):
    text = "path,label,identity\n./a/1.png,10,ann\nb.png,2,bob\nc.png, 1 ,ann\nd.png,2,\n"
    images = ("a/1.png", "b.png", "c.png", "d.png")
    manifest = read_manifest(_manifest(tmp_path, text, write_image, images=images))
    records = manifest.records
    assert manifest.splits is None
    assert records.class_names == ("1", "2", "10")  # numeric order, not "1" < "10" < "2"
    assert records.labels.tolist() == [2, 1, 0, 1]
    assert records.paths == ("a/1.png", "b.png", "c.png", "d.png")
    assert records.identities == ("ann", "bob", "ann", "")
    assert records.root == tmp_path.resolve()
    assert (records.task, records.name) == ("multiclass", "manifest")


def test_class_names_sorted_as_text_unless_all_integers(tmp_path, write_image):
    text = "path,label\na.png,smile\nb.png,Frown\nc.png,10\n"
    records = read_manifest(_manifest(tmp_path, text, write_image, images="abc")).records
    assert records.class_names == ("10", "Frown", "smile")
    text = "path,label\na.png,1\nb.png,01\nc.png,2\n"  # "1" and "01" tie on int(): name decides
    records = read_manifest(_manifest(tmp_path, text, write_image, name="m2.csv")).records
    assert records.class_names == ("01", "1", "2")


@pytest.mark.parametrize("reverse", [False, True])
def test_class_order_does_not_depend_on_set_iteration_order(monkeypatch, reverse):
    class FixedOrderSet(list):  # stands in for a set whose iteration order varies per process
        def __init__(self, values):
            super().__init__(dict.fromkeys(values))
            if reverse:
                self.reverse()

    monkeypatch.setattr(manifest_module, "set", FixedOrderSet, raising=False)
    assert manifest_module._class_order(["1", "01", "2", "1"]) == ["01", "1", "2"]
    assert manifest_module._class_order(["b", "a", "b"]) == ["a", "b"]


def test_multilabel_manifest(tmp_path, write_image):
    text = "path,label_smile,label_male,identity\na.png,1,0,x\nb.png,0,1,y\nc.png,1.0,1,y\n"
    records = read_manifest(_manifest(tmp_path, text, write_image, images="abc")).records
    assert records.task == "multilabel"
    assert records.class_names == ("smile", "male")
    assert records.labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    assert records.labels.dtype == np.float32


@pytest.mark.parametrize(
    ("value", "match"),
    [("2", r"must be 0 or 1.*'b\.png'"), ("yes", "multilabel values must be 0 or 1")],
)
def test_multilabel_manifest_bad_values(tmp_path, write_image, value, match):
    text = f"path,label_smile\na.png,1\nb.png,{value}\n"
    with pytest.raises(DataError, match=match):
        read_manifest(_manifest(tmp_path, text, write_image, images="ab"))


def test_split_column(tmp_path, write_image):
    text = "path,label,split\na.png,x,retain\nb.png,y,forget\nc.png,x,test\n"
    manifest = read_manifest(_manifest(tmp_path, text, write_image, images="abc"))
    assert manifest.splits == ("retain", "forget", "test")
    bad = "path,label,split\na.png,x,retain\nb.png,y,train\nc.png,x,\n"
    with pytest.raises(DataError, match=r"unknown split values \['', 'train'\]"):
        read_manifest(_manifest(tmp_path, bad, write_image, name="bad.csv"))


def test_missing_columns_name_the_columns_found(tmp_path, write_image):
    path = _manifest(tmp_path, "file,label\na.png,x\n", write_image, images="a")
    with pytest.raises(DataError, match=r"no 'path' column \(found: file, label\)"):
        read_manifest(path)
    path = _manifest(tmp_path, "path,class,identity\na.png,x,p\n", write_image)
    with pytest.raises(DataError, match=r"no 'label' column .*\(found: path, class, identity\)"):
        read_manifest(path)


def test_missing_files_are_named(tmp_path, write_image):
    text = "path,label\na.png,x\nb.png,y\nsub/c.png,y\n"
    path = _manifest(tmp_path, text, write_image, images="a")
    with pytest.raises(
        DataError, match=r"2 image files listed but not found .*: b\.png, sub/c\.png"
    ):
        read_manifest(path)
    assert len(read_manifest(path, check_files=False).records) == 3


@pytest.mark.parametrize(
    ("listed", "match"),
    [
        ("../x.png", "escapes its folder"),
        ("sub/../../x.png", "escapes its folder"),
        ("/etc/hosts", "is absolute"),
    ],
)
def test_paths_escaping_the_folder_are_refused(tmp_path, write_image, listed, match):
    write_image(tmp_path / "x.png")
    path = _manifest(tmp_path / "data", f"path,label\n{listed},x\n", write_image)
    with pytest.raises(DataError, match=match) as info:
        read_manifest(path)
    assert f"{path}:2 path" in str(info.value)  # names the file and line


def test_symlink_leading_outside_is_refused(tmp_path, write_image):
    outside = write_image(tmp_path / "secret" / "x.png")
    root = tmp_path / "data"
    write_image(root / "a.png")
    try:
        os.symlink(outside, root / "link.png")
    except OSError:
        pytest.skip("symlinks unavailable")
    path = _manifest(root, "path,label\na.png,x\nlink.png,y\n", write_image)
    with pytest.raises(DataError, match=r"lead outside .* through links: \['link\.png'\]"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"no 'path' column \(found: none\)"),
        (b"path,label\n", "has a header but no rows"),
        (b"path,label\n\xff\xfeabc,x\n", "is not UTF-8 text"),
        (b"path,label\na.png,x,extra\n", r"manifest\.csv:2: wrong number of fields"),
        (b"path,label,identity\na.png,x,p\nb.png,x\n", r"manifest\.csv:3: wrong number of fields"),
        (b"path,label\na.png,x\na.png,y\n", r"'a\.png' is listed twice"),
        (b"path,label\na.png,x\n./a.png,y\n", r"'a\.png' is listed twice"),
        (b"path,label\na.png,\n", r"empty label on line\(s\) \[2\]"),
    ],
)
def test_malformed_manifests(tmp_path, write_image, content, match):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_manifest(path)


def test_manifest_with_byte_order_mark(tmp_path, write_image):
    write_image(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbfpath,label\r\na.png,x\r\n")  # as Excel saves
    assert read_manifest(tmp_path / "m.csv").records.paths == ("a.png",)


def test_manifest_not_found(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(DataError, match=r"manifest .* is a folder"):
        read_manifest(tmp_path)


# ------------------------------------------------------------------------------ ImageFolder
def test_imagefolder(tmp_path, write_image):
    root = tmp_path / "faces"
    for name in ("10/a.png", "10/deep/er/b.jpg", "2/c.PNG", "2/d.pgm", ".hidden/e.png"):
        write_image(root / name)
    (root / "2" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level file, not a class")
    records = imagefolder_records(root)
    assert records.class_names == ("2", "10")
    assert records.paths == ("2/c.PNG", "2/d.pgm", "10/a.png", "10/deep/er/b.jpg")
    assert records.labels.tolist() == [0, 0, 1, 1]
    assert records.identities == ("", "", "", "") and not records.has_identities
    assert records.root == root.resolve()


def test_imagefolder_errors(tmp_path, write_image):
    with pytest.raises(DataError, match="image folder not found"):
        imagefolder_records(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folders in"):
        imagefolder_records(empty)
    (empty / "cat").mkdir()
    (empty / "cat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        imagefolder_records(empty)


def test_imagefolder_symlink_outside_is_refused(tmp_path, write_image):
    outside = write_image(tmp_path / "elsewhere" / "x.png")
    write_image(tmp_path / "faces" / "cat" / "a.png")
    try:
        os.symlink(outside, tmp_path / "faces" / "cat" / "b.png")
    except OSError:
        pytest.skip("symlinks unavailable")
    with pytest.raises(DataError, match=r"b\.png links outside the image folder"):
        imagefolder_records(tmp_path / "faces")


# ------------------------------------------------------------------------------ ORL
def test_orl_glasses_records():
    records = orl_records("glasses")
    assert len(records) == 400
    assert len(records.unique_identities()) == 40
    assert records.class_names == ("no_glasses", "glasses")
    assert int(records.labels.sum()) == 119
    assert records.paths[0] == "s1/1.pgm" and records.paths[-1] == "s40/10.pgm"
    assert Counter(records.identities) == {f"s{p}": 10 for p in range(1, 41)}
    assert (orl_root() / "s10" / "target.jpg").is_file()  # the stray file exists ...
    assert all(p.endswith(".pgm") for p in records.paths)  # ... and is ignored


def test_orl_identity_records():
    records = orl_records("identity")
    assert records.num_classes == 40
    assert records.class_names[:3] == ("s1", "s2", "s3")
    assert records.labels.tolist() == [k for k in range(40) for _ in range(10)]
    with pytest.raises(DataError, match="unknown ORL task 'age'"):
        orl_records("age")


def test_fake_orl_root_with_a_missing_file(tmp_path):
    for p in range(1, 41):
        (tmp_path / f"s{p}").mkdir()
        for k in range(1, 11):
            (tmp_path / f"s{p}" / f"{k}.pgm").write_bytes(b"P5 1 1 255 \x00")
    assert len(orl_records("identity", root=tmp_path)) == 400
    (tmp_path / "s7" / "3.pgm").unlink()
    with pytest.raises(DataError, match=r"ORL files missing under .*: s7/3\.pgm$"):
        orl_records("glasses", root=tmp_path)
    with pytest.raises(DataError, match="ORL folder not found"):
        orl_records("glasses", root=tmp_path / "nowhere")


# ------------------------------------------------------------------------------ scenarios
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orl_glasses_scenario(seed):
    scenario = get_scenario("orl-glasses", split_seed=seed)
    problem = scenario.problem
    assert problem.level == "identity" and problem.split_seed == seed
    assert problem.sizes() == {"retain": 180, "forget": 60, "val": 40, "test": 60, "unseen": 60}
    people = {s: {problem.records.identities[i] for i in problem.split(s)} for s in SPLITS}
    assert sum(len(p) for p in people.values()) == len(set().union(*people.values())) == 40
    for split in SPLITS:
        counts = problem.records.class_counts(problem.split(split))
        assert counts["glasses"] > 0 and counts["no_glasses"] > 0, (split, counts)
    assert scenario.task == "multiclass" and scenario.num_classes == 2
    assert scenario.input_spec.size == (64, 64)


def test_orl_glasses_scenario_is_seeded():
    first = get_scenario("orl-glasses", split_seed=5).problem
    assert get_scenario("orl-glasses", split_seed=5).problem.forget_sha256 == first.forget_sha256
    assert get_scenario("orl-glasses", split_seed=6).problem.forget_sha256 != first.forget_sha256


def test_orl_identity_scenario():
    scenario = get_scenario("orl-identity", split_seed=0, image_size=32)
    problem = scenario.problem
    assert problem.level == "instance" and scenario.num_classes == 40
    assert scenario.input_spec.size == (32, 32)
    per_person = {"forget": 2, "retain": 5, "val": 1, "test": 1, "unseen": 1}
    for split, k in per_person.items():
        counts = Counter(problem.records.identities[i] for i in problem.split(split))
        assert counts == {f"s{p}": k for p in range(1, 41)}, split


def _user_data(root: Path, write_image, people: int = 10, per_person: int = 2) -> list[str]:
    rows = ["path,label,identity"]
    for k in range(people):
        for j in range(per_person):
            write_image(root / f"person{k}" / f"{j}.png")
            rows.append(f"person{k}/{j}.png,{'smile' if j else 'neutral'},person{k}")
    return rows


def test_csv_scenario_without_split_column(tmp_path, write_image):
    rows = _user_data(tmp_path, write_image)
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    scenario = get_scenario("csv", data_root=tmp_path / "faces.csv", split_seed=0, image_size=16)
    problem = scenario.problem
    assert problem.level == "identity"  # every row has an identity: whole people are split
    # 10 people x (0.1, 0.5, 0.1, 0.15, 0.15): test and unseen tie at 1.5, test gets the extra
    assert problem.sizes() == {"retain": 10, "forget": 2, "val": 2, "test": 4, "unseen": 2}
    assert scenario.input_spec.size == (16, 16)
    assert scenario.problem.records.class_names == ("neutral", "smile")


def test_csv_scenario_with_split_column(tmp_path, write_image):
    rows = _user_data(tmp_path, write_image, people=5)
    splits = [
        "retain",
        "retain",
        "forget",
        "forget",
        "val",
        "val",
        "test",
        "test",
        "unseen",
        "unseen",
    ]
    lines = [rows[0] + ",split"] + [f"{r},{s}" for r, s in zip(rows[1:], splits, strict=True)]
    (tmp_path / "faces.csv").write_text("\n".join(lines) + "\n")
    problem = get_scenario("csv", data_root=tmp_path / "faces.csv").problem
    assert problem.forget.tolist() == [2, 3] and problem.unseen.tolist() == [8, 9]
    assert problem.level == "identity"
    lines[2] = lines[2].replace(",retain", ",forget")  # person0 now in retain and forget
    (tmp_path / "faces.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="'person0' in retain"):
        get_scenario("csv", data_root=tmp_path / "faces.csv")


def test_imagefolder_scenario(tmp_path, write_image):
    for k in range(20):
        write_image(tmp_path / "faces" / ("happy", "sad")[k % 2] / f"{k}.png")
    problem = get_scenario("imagefolder", data_root=tmp_path / "faces", split_seed=1).problem
    assert problem.level == "instance"
    assert problem.sizes() == {"retain": 10, "forget": 2, "val": 2, "test": 3, "unseen": 3}
    assert problem.records.class_names == ("happy", "sad")


def test_get_scenario_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'; known: .*orl-glasses"):
        get_scenario("mnist")
    assert {"orl-glasses", "orl-identity", "csv", "imagefolder"} <= set(list_scenarios())
    for name in ("csv", "imagefolder"):
        with pytest.raises(ConfigError, match=f"dataset '{name}' needs --data-root"):
            get_scenario(name)
    with pytest.raises(ConfigError, match="needs --data-root pointing to the manifest CSV"):
        get_scenario("csv", data_root=tmp_path)
    with pytest.raises(ConfigError, match="at least 8 pixels"):
        get_scenario("orl-glasses", image_size=4)


def test_csv_scenario_with_few_people_splits_images_instead(tmp_path, write_image):
    rows = _user_data(tmp_path, write_image, people=5, per_person=6)
    (tmp_path / "faces.csv").write_text("\n".join(rows) + "\n")
    problem = get_scenario("csv", data_root=tmp_path / "faces.csv", split_seed=0).problem
    # 5 people cannot give every split a whole person (forget would get 0.5): split images
    assert problem.level == "instance"
    assert min(problem.sizes().values()) >= 3
