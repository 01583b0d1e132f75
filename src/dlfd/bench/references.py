"""The original model and the retrained reference of each seed, trained once and cached.

A trained checkpoint lives in the cache (``$DLFD_CACHE_DIR/references``, or ``--cache-dir``)
under the hash of everything that determines it (:mod:`dlfd.runs.cache`), so any benchmark
that needs the same model reuses it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from dlfd.checkpoint import CheckpointMeta, read_meta, sidecar_path
from dlfd.data.hash_cache import cache_dir as default_cache_dir
from dlfd.io import atomic_open
from dlfd.runs.cache import ModelCache
from dlfd.runs.cache import TrainedModel as Reference

__all__ = ["ROLE_OF_ROW", "Reference", "place_checkpoint", "reference_cache"]

#: Bench row name -> training role of the checkpoint behind it.
ROLE_OF_ROW = {"original": "original", "retrain": "retrained"}


def reference_cache(cache_dir: Path | None) -> ModelCache:
    """The references' cache: ``references/{scenario}-{role}-{24 hex digits of the hash}``
    (the key of every reference cached so far)."""
    folder = (cache_dir or default_cache_dir()) / "references"
    return ModelCache(folder, "{scenario}-{role}-{digest:.24}")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s content, atomically: a hard link when the two are on one
    file system, a copy otherwise."""
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dst):
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with atomic_open(dst) as out, open(src, "rb") as source:
            shutil.copyfileobj(source, out)


def place_checkpoint(src: Path, dst: Path) -> CheckpointMeta:
    """Put checkpoint ``src`` at ``dst`` (sidecar first, then weights, as
    :func:`dlfd.checkpoint.save_checkpoint` writes them) without copying when possible."""
    _link_or_copy(sidecar_path(src), sidecar_path(dst))
    _link_or_copy(src, dst)
    return read_meta(dst)
