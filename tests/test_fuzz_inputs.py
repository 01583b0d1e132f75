"""Fuzzing of every reader of user input: malformed input ends in a one-line DlfdError.

Manifests and the ``csv`` scenario, forget lists and forget requests, checkpoint sidecars and
weights files get random and adversarial content (paths escaping the root, absolute paths,
symlinks out of the root and symlink loops, NUL bytes, very long names, odd encodings, BOMs,
CRLF, empty files, huge numbers, NaN, duplicate columns, deep nesting, garbage safetensors).
Every outcome must be either a valid result (whose paths stay inside the data root) or a
:class:`~dlfd.errors.DlfdError` whose message is one line; never another exception, and the
data folder is never written to.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from safetensors.torch import save as save_safetensors

from dlfd.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    read_weights,
    save_checkpoint,
    sidecar_path,
)
from dlfd.data.manifest import read_manifest
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.splits import apply_forget_request, read_forget_list, resolve_forget_request
from dlfd.data.transforms import InputSpec
from dlfd.errors import DlfdError
from dlfd.io import sha256_bytes
from dlfd.models import create_model
from dlfd.recipe import TrainRecipe
from dlfd.scenarios import get_scenario
from dlfd.training.loop import make_optimizer
from dlfd.training.resume import ResumePaths, load_resume_state, save_resume_state

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Strings that have broken readers elsewhere: escapes, encodings, numbers, separators.
ODD = [
    "",
    " ",
    "a.png",
    "./a.png",
    "sub/b.png",
    "sub\\b.png",
    "sub//b.png",
    "../outside.png",
    "sub/../../outside.png",
    "/etc/passwd",
    "C:\\Windows\\x.png",
    "c:x.png",
    "out.png",  # a symlink leading out of the root
    "loop.png",  # a symlink to itself
    "sub",  # a folder
    "a\x00b.png",
    "x" * 300,
    "d/" * 2100 + "a.png",
    "\ufeffa.png",
    "a.png\r",
    "a.png\n",
    "\u00e9t\u00e9.png",
    "\U0001f600.png",
    "\udcff.png",
    "~/a.png",
    "$HOME/a.png",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e999",
    "-1",
    "0",
    "1",
    "2",
    "01",
    "9" * 5000,
    "0x10",
    "1_0",
    "true",
    "retain",
    "forget",
    "val",
    "test",
    "unseen",
    "train",
    "p0",
    "p1",
    '"',
    ",",
    "#",
]
FIELD = st.one_of(st.sampled_from(ODD), st.text(max_size=12))
COLUMNS = [
    "path",
    "label",
    "identity",
    "split",
    "label_a",
    "label_b",
    " path ",
    "Path",
    "label_",
    "",
    "extra",
]


def assert_one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message.strip(), f"empty message from {type(exc).__name__}"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"


class Hang(Exception):
    """A reader still running after its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float = 30.0) -> Iterator[None]:
    """Raise :class:`Hang` in the block if it runs longer than ``seconds``."""

    def interrupt(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call: Callable[[], Any]) -> Any:
    """The result of ``call``, or None after checking that it failed with a one-line DlfdError.

    Any other exception (or a hang, see :func:`time_limit`) propagates and fails the test.
    """
    try:
        with time_limit():
            result = call()
    except DlfdError as exc:
        assert_one_line(exc)
        _event(f"refused: {type(exc).__name__}")
        return None
    _event("accepted")
    return result


def _event(name: str) -> None:
    """Count outcomes in hypothesis' statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(name)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (not following links) with its size and mtime."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data folder with a few images, a folder, a link out of it and a link loop."""
    base = tmp_path_factory.mktemp("fuzz")
    outside = base / "outside.png"
    _png(outside, 999)
    root = base / "data"
    for i, name in enumerate(["a.png", "sub/b.png", "c.png", "d.png"]):
        _png(root / name, i)
    for k in range(12):  # people p0..p11, two images each, for the csv scenario
        for j in range(2):
            _png(root / f"p{k}" / f"{j}.png", 100 + 2 * k + j)
    (root / "out.png").symlink_to(outside)
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "sub" / "up.png").symlink_to(Path("..") / ".." / "outside.png")
    yield root


