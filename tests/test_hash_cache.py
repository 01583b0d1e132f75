"""The on-disk hash cache: reused for unchanged files, recomputed for changed ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dlfd.data import hash_cache
from dlfd.data.images import image_hashes


def test_hashes_are_cached_and_invalidated(tmp_path: Path, write_image, monkeypatch) -> None:
    monkeypatch.setenv("DLFD_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name in ("a.png", "b.png"):
        write_image(root / name)
    calls: list[Path] = []

    def counting(path: Path) -> tuple[str, int]:
        calls.append(path)
        return image_hashes(path)

    first = hash_cache.cached_hashes(root, ["a.png", "b.png"], counting)
    assert len(calls) == 2 and first == [image_hashes(root / "a.png"), image_hashes(root / "b.png")]
    assert hash_cache.cached_hashes(root, ["a.png", "b.png"], counting) == first
    assert len(calls) == 2  # nothing recomputed
    write_image(root / "b.png")  # new content: size or mtime changes
    os.utime(root / "b.png", ns=(1, 1))
    again = hash_cache.cached_hashes(root, ["a.png", "b.png"], counting)
    assert [p.name for p in calls[2:]] == ["b.png"]
    assert again[0] == first[0] and again[1] == image_hashes(root / "b.png") != first[1]


def test_corrupt_cache_is_ignored(tmp_path: Path, write_image, monkeypatch) -> None:
    monkeypatch.setenv("DLFD_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_image(root / "a.png")
    hash_cache.cached_hashes(root, ["a.png"], image_hashes)
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_text("{broken")
    assert hash_cache.cached_hashes(root, ["a.png"], image_hashes) == [image_hashes(root / "a.png")]


def test_missing_file_raises_the_readers_error(tmp_path: Path, monkeypatch) -> None:
    from dlfd.errors import DataError

    monkeypatch.setenv("DLFD_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="not found"):
        hash_cache.cached_hashes(tmp_path, ["gone.png"], image_hashes)
