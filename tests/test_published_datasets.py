"""Readers and scenarios of the published datasets (MUFAC, MUCAC, RAF-DB) on tiny fake trees."""

from __future__ import annotations

import itertools
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlfd.data.mucac import mucac_records
from dlfd.data.mufac import mufac_records
from dlfd.data.rafdb import CLASS_NAMES, rafdb_records
from dlfd.errors import ConfigError, DataError, LeakError
from dlfd.scenarios import get_scenario

_SEEDS = itertools.count(1000)


def _jpeg(path: Path, size: int = 16) -> Path:
    """A distinct random RGB image at ``path`` (format from the suffix)."""
    rng = np.random.default_rng(next(_SEEDS))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _identities(problem, split: str) -> set[str]:
    return {problem.records.identities[i] for i in problem.split(split)}


def _paths(problem, split: str) -> set[str]:
    return {problem.records.paths[i] for i in problem.split(split)}


def _assert_identity_disjoint(problem, splits=("retain", "forget", "val", "test", "unseen")):
    for a, b in itertools.combinations(splits, 2):
        assert not _identities(problem, a) & _identities(problem, b), (a, b)


# ================================================================================== MUFAC
MUFAC_TRAIN_FAMILIES, MUFAC_PEOPLE, MUFAC_PER_PERSON = 52, ("F", "M", "D"), 10  # 1,560 rows
MUFAC_HELD_FAMILIES = {"val": range(300, 310), "test": range(310, 316)}
_MUFAC_HEADER = ",family_id,person_id,age_class,image_path\n"


def _mufac_tree(root: Path) -> Path:
    """custom_{train,val,test}_dataset.csv (unnamed leading index column) and image folders."""
    families = {"train": range(1, MUFAC_TRAIN_FAMILIES + 1), **MUFAC_HELD_FAMILIES}
    for part, numbers in families.items():
        per_person = MUFAC_PER_PERSON if part == "train" else 2
        rows = []
        for f, role, j in itertools.product(numbers, MUFAC_PEOPLE, range(per_person)):
            letter = "abcdefgh"[(f + j) % 8]
            name = f"F{f:04d}_AGE_{role}_30_{letter}{j}.jpg"
            _jpeg(root / f"{part}_images" / name, size=8)
            rows.append(f"{len(rows)},F{f:04d},{role},{letter},{name}\n")
        (root / f"custom_{part}_dataset.csv").write_text(_MUFAC_HEADER + "".join(rows))
    return root


@pytest.fixture(scope="module")
def mufac_root(tmp_path_factory) -> Path:
    return _mufac_tree(tmp_path_factory.mktemp("mufac"))


def test_mufac_reader(mufac_root):
    data = mufac_records(mufac_root)
    records = data.records
    n_train = MUFAC_TRAIN_FAMILIES * len(MUFAC_PEOPLE) * MUFAC_PER_PERSON
    assert len(records) == n_train + 2 * 3 * (10 + 6)
    assert (data.part == "train").sum() == n_train
    assert records.paths[0] == "train_images/F0001_AGE_F_30_b0.jpg"
    assert records.identities[0] == "F0001_F" and data.family[0] == "F0001"
    assert records.labels[0] == 1  # age class b
    assert records.class_names[0] == "a:0-6" and records.num_classes == 8
    assert records.task == "multiclass"


def test_mufac_published_split(mufac_root):
    problem = get_scenario(
        "mufac", split_seed=3, data_root=mufac_root, options={"val": "carve"}
    ).problem
    data = mufac_records(mufac_root)
    train = np.flatnonzero(data.part == "train")
    assert problem.level == "mixed"
    assert problem.forget.tolist() == train[:1500].tolist()
    assert problem.retain.tolist() == train[1500:].tolist()
    assert problem.unseen.tolist() == np.flatnonzero(data.part == "test").tolist()
    held = set(np.flatnonzero(data.part == "val").tolist())
    val, test = set(problem.val.tolist()), set(problem.test.tolist())
    assert val and test and val | test == held  # val carved from the benchmark's test only
    val_families = {data.family[i] for i in val}
    assert len(val_families) == 2  # 20% of 10 families, whole families
    assert not val_families & {data.family[i] for i in test}
    _assert_identity_disjoint(problem, ("retain", "val", "test", "unseen"))
    _assert_identity_disjoint(problem, ("forget", "val", "test", "unseen"))

    whole = get_scenario("mufac", data_root=mufac_root, options={"val": "none"}).problem
    assert whole.val.size == 0 and set(whole.test.tolist()) == held