# ------------------------------------------------------------------------------ manifests
FILES = ["a.png", "sub/b.png", "c.png", "d.png"] + [
    f"p{k}/{j}.png" for k in range(12) for j in (0, 1)
]


def _column_value(column: str) -> Any:
    """Plausible values of a manifest column."""
    return {
        "path": st.sampled_from(FILES),
        "label": st.sampled_from(["0", "1", "2", "smile", "10"]),
        "identity": st.sampled_from([f"p{k}" for k in range(12)] + [""]),
        "split": st.sampled_from(SPLITS),
    }.get(column, st.sampled_from(["0", "1"]))


@st.composite
def manifest_rows(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A nearly valid manifest: the usual columns in any order, valid values, and now and then
    one odd value in one cell."""
    label = draw(st.sampled_from([["label"], ["label_a", "label_b"], ["label_a"]]))
    extra = draw(st.lists(st.sampled_from(["identity", "split"]), unique=True))
    header = draw(st.permutations(["path", *label, *extra]))
    paths = draw(st.lists(st.sampled_from(FILES), min_size=1, max_size=8, unique=True))
    rows = [[p if c == "path" else draw(_column_value(c)) for c in header] for p in paths]
    if draw(st.booleans()):
        row, col = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
        rows[row][col] = draw(FIELD)
    return header, rows


@st.composite
def odd_rows(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    """A header of (often duplicate or odd) columns and ragged rows of odd values."""
    header = draw(st.lists(st.sampled_from(COLUMNS) | st.text(max_size=6), max_size=6))
    rows = [
        [draw(FIELD) for _ in range(max(0, len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))))]
        for _ in range(draw(st.integers(0, 5)))
    ]
    return header, rows


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    """A CSV file, nearly valid or odd, with any line ending, quoted or raw, in one of several
    encodings, sometimes with a BOM, truncated or with trailing garbage."""
    header, rows = draw(st.one_of(manifest_rows(), manifest_rows(), manifest_rows(), odd_rows()))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.integers(0, 3)):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=newline).writerows([header, *rows])
        text = buffer.getvalue()
    else:
        text = newline.join(",".join(row) for row in [header, *rows])
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1"]))
    data = text.encode(encoding, errors="surrogatepass" if encoding == "utf-8" else "replace")
    if draw(st.integers(0, 19)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 19)) == 0:
        data += draw(st.binary(max_size=16))
    return data


def check_listed_paths(records: ImageRecords, root: Path, check_files: bool) -> None:
    """Every listed path is a clean relative key; checked files exist inside ``root``."""
    real_root = root.resolve()
    for key in records.paths:
        assert not key.startswith("/") and ".." not in key.split("/") and "\x00" not in key
        if check_files:  # realpath, not resolve(): a listed link loop must not end the check
            assert Path(os.path.realpath(real_root / key)).is_relative_to(real_root)
            assert (real_root / key).is_file()


@settings(FUZZ, max_examples=200)
@given(data=csv_bytes(), check_files=st.booleans())
def test_fuzzed_manifest(data_root: Path, data: bytes, check_files: bool) -> None:
    before = tree(data_root)
    path = data_root / "m.csv"  # listed paths are relative to the manifest's folder
    path.write_bytes(data)
    try:
        manifest = outcome(lambda: read_manifest(path, check_files=check_files))
        if manifest is not None:
            check_listed_paths(manifest.records, data_root, check_files)
    finally:
        path.unlink()
    assert tree(data_root) == before


@pytest.mark.parametrize(
    "text",
    [
        "path,label\nloop.png,1\n",
        "path,label\nout.png,1\n",
        "path,label\nsub/up.png,1\n",
        "path,label\nsub,1\n",
        "path,label\n" + "d/" * 2100 + "a.png,1\n",
        "path,label\n" + "x" * 300 + ",1\n",
        'path,label\n"a.png\nb.png",1\n',
        "path,path,label\na.png,c.png,1\n",
        "path,label_a,label_a\na.png,1,0\n",
        "path,label, label\na.png,1,2\n",
        "path,label_a\na.png,1e999\n",
        "path,label_a\na.png,nan\n",
        "path,label\n\x00,1\n",
        "\ufeffpath,label\r\na.png,1\r\n",
        "",
        "\n\n",
    ],
)
def test_manifest_edge_cases(data_root: Path, text: str) -> None:
    path = data_root / "edge.csv"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        manifest = outcome(lambda: read_manifest(path))
        if manifest is not None:
            check_listed_paths(manifest.records, data_root, True)
    finally:
        path.unlink()


def test_duplicate_columns_are_refused(data_root: Path) -> None:
    path = data_root / "dup.csv"
    for text in ("path,label_a,label_a\na.png,1,0\n", "path,label,path\na.png,1,c.png\n"):
        path.write_text(text)
        with pytest.raises(DlfdError, match="twice"):
            read_manifest(path)
    path.unlink()


def test_manifest_path_itself_may_be_odd(data_root: Path) -> None:
    for odd in ("m\x00.csv", "x" * 300 + ".csv", "sub"):
        outcome(lambda odd=odd: read_manifest(data_root / odd))


@st.composite
def scenario_rows(draw: st.DrawFn) -> list[tuple[str, str, str, str]]:
    """Rows (path, label, identity, split) over the 24 images of p0..p11: mostly the person's
    own identity and valid labels and splits, now and then one odd row."""
    files = draw(st.lists(st.sampled_from(FILES[4:]), max_size=24, unique=True))
    rows = [
        (
            f,
            draw(st.sampled_from(["0", "1"])),
            draw(st.sampled_from([f.split("/")[0]] * 4 + ["p0", ""])),
            draw(st.sampled_from(SPLITS)),
        )
        for f in files
    ]
    if draw(st.booleans()):
        odd = (
            draw(st.sampled_from(FILES[4:]) | st.sampled_from(ODD[:16])),
            draw(st.sampled_from(["0", "1", "2", "", "nan", "x"])),
            draw(st.sampled_from(["p1", "", "p\x00", "\ufeffp1"])),
            draw(st.sampled_from([*SPLITS, "", "train", "Forget"])),
        )
        rows.insert(draw(st.integers(0, len(rows))), odd)
    return rows


@settings(FUZZ, max_examples=100)
@given(
    rows=scenario_rows(),
    with_split=st.booleans(),
    options=st.fixed_dictionaries(
        {},
        optional={
            "level": st.sampled_from(["auto"] * 4 + ["identity", "mixed", "instance", "bogus"]),
            "leaks": st.sampled_from(["refuse", "drop", "drop", "drop", "drop-near", "x"]),
        },
    ),
    seed=st.sampled_from([0, 1, 2, 3, 2**64, -1]),
    size=st.sampled_from([None] * 5 + [8, 16, 10**6, 7, -1]),
)
def test_fuzzed_csv_scenario(
    data_root: Path,
    rows: list[tuple[str, str, str, str]],
    with_split: bool,
    options: dict[str, str],
    seed: int,
    size: int | None,
) -> None:
    before = tree(data_root)
    header = ["path", "label", "identity"] + (["split"] if with_split else [])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(row[: len(header)] for row in rows)
    path = data_root / "scenario.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", errors="surrogatepass")
    try:
        scenario = outcome(
            lambda: get_scenario(
                "csv", split_seed=seed, data_root=path, image_size=size, options=options
            )
        )
    finally:
        path.unlink()
    if scenario is not None:
        problem = scenario.problem
        assert len(problem.forget) and len(problem.retain)
        check_listed_paths(problem.records, data_root, True)
    assert tree(data_root) == before


# ------------------------------------------------------------------------------ forget lists
@settings(FUZZ, max_examples=200)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.lists(FIELD, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "replace")),
        st.lists(FIELD, max_size=6).map(
            lambda lines: "\r\n".join(lines).encode("utf-16", "replace")
        ),
        st.lists(FIELD, max_size=6).map(
            lambda lines: b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8", "replace")
        ),
    )
)
def test_fuzzed_forget_list(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "forget.txt"
    path.write_bytes(data)
    entries = outcome(lambda: read_forget_list(path))
    if entries is not None:
        assert entries and all(e and e == e.strip() and "#" not in e for e in entries)


def test_forget_list_path_itself_may_be_odd(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    for odd in ("f\x00.txt", "x" * 300, "dir", "missing.txt", "d/" * 2100 + "f"):
        with pytest.raises(DlfdError) as info:
            read_forget_list(tmp_path / odd)
        assert_one_line(info.value)


@pytest.fixture(scope="module")
def problem() -> UnlearningProblem:
    paths = tuple(f"p{k}/{j}.png" for k in range(6) for j in range(3))
    records = ImageRecords(
        root=Path("/nonexistent-root"),
        paths=paths,
        labels=np.asarray([j % 2 for k in range(6) for j in range(3)]),
        identities=tuple(p.split("/")[0] for p in paths),
        class_names=("a", "b"),
        name="people",
    )
    people = {"forget": [0, 1], "retain": [2, 3], "val": [4], "test": [5], "unseen": []}
    arrays = {split: [3 * k + j for k in ks for j in range(3)] for split, ks in people.items()}
    return UnlearningProblem(records=records, level="identity", check_content=False, **arrays)


ENTRIES = st.lists(
    st.one_of(
        st.sampled_from(
            [f"p{k}" for k in range(7)] + [f"p{k}/{j}.png" for k in range(6) for j in range(4)]
        ),
        st.sampled_from(
            ["./p0/0.png", "p0\\1.png", " p1 ", "../p0/0.png", "/p0/0.png", "p0/./0.png"]
        ),
        FIELD,
    ),
    max_size=6,
)


@settings(FUZZ, max_examples=200)
@given(entries=ENTRIES)
def test_fuzzed_forget_request(problem: UnlearningProblem, entries: list[str]) -> None:
    indices = outcome(lambda: resolve_forget_request(problem.records, entries))
    if indices is not None:
        assert all(0 <= i < len(problem.records) for i in indices.tolist())
    changed = outcome(lambda: apply_forget_request(problem, entries))
    if changed is not None:
        assert set(changed.forget.tolist()) <= set(problem.train.tolist())
        assert set(changed.train.tolist()) == set(problem.train.tolist())


# ------------------------------------------------------------------------------ checkpoints
SPEC = InputSpec(size=(16, 16), channels=1, mean=(0.5,), std=(0.5,))
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 10**30, 2**63, 1e308, 1e-320]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ODD),
    st.text(max_size=8),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
SPECIAL_VALUES = {
    "arch": st.sampled_from(["small_cnn", "resnet18", "", "nope", "../small_cnn"]),
    "num_classes": st.sampled_from([0, 1, 2, 3, -1, 10**12, 2**63, 10**100, True, 2.0]),
    "input": st.one_of(
        st.fixed_dictionaries(
            {
                "size": st.lists(
                    st.sampled_from([8, 16, 0, -1, 10**6, 10**20, 1e308, 2.5, "16"]), max_size=3
                ),
                "channels": st.sampled_from([1, 3, 2, 0, 1.5, "1", None]),
                "mean": st.lists(st.sampled_from([0.5, 1e308, -1e308, 0.0, "x"]), max_size=3),
                "std": st.lists(st.sampled_from([0.5, 0.0, -1.0, 1e-320, 1e308]), max_size=3),
            }
        ),
        JSON_VALUE,
    ),
    "model_kwargs": st.one_of(
        st.just({}),
        st.dictionaries(
            st.sampled_from(["width", "in_channels", "dropout", "foo", "num_classes"]),
            JSON_SCALAR,
            max_size=2,
        ),
        JSON_VALUE,
    ),
    "split_seed": st.sampled_from([None, 0, -1, 2**64, "1"]),
    "forget_keys": st.one_of(st.none(), st.lists(st.sampled_from(ODD), max_size=3), JSON_VALUE),
    "scenario_options": st.one_of(
        st.just({}), st.dictionaries(st.sampled_from(ODD), st.sampled_from(ODD), max_size=2)
    ),
    "recipe": st.one_of(
        st.just({}),
        st.dictionaries(
            st.sampled_from(["epochs", "lr", "batch_size", "model", "augment", "bogus"]),
            JSON_SCALAR,
            max_size=3,
        ),
    ),
}


def _valid_sidecar(weights: bytes) -> dict[str, Any]:
    meta = CheckpointMeta(
        arch="small_cnn",
        num_classes=3,
        task="multiclass",
        input_spec=SPEC,
        role="original",
        weights_sha256=sha256_bytes(weights),
    )
    return meta.to_dict()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "genuine.safetensors"
    meta = CheckpointMeta(
        arch="small_cnn", num_classes=3, task="multiclass", input_spec=SPEC, role="original"
    )
    save_checkpoint(create_model("small_cnn", 3, in_channels=1), path, meta)
    return path


@settings(FUZZ, max_examples=100)
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [*SPECIAL_VALUES, "format", "task", "role", "weights_sha256", "extra", "created", "x"]
        ),
        st.none(),
        max_size=4,
    ),
    deletions=st.lists(
        st.sampled_from(["arch", "num_classes", "task", "input", "role", "format"]), max_size=2
    ),
    data=st.data(),
)
def test_fuzzed_sidecar(
    genuine: Path, changes: dict[str, None], deletions: list[str], data: st.DataObject
) -> None:
    """A sidecar with odd fields: read_meta, load_checkpoint and the recorded recipe refuse it
    with a DlfdError or load a model; nothing else."""
    sidecar = json.loads(sidecar_path(genuine).read_text())
    for key in changes:
        sidecar[key] = data.draw(SPECIAL_VALUES.get(key, JSON_VALUE), label=key)
    for key in deletions:
        sidecar.pop(key, None)
    folder = genuine.parent / "mutated"
    folder.mkdir(exist_ok=True)
    path = folder / "m.safetensors"
    path.write_bytes(genuine.read_bytes())
    sidecar_path(path).write_text(json.dumps(sidecar))
    meta = outcome(lambda: read_meta(path))
    loaded = outcome(lambda: load_checkpoint(path))
    if meta is not None and meta.recipe:
        outcome(lambda: TrainRecipe.from_dict(meta.recipe))
    if loaded is not None:
        assert loaded[1] == meta


@settings(FUZZ, max_examples=200)
@given(
    text=st.one_of(
        st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
        st.sampled_from(
            [
                "",
                "null",
                "[]",
                '"x"',
                "{",
                "[" * 50_000 + "]" * 50_000,
                '{"a":' * 50_000 + "1" + "}" * 50_000,
                "1" * 5000,
                '{"format": "dlfd-checkpoint/1", "num_classes": NaN}',
                '{"format": "dlfd-checkpoint/1", "num_classes": Infinity}',
                '{"format": "dlfd-checkpoint/1", "num_classes": 1e999}',
                '{"format": "dlfd-checkpoint/1", "format": "x"}',
                "\ufeff{}",
            ]
        ),
        JSON_VALUE.map(json.dumps),
    ),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
)
def test_fuzzed_sidecar_text(genuine: Path, text: str, encoding: str) -> None:
    folder = genuine.parent / "text"
    folder.mkdir(exist_ok=True)
    path = folder / "m.safetensors"
    path.write_bytes(genuine.read_bytes())
    sidecar_path(path).write_bytes(text.encode(encoding, errors="replace"))
    meta = outcome(lambda: read_meta(path))
    assert meta is None or isinstance(meta, CheckpointMeta)


SAFETENSORS_DTYPES = [
    "F32",
    "F16",
    "BF16",
    "F64",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "U16",
    "U32",
    "U64",
    "C64",
    "F4",
    "F6_E2M3",
    "F8_E8M0",
    "X",
    "",
]


@st.composite
def safetensors_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, a plausible header over random data, or a well-formed file of the
    model's tensors in odd dtypes and shapes."""
    kind = draw(st.sampled_from(["random", "header", "tensors"]))
    if kind == "random":
        return draw(st.binary(max_size=256))
    if kind == "header":
        header: dict[str, Any] = {}
        offset = 0
        for i in range(draw(st.integers(0, 3))):
            shape = draw(st.lists(st.integers(0, 2**40) | st.integers(0, 5), max_size=3))
            size = draw(st.integers(0, 64))
            begin = draw(st.sampled_from([offset, 0, offset + 1]))
            header[draw(st.sampled_from([f"t{i}", "__metadata__", "conv.weight"]))] = {
                "dtype": draw(st.sampled_from(SAFETENSORS_DTYPES)),
                "shape": shape,
                "data_offsets": [begin, begin + size],
            }
            offset = begin + size
        if draw(st.booleans()):
            header["__metadata__"] = draw(JSON_VALUE)
        raw = json.dumps(header).encode()
        declared = draw(st.sampled_from([len(raw), len(raw) + 1, 2**63, 0]))
        return struct.pack("<Q", declared % 2**64) + raw + draw(st.binary(max_size=offset + 8))
    tensors = {
        k: v.clone() for k, v in create_model("small_cnn", 3, in_channels=1).state_dict().items()
    }
    name = draw(st.sampled_from(sorted(tensors)))
    change = draw(st.sampled_from(["none", "shape", "name", "nan", "inf", "dtype", "drop", "add"]))
    value = tensors[name]
    if change == "shape":
        tensors[name] = torch.zeros(draw(st.lists(st.integers(0, 3), max_size=3)))
    elif change == "name":
        tensors[name + draw(st.sampled_from([".x", "\x00", "/../a", " "]))] = tensors.pop(name)
    elif change in ("nan", "inf") and value.is_floating_point():
        value.view(-1)[0] = float(change)
    elif change == "dtype":
        dtypes = [torch.float16, torch.float64, torch.int64, torch.bool, torch.complex64]
        tensors[name] = value.to(draw(st.sampled_from(dtypes)))
    elif change == "drop":
        del tensors[name]
    elif change == "add":
        tensors["extra.weight"] = torch.zeros(2)
    return save_safetensors(tensors)


@settings(FUZZ, max_examples=100)
@given(weights=safetensors_bytes())
def test_fuzzed_weights_file(genuine: Path, weights: bytes) -> None:
    """Garbage weights whose hash the sidecar records (so only the parser stands guard)."""
    folder = genuine.parent / "weights"
    folder.mkdir(exist_ok=True)
    path = folder / "m.safetensors"
    path.write_bytes(weights)
    sidecar_path(path).write_text(json.dumps(_valid_sidecar(weights)))
    meta = read_meta(path)
    outcome(lambda: read_weights(path, meta))
    outcome(lambda: load_checkpoint(path))


# ------------------------------------------------------------------------------ resume states
RECIPE = TrainRecipe(model="small_cnn")


@pytest.fixture(scope="module")
def resume_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResumePaths, str]:
    """A genuine resume state after epoch 1 and the text of its JSON half."""
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, in_channels=1)
    paths = ResumePaths.for_checkpoint(tmp_path_factory.mktemp("resume") / "r.safetensors")
    optimizer = make_optimizer(model, RECIPE)
    save_resume_state(paths, model, optimizer, epoch=1, config_sha256="c", history=[{"e": 1}])
    return paths, paths.meta.read_text()


@settings(FUZZ, max_examples=60)
@given(
    key=st.sampled_from(["format", "epoch", "history", "optimizer", "config_sha256", None]),
    value=JSON_VALUE,
    text=st.none() | st.sampled_from(["", "[]", "{", "[" * 50_000, "\xff"]),
)
def test_fuzzed_resume_state(
    resume_state: tuple[ResumePaths, str], key: str | None, value: Any, text: str | None
) -> None:
    """A damaged resume state is ignored (training starts over from untouched weights); it
    never raises and never half-loads."""
    paths, genuine_text = resume_state
    if text is None:
        meta = json.loads(genuine_text)
        if key is not None:
            meta[key] = value
        text = json.dumps(meta)
    paths.meta.write_text(text, encoding="utf-8", errors="surrogatepass")
    fresh = create_model("small_cnn", 3, in_channels=1)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    with time_limit():
        restored = load_resume_state(paths, fresh, make_optimizer(fresh, RECIPE), config_sha256="c")
    _event("accepted" if restored is not None else "ignored")
    if restored is None:
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in initial.items())
