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
