"""The table of samples an unlearning problem is built on: (image file, task label, identity).

:class:`ImageRecords` is immutable and knows nothing about splits; :mod:`dlfd.data.problem`
puts the five index sets on top of it. Paths are stored relative to ``root`` (the sample key
used in forget lists and hashes) and are checked never to escape it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from dlfd.data.hash_cache import cached_hashes
from dlfd.data.images import image_hashes
from dlfd.errors import DataError
from dlfd.io import read_file_text

Task = Literal["multiclass", "multilabel"]
TASKS: tuple[str, ...] = ("multiclass", "multilabel")


def safe_relative_path(path: str, root: Path, *, what: str = "path") -> str:
    """Normalise ``path`` (relative to ``root``) to a POSIX key; refuse paths that escape root."""
    text = path.strip().replace("\\", "/")
    if not text:
        raise DataError(f"empty {what} under {root}")
    if "\x00" in text:
        raise DataError(f"{what} {path!r} contains a NUL byte")
    pure = PurePosixPath(text)
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise DataError(f"{what} {path!r} is absolute; paths must be relative to {root}")
    parts = [part for part in pure.parts if part not in ("", ".")]
    if any(part == ".." for part in parts) or not parts:
        raise DataError(f"{what} {path!r} escapes its folder {root}")
    return "/".join(parts)


def shown(text: str) -> str:
    """``text`` for a one-line message: as is when printable, else quoted with escapes."""
    return text if text.isprintable() else repr(text)


def is_regular_file(path: Path) -> bool:
    """``path.is_file()`` that also answers False for names too long or otherwise unusable."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def check_listed_files(root: Path, keys: Sequence[str], dataset: str) -> None:
    """Refuse listed images that are missing or that lead outside ``root`` through links."""
    root = Path(root).resolve()
    # realpath follows links (a link loop stays put)
    escaping = [key for key in keys if not Path(os.path.realpath(root / key)).is_relative_to(root)]
    if escaping:
        raise DataError(f"{dataset}: paths lead outside {root} through links: {escaping[:3]}")
    missing = [key for key in keys if not is_regular_file(root / key)]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataError(
            f"{dataset}: {len(missing)} image files listed but not found (missing under "
            f"{root}, or not regular files): {', '.join(map(shown, missing[:3]))}{more}"
        )