def test_mufac_forget_whole_people(mufac_root):
    scenario = get_scenario(
        "mufac", split_seed=1, data_root=mufac_root, options={"forget": "identity"}
    )
    problem = scenario.problem
    assert problem.level == "identity" and scenario.options["forget"] == "identity"
    assert 1500 <= len(problem.forget) < 1500 + MUFAC_PER_PERSON
    _assert_identity_disjoint(problem)
    other = get_scenario(
        "mufac", split_seed=2, data_root=mufac_root, options={"forget": "identity"}
    )
    assert _identities(other.problem, "forget") != _identities(problem, "forget")


def test_mufac_errors(tmp_path, mufac_root):
    with pytest.raises(DataError, match=r"custom_train_dataset.csv.*ndb796"):
        mufac_records(tmp_path)
    shutil.copy(mufac_root / "custom_train_dataset.csv", tmp_path)
    with pytest.raises(DataError, match=r"train_images"):
        mufac_records(tmp_path)
    (tmp_path / "custom_train_dataset.csv").write_text(",family_id,person_id,image_path\n")
    (tmp_path / "train_images").mkdir()
    with pytest.raises(DataError, match=r"lacks column.*age_class"):
        mufac_records(tmp_path)
    with pytest.raises(ConfigError, match=r"forget"):
        get_scenario("mufac", data_root=mufac_root, options={"forget": "all"})


def test_mufac_duplicate_across_splits(tmp_path):
    root = _mufac_tree(tmp_path)
    # a forget picture copied into the benchmark's test set, under a family of its own
    shutil.copyfile(
        root / "train_images/F0001_AGE_F_30_b0.jpg", root / "val_images/F0399_AGE_F_30_b0.jpg"
    )
    with open(root / "custom_val_dataset.csv", "a") as handle:
        handle.write("999,F0399,F,b,F0399_AGE_F_30_b0.jpg\n")
    with pytest.raises(LeakError, match=r"leaks=drop"):
        get_scenario("mufac", data_root=root)
    problem = get_scenario("mufac", data_root=root, options={"leaks": "drop"}).problem
    assert "train_images/F0001_AGE_F_30_b0.jpg" in _paths(problem, "forget")
    assert problem.dropped == ("val_images/F0399_AGE_F_30_b0.jpg",)


# ================================================================================== MUCAC
_CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
)
_CELEBA_ATTRIBUTES = _CELEBA_NAMES.split()
assert len(_CELEBA_ATTRIBUTES) == 40
MUCAC_IDS = {
    "test": (3, 20, 77, 150, 189),
    "forget": (190, 700, 1249),
    "retain": (1250, 3000, 4854),
    "unseen": (4855, 6000),
}


def _mucac_tree(root: Path) -> tuple[Path, dict[int, int], np.ndarray]:
    """A CelebAMask-HQ folder: 2 images per identity; returns (folder, image -> id, attributes)."""
    base = root / "CelebAMask-HQ"
    ids = [i for group in MUCAC_IDS.values() for i in group for _ in range(2)]
    random.Random(0).shuffle(ids)
    owner = dict(enumerate(ids))
    values = np.random.default_rng(0).choice([-1, 1], size=(len(ids), len(_CELEBA_ATTRIBUTES)))
    for k in owner:
        _jpeg(base / "CelebA-HQ-img" / f"{k}.jpg")
    (base / "CelebA-HQ-identity.txt").write_text(
        "".join(f"{k}.jpg {i}\n" for k, i in reversed(owner.items()))
    )
    lines = [f"{len(ids)}\n", " ".join(_CELEBA_ATTRIBUTES) + "\n"]
    lines += [f"{k}.jpg  " + " ".join(map(str, row)) + "\n" for k, row in enumerate(values)]
    (base / "CelebA-HQ-attribute.txt").write_text("".join(lines))
    return base, owner, values


@pytest.fixture
def mucac_tree(tmp_path):
    return _mucac_tree(tmp_path)


def _column(name: str) -> int:
    return _CELEBA_ATTRIBUTES.index(name)


