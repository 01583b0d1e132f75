"""Shared fixtures: tiny image files and record tables built in ``tmp_path``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlfd.data.records import ImageRecords

_SEEDS = itertools.count(1)


def _write_image(
    path: Path, *, seed: int | None = None, rgb: bool = False, size: tuple[int, int] = (8, 8)
) -> Path:
    """Write a random (hence unique) ``size`` = (width, height) PNG/PGM/... image at ``path``."""
    rng = np.random.default_rng(next(_SEEDS) if seed is None else seed)
    shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, seed=None, rgb=False, size=(8, 8))``: an image of random pixels."""
    return _write_image


@pytest.fixture
def make_records(tmp_path: Path) -> Callable[..., ImageRecords]:
    """``make_records(people, per_person)``: people ``p0..`` with images ``p<k>/<j>.png``.

    Every file has distinct content; the label of image ``j`` is ``j % 2`` (classes a, b).
    """

    def make(people: int = 6, per_person: int = 4, name: str = "tiny") -> ImageRecords:
        root = tmp_path / name
        paths, identities = [], []
        for k in range(people):
            for j in range(per_person):
                _write_image(root / f"p{k}" / f"{j}.png")
                paths.append(f"p{k}/{j}.png")
                identities.append(f"p{k}")
        labels = np.asarray([int(p.split("/")[1].split(".")[0]) % 2 for p in paths])
        return ImageRecords(
            root=root,
            paths=tuple(paths),
            labels=labels,
            identities=tuple(identities),
            class_names=("a", "b"),
            name=name,
        )

    return make


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep dlfd's hash cache out of the user's home during tests."""
    import os

    os.environ["DLFD_CACHE_DIR"] = str(tmp_path_factory.mktemp("dlfd-cache"))


@pytest.fixture(autouse=True)
def _private_trust_list(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets an empty ``$XDG_CONFIG_HOME``, so the factories ``dlfd import`` trusts
    (``dlfd/trusted-factories.json`` there) never touch the user's nor leak between tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


#: Flags that make ``dlfd train`` on ORL take seconds (tiny CNN, 32 px, one epoch).
FAST_TRAIN = [
    "--model",
    "small_cnn",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--quiet",
    "--set",
    "batch_size=64",
]


#: ``dlfd bench`` flags that train the original and reference in seconds (tiny CNN, 16 px).
FAST_BENCH = [
    "--image-size",
    "16",
    "--set",
    "recipe.model=small_cnn",
    "--set",
    "recipe.epochs=1",
    "--set",
    "recipe.batch_size=64",
]


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny orl-glasses original (``FAST_TRAIN``: seconds, one thread), shared by the tests
    that only need some original model of the scenario."""
    import torch

    from dlfd.cli import main

    path = tmp_path_factory.mktemp("tiny-original") / "orig.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["train", "-d", "orl-glasses", *FAST_TRAIN, "--out", str(path)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    finally:
        torch.set_num_threads(threads)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli(*args)``: run ``dlfd ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from dlfd.cli import main

    def run(*args: str | Path) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    """A manifest CSV over 20 people x 6 images (labels alternate): the ``csv`` scenario."""
    root = tmp_path / "data"
    lines = ["path,label,identity"]
    for k in range(20):
        for j in range(6):
            _write_image(root / f"p{k}" / f"{j}.png", size=(16, 16))
            lines.append(f"p{k}/{j}.png,{'ab'[j % 2]},p{k}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