def read_csv_rows(
    path: Path, what: str, label: str, *, required: Sequence[str] = (), max_rows: int = 0
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The stripped column names and ``(line number, stripped row)`` pairs of a CSV file
    (unnamed columns dropped from the rows). A missing ``required`` column, a row with the wrong
    number of fields, more than ``max_rows`` rows (if set) or invalid CSV is a DataError;
    ``label`` names the file in the last two messages."""
    text = read_file_text(path, what)
    try:
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DataError(
                    f"{path} lacks column(s) {', '.join(missing)} (found: "
                    f"{', '.join(c or '<unnamed>' for c in columns)}); expected "
                    f"{', '.join(required)}"
                )
            rows = []
            for line, row in enumerate(reader, start=2):
                if max_rows and line > max_rows:
                    raise DataError(f"{label} has more than {max_rows} rows")
                if None in row or any(v is None for v in row.values()):
                    raise DataError(f"{path}:{line}: wrong number of fields")
                rows.append((line, {k.strip(): v.strip() for k, v in row.items() if k}))
    except csv.Error as exc:
        raise DataError(f"{label} is not valid CSV: {exc}") from None
    return columns, rows


@dataclass(frozen=True, eq=False)
class ImageRecords:
    """Samples of one dataset: relative image paths, task labels and identities. ``labels`` is
    ``(N,)`` int64 class indices for ``multiclass`` or ``(N, L)`` float32 0/1 for ``multilabel``;
    ``identities`` holds one string per sample, ``""`` where unknown. ``class_names`` are the class
    names (multiclass) or the label names (multilabel)."""

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    identities: tuple[str, ...]
    class_names: tuple[str, ...]
    task: Task = "multiclass"
    name: str = "dataset"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if n == 0:
            raise DataError(f"dataset {self.name!r} has no samples")
        if self.task not in TASKS:
            raise DataError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if len(self.identities) != n:
            raise DataError(f"{len(self.identities)} identities for {n} samples in {self.name!r}")
        labels = np.asarray(self.labels)
        if self.task == "multiclass":
            if labels.shape != (n,):
                raise DataError(f"multiclass labels must have shape ({n},), got {labels.shape}")
            if labels.dtype.kind not in "iu":
                try:
                    as_float = labels.astype(np.float64)
                except (TypeError, ValueError):
                    raise DataError(
                        f"multiclass labels of {self.name!r} must be class indices, "
                        f"got dtype {labels.dtype}"
                    ) from None
                fractional = np.flatnonzero(
                    ~np.isfinite(as_float) | (as_float != np.floor(as_float))
                )
                if fractional.size:
                    i = int(fractional[0])
                    raise DataError(
                        f"label {labels[i]} of {self.paths[i]!r} is not a class index "
                        f"in {self.name!r}"
                    )
            labels = labels.astype(np.int64)
            bad = np.flatnonzero((labels < 0) | (labels >= len(self.class_names)))
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    f"label {labels[i]} of {self.paths[i]!r} is outside the "
                    f"{len(self.class_names)} classes of {self.name!r}"
                )
        else:
            if labels.ndim != 2 or labels.shape != (n, len(self.class_names)):
                raise DataError(
                    f"multilabel labels must have shape ({n}, {len(self.class_names)}), "
                    f"got {labels.shape}"
                )
            labels = labels.astype(np.float32)
            bad = np.flatnonzero(~np.isin(labels, (0.0, 1.0)).all(axis=1))
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    f"multilabel labels of {self.name!r} must be 0 or 1, got "
                    f"{labels[i].tolist()} for {self.paths[i]!r}"
                )
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "root", Path(self.root))
        index: dict[str, int] = {}
        for i, key in enumerate(self.paths):
            if key in index:
                raise DataError(f"file {key!r} is listed twice in {self.name!r}")
            index[key] = i
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """Number of classes (multiclass) or labels (multilabel): the model's output width."""
        return len(self.class_names)

    @property
    def has_identities(self) -> bool:
        """True when every sample carries an identity."""
        return all(self.identities)

    def abspath(self, i: int) -> Path:
        """Absolute path of sample ``i``."""
        return self.root / self.paths[i]

    def index_of(self, key: str) -> int | None:
        """Index of the sample whose relative path is ``key`` (``None`` if absent)."""
        return self._index.get(key)

    def indices_of_identities(self, identities: Sequence[str]) -> np.ndarray:
        """Indices of every sample that belongs to one of ``identities``."""
        wanted = set(identities)
        return np.asarray([i for i, who in enumerate(self.identities) if who in wanted], np.int64)

    def unique_identities(self) -> list[str]:
        """Sorted distinct identities (empty identities excluded)."""
        return sorted({who for who in self.identities if who})

    @functools.cached_property
    def _image_hashes(self) -> tuple[tuple[str, ...], np.ndarray]:
        pairs = cached_hashes(self.root, self.paths, image_hashes)
        return tuple(p for p, _ in pairs), np.asarray([d for _, d in pairs], dtype=np.uint64)

    @property
    def content_hashes(self) -> tuple[str, ...]:
        """sha256 of every image's decoded pixels (each file is read once, then cached). Catches the
        same picture stored twice, even under another name or file format."""
        return self._image_hashes[0]

    @property
    def perceptual_hashes(self) -> np.ndarray:
        """64-bit dHash of every image (uint64): near-duplicates differ in a few bits."""
        return self._image_hashes[1]

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over every sample's path, label, identity and content: changes with the data."""
        digest = hashlib.sha256(f"{self.task}|{'|'.join(self.class_names)}".encode())
        for key, who, content, label in zip(
            self.paths, self.identities, self.content_hashes, self.labels.tolist(), strict=True
        ):
            digest.update(f"\n{key}|{who}|{content}|{label}".encode())
        return digest.hexdigest()

    def class_counts(self, indices: np.ndarray | None = None) -> dict[str, float]:
        """Per-class sample counts (multilabel: number of positives per label)."""
        labels = self.labels if indices is None else self.labels[np.asarray(indices, np.int64)]
        if self.task == "multiclass":
            counts = np.bincount(labels, minlength=self.num_classes)
        else:
            counts = labels.sum(axis=0) if len(labels) else np.zeros(self.num_classes)
        return {name: float(c) for name, c in zip(self.class_names, counts, strict=True)}