def test_mucac_reader_multilabel(mucac_tree):
    base, owner, values = mucac_tree
    data = mucac_records(base.parent)  # the folder containing CelebAMask-HQ works too
    records = data.records
    n = len(owner)
    assert records.paths == tuple(f"CelebA-HQ-img/{k}.jpg" for k in range(n))  # numeric order
    assert records.identities == tuple(str(owner[k]) for k in range(n))
    assert data.identity_number.tolist() == [owner[k] for k in range(n)]
    assert records.task == "multilabel" and records.class_names == ("male", "smiling", "young")
    expected = (values[:, [_column("Male"), _column("Smiling"), _column("Young")]] + 1) // 2
    assert records.labels.dtype == np.float32
    assert records.labels.tolist() == expected.astype(np.float32).tolist()


@pytest.mark.parametrize(
    ("task", "attribute", "names"),
    [
        ("gender", "Male", ("female", "male")),
        ("smiling", "Smiling", ("not_smiling", "smiling")),
        ("young", "Young", ("old", "young")),
    ],
)
def test_mucac_binary_tasks(mucac_tree, task, attribute, names):
    base, _, values = mucac_tree
    scenario = get_scenario("mucac", data_root=base, options={"task": task})
    records = scenario.problem.records
    assert records.task == "multiclass" and records.class_names == names
    assert records.labels.tolist() == ((values[:, _column(attribute)] + 1) // 2).tolist()
    assert scenario.num_classes == 2 and scenario.options["task"] == task


def test_mucac_published_split(mucac_tree):
    base, _, _ = mucac_tree
    scenario = get_scenario("mucac", split_seed=4, data_root=base, options={"val": "carve"})
    problem = scenario.problem
    assert problem.level == "identity" and scenario.options == {
        "task": "multilabel",
        "val": "carve",
        "leaks": "refuse",
    }
    assert scenario.input_spec.mean == (0.0,) * 3 and scenario.input_spec.std == (1.0,) * 3
    assert scenario.input_spec.size == (128, 128) and scenario.recipe.model == "resnet18"
    for split in ("forget", "retain", "unseen"):
        assert _identities(problem, split) == {str(i) for i in MUCAC_IDS[split]}
    test_ids = {str(i) for i in MUCAC_IDS["test"]}
    val = _identities(problem, "val")
    assert len(val) == 1 and _identities(problem, "test") == test_ids - val
    _assert_identity_disjoint(problem)
    assert problem.sizes() == {"retain": 6, "forget": 6, "val": 2, "test": 8, "unseen": 4}

    whole = get_scenario("mucac", data_root=base, options={"val": "none"}).problem
    assert whole.val.size == 0 and _identities(whole, "test") == test_ids


def test_mucac_options_validated(mucac_tree):
    base, _, _ = mucac_tree
    with pytest.raises(ConfigError, match=r"task"):
        get_scenario("mucac", data_root=base, options={"task": "age"})
    with pytest.raises(ConfigError, match=r"no option 'forget'"):
        get_scenario("mucac", data_root=base, options={"forget": "identity"})
    with pytest.raises(ConfigError, match=r"data-root"):
        get_scenario("mucac")


def _rewrite(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = text
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    ("file", "line", "text", "message"),
    [
        ("CelebA-HQ-identity.txt", 2, "1.jpg\n", r"identity.txt:2: expected"),
        ("CelebA-HQ-identity.txt", 3, "0.jpg abc\n", r"identity.txt:3: identity 'abc'"),
        ("CelebA-HQ-identity.txt", 1, "\n", r"1 image\(s\) missing from .*identity.txt"),
        ("CelebA-HQ-attribute.txt", 4, "0.jpg" + " 1" * 40 + "\n", r"attribute.txt:4: 0.jpg is"),
        ("CelebA-HQ-attribute.txt", 5, "2.jpg" + " 0" * 40 + "\n", r"attribute.txt:5: value '0'"),
        ("CelebA-HQ-attribute.txt", 6, "3.jpg 1 -1\n", r"attribute.txt:6: expected a file name"),
        ("CelebA-HQ-attribute.txt", 1, "x\n", r"attribute.txt:1: expected the number"),
        ("CelebA-HQ-attribute.txt", 2, "Male Young\n", r"attribute.txt:2: .*Smiling not found"),
    ],
)
def test_mucac_malformed_annotations(mucac_tree, file, line, text, message):
    base, _, _ = mucac_tree
    _rewrite(base / file, line, text)
    with pytest.raises(DataError, match=message):
        mucac_records(base)


def test_mucac_missing_files(tmp_path, mucac_tree):
    base, owner, _ = mucac_tree
    with pytest.raises(DataError, match=r"CelebAMask-HQ.*switchablenorms"):
        mucac_records(tmp_path / "nowhere")
    (base / "CelebA-HQ-img" / "4.jpg").unlink()
    with pytest.raises(DataError, match=r"missing under .*CelebA-HQ-img/4.jpg"):
        mucac_records(base)
    lines = (base / "CelebA-HQ-attribute.txt").read_text().splitlines(keepends=True)
    (base / "CelebA-HQ-attribute.txt").write_text("".join(lines[:-1]))
    with pytest.raises(DataError, match=f"announces {len(owner)} images"):
        mucac_records(base)
    (base / "CelebA-HQ-identity.txt").unlink()
    with pytest.raises(DataError, match=r"no CelebA-HQ-identity.txt in"):
        mucac_records(base)


def test_mucac_benchmark_layout_with_annotations_beside_the_folder(mucac_tree):
    """The benchmark keeps both text files next to the unzipped CelebAMask-HQ folder, and the
    release names its attribute file CelebAMask-HQ-attribute-anno.txt."""
    base, owner, _ = mucac_tree
    root = base.parent
    (base / "CelebA-HQ-identity.txt").rename(root / "CelebA-HQ-identity.txt")
    (base / "CelebA-HQ-attribute.txt").rename(base / "CelebAMask-HQ-attribute-anno.txt")
    records = mucac_records(root).records
    assert len(records) == len(owner) and records.root == base.resolve()
    assert (records.root / records.paths[0]).is_file()


def test_mucac_duplicate_across_splits(mucac_tree):
    base, owner, values = mucac_tree
    forget_image = min(k for k, i in owner.items() if i == 190)
    new = len(owner)
    shutil.copyfile(base / f"CelebA-HQ-img/{forget_image}.jpg", base / f"CelebA-HQ-img/{new}.jpg")
    with open(base / "CelebA-HQ-identity.txt", "a") as handle:
        handle.write(f"{new}.jpg 6000\n")  # an unseen identity
    lines = (base / "CelebA-HQ-attribute.txt").read_text().splitlines(keepends=True)
    lines[0] = f"{new + 1}\n"
    lines.append(f"{new}.jpg " + " ".join(map(str, values[forget_image])) + "\n")
    (base / "CelebA-HQ-attribute.txt").write_text("".join(lines))
    with pytest.raises(LeakError, match=r"leaks=drop"):
        get_scenario("mucac", data_root=base)
    problem = get_scenario("mucac", data_root=base, options={"leaks": "drop"}).problem
    assert f"CelebA-HQ-img/{forget_image}.jpg" in _paths(problem, "forget")
    assert problem.dropped == (f"CelebA-HQ-img/{new}.jpg",)


# ================================================================================= RAF-DB
RAFDB_TRAIN_PER_CLASS = (7, 6, 6, 8, 6, 6, 6)  # 45 images
RAFDB_TEST_PER_CLASS = (3, 2, 2, 4, 2, 3, 2)


@pytest.fixture
def rafdb_root(tmp_path) -> Path:
    root = tmp_path / "DATASET"
    for part, counts in (("train", RAFDB_TRAIN_PER_CLASS), ("test", RAFDB_TEST_PER_CLASS)):
        for c, count in enumerate(counts, start=1):
            for j in range(count):
                _jpeg(root / part / str(c) / f"{part}_{j:04d}_aligned.jpg")
    # ImageFolder order: top-level files sorted (upper case first), then sub-folders
    _jpeg(root / "train/1/sub/a.png")
    _jpeg(root / "train/1/B.JPG")
    _jpeg(root / "train/1/c.jpeg")
    (root / "train/1/notes.txt").write_text("not an image")
    return root


def test_rafdb_reader_imagefolder_order(rafdb_root):
    data = rafdb_records(rafdb_root.parent)  # the folder containing DATASET works too
    records = data.records
    first = ["train/1/B.JPG", "train/1/c.jpeg"]
    first += [f"train/1/train_{j:04d}_aligned.jpg" for j in range(7)]
    assert list(records.paths[:10]) == [*first, "train/1/sub/a.png"]
    assert records.paths[10] == "train/2/train_0000_aligned.jpg"
    n_train = sum(RAFDB_TRAIN_PER_CLASS) + 3
    assert (data.part == "train").sum() == n_train and data.part[n_train] == "test"
    assert records.identities == ("",) * len(records)
    assert records.class_names == CLASS_NAMES and CLASS_NAMES[3] == "happiness"
    counts = np.bincount(records.labels[:n_train], minlength=7).tolist()
    assert counts == [RAFDB_TRAIN_PER_CLASS[0] + 3, *RAFDB_TRAIN_PER_CLASS[1:]]


def _dlfd_split(n: int, seed: int) -> dict[str, list[int]]:
    r = random.Random(seed)
    indices = list(range(n))
    r.shuffle(indices)
    n_val = int(0.1 * n)
    rest = indices[n_val:]
    n_retain = int(0.7 * len(rest))
    return {"val": indices[:n_val], "retain": rest[:n_retain], "forget": rest[n_retain:]}


def test_rafdb_published_split(rafdb_root):
    scenario = get_scenario("rafdb", split_seed=7, data_root=rafdb_root)
    problem = scenario.problem
    n_train = sum(RAFDB_TRAIN_PER_CLASS) + 3
    expected = _dlfd_split(n_train, 42)
    for split, indices in expected.items():
        assert problem.split(split).tolist() == sorted(indices), split
    assert problem.sizes()["val"] == 4 and problem.sizes()["retain"] == int(0.7 * (n_train - 4))
    assert problem.level == "instance" and scenario.options["split"] == "published"
    spec = scenario.input_spec
    assert spec.grayscale and spec.channels == 3 and spec.mean == (0.5,) * 3
    assert scenario.recipe.model == "resnet18_mlp" and scenario.recipe.augment.degrees == 20.0

    # test and unseen: the test folder halved, class by class, identical for every split seed
    records = problem.records
    test, unseen = problem.test, problem.unseen
    assert sorted([*test, *unseen]) == list(range(n_train, len(records)))
    per_class = np.bincount(records.labels[test], minlength=7) - np.bincount(
        records.labels[unseen], minlength=7
    )
    assert set(per_class.tolist()) <= {-1, 0, 1} and abs(per_class.sum()) <= 1
    again = get_scenario("rafdb", split_seed=0, data_root=rafdb_root).problem
    for split in ("retain", "forget", "val", "test", "unseen"):
        assert again.split(split).tolist() == problem.split(split).tolist()


def test_rafdb_seeded_split(rafdb_root):
    n_train = sum(RAFDB_TRAIN_PER_CLASS) + 3
    a = get_scenario("rafdb", split_seed=5, data_root=rafdb_root, options={"split": "seeded"})
    b = get_scenario("rafdb", split_seed=6, data_root=rafdb_root, options={"split": "seeded"})
    assert a.problem.forget.tolist() == sorted(_dlfd_split(n_train, 5)["forget"])
    assert a.problem.forget.tolist() != b.problem.forget.tolist()
    assert a.problem.sizes() == b.problem.sizes()


def test_rafdb_options_and_errors(tmp_path, rafdb_root):
    with pytest.raises(ConfigError, match=r"split"):
        get_scenario("rafdb", data_root=rafdb_root, options={"split": "random"})
    with pytest.raises(ConfigError, match=r"no option 'task'"):
        get_scenario("rafdb", data_root=rafdb_root, options={"task": "x"})
    with pytest.raises(DataError, match=r"RAF-DB folder not found.*whdeng"):
        rafdb_records(tmp_path / "nowhere")
    (rafdb_root / "train/extra").mkdir()
    with pytest.raises(DataError, match=r"unexpected folder.*extra"):
        rafdb_records(rafdb_root)
    (rafdb_root / "train/extra").rmdir()
    (rafdb_root / "train/2/x.bmp").write_bytes(b"")
    with pytest.raises(DataError, match=r"x.bmp"):
        rafdb_records(rafdb_root)
    shutil.rmtree(rafdb_root / "train/2")
    with pytest.raises(DataError, match=r"class folder\(s\) 2 missing in .*train"):
        rafdb_records(rafdb_root)
    (rafdb_root / "train/2").mkdir()
    shutil.rmtree(rafdb_root / "test")
    with pytest.raises(DataError, match=r"folder missing: .*test"):
        rafdb_records(rafdb_root)


def test_rafdb_duplicate_across_splits(rafdb_root):
    problem = get_scenario("rafdb", data_root=rafdb_root).problem
    forgotten = problem.records.paths[int(problem.forget[0])]
    shutil.copyfile(rafdb_root / forgotten, rafdb_root / "test/5/copy.jpg")
    with pytest.raises(LeakError, match=r"leaks=drop"):
        get_scenario("rafdb", data_root=rafdb_root)
    problem = get_scenario("rafdb", data_root=rafdb_root, options={"leaks": "drop"}).problem
    assert forgotten in _paths(problem, "forget")
    assert problem.dropped == ("test/5/copy.jpg",)
