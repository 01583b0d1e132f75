"""A small on-disk cache of per-image hashes, so large datasets are hashed once.

Hashing means decoding every image (30,000 full-size CelebA-HQ JPEGs take minutes), and every
command builds its splits anew. The cache maps each file (relative path) to its size, mtime and
hashes; an entry is reused only while size and mtime are unchanged. It lives in
``$DLFD_CACHE_DIR`` (default ``$XDG_CACHE_HOME/dlfd`` or ``~/.cache/dlfd``), one JSON file per
dataset folder, written atomically; an unreadable cache is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from dlfd.errors import DlfdError
from dlfd.io import atomic_write_text, read_file_bytes

_FORMAT = "dlfd-hashes/1"
HashPair = tuple[str, int]


def cache_dir() -> Path:
    """Where dlfd keeps caches."""
    if os.environ.get("DLFD_CACHE_DIR"):
        return Path(os.environ["DLFD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlfd"


def _cache_file(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:20]
    return cache_dir() / f"hashes-{digest}.json"


def _load(path: Path) -> dict[str, list]:
    try:
        data = json.loads(read_file_bytes(path, "hash cache"))
    except (DlfdError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def cached_hashes(
    root: Path, keys: Sequence[str], compute: Callable[[Path], HashPair]
) -> list[HashPair]:
    """``compute(root / key)`` for every key, reusing cached results for unchanged files."""
    path = _cache_file(root)
    entries = _load(path)
    results: list[HashPair] = []
    changed = False
    for key in keys:
        file = root / key
        try:
            stat = file.stat()
        except OSError:
            results.append(compute(file))  # raises the reader's own error for a missing file
            continue
        entry, fresh = entries.get(key), [stat.st_size, stat.st_mtime_ns]
        if isinstance(entry, list) and len(entry) == 4 and entry[:2] == fresh:
            results.append((str(entry[2]), int(entry[3])))
            continue
        pixel, perceptual = compute(file)
        entries[key] = [*fresh, pixel, perceptual]
        results.append((pixel, perceptual))
        changed = True
    if changed:
        # a read-only cache folder only costs speed
        with contextlib.suppress(OSError):
            atomic_write_text(
                path, json.dumps({"format": _FORMAT, "root": str(root), "entries": entries})
            )
    return results
