"""Bring-your-own data: a CSV manifest or an ImageFolder tree.

Manifest columns: ``path`` (relative to the manifest's folder), then either ``label`` (one class
name per row: multiclass) or one ``label_<name>`` column per label with 0/1 values
(multilabel); optional ``identity``; optional ``split`` (retain, forget, val, test, unseen).
Every path is checked to stay inside the manifest's folder and to exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlfd.data.problem import SPLITS
from dlfd.data.records import (
    ImageRecords,
    check_listed_files,
    read_csv_rows,
    safe_relative_path,
    shown,
)
from dlfd.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".webp", ".tif", ".tiff")
_MAX_ROWS = 10_000_000


@dataclass(frozen=True)
class Manifest:
    """Records read from a manifest plus the split named on each row (``None`` if no column)."""

    records: ImageRecords
    splits: tuple[str, ...] | None


def _class_order(values: list[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer ("2" before "10")."""
    unique = set(values)
    try:
        # The name breaks ties ("1" and "01"), so the order never depends on set iteration.
        return sorted(unique, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(unique)


def read_manifest(path: str | Path, *, check_files: bool = True) -> Manifest:
    """Parse a manifest CSV into :class:`ImageRecords` (and its ``split`` column, if any)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise DataError(
            f"manifest not found: {path} (expected a CSV with columns "
            f"path,label[,identity][,split])"
        )
    root = path.resolve().parent
    columns, rows = read_csv_rows(path, "manifest", f"manifest {path}", max_rows=_MAX_ROWS)
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise DataError(f"manifest {path} names column(s) {twice} twice")
    if "path" not in columns:
        raise DataError(
            f"manifest {path} has no 'path' column "
            f"(found: {', '.join(map(shown, columns)) or 'none'})"
        )
    label_columns = [c for c in columns if c.startswith("label_")]
    multilabel = "label" not in columns
    if multilabel and not label_columns:
        raise DataError(
            f"manifest {path} has no 'label' column nor 'label_<name>' columns "
            f"(found: {', '.join(map(shown, columns))})"
        )
    if not rows:
        raise DataError(f"manifest {path} has a header but no rows")
    keys = [safe_relative_path(row["path"], root, what=f"{path}:{n} path") for n, row in rows]
    identities = tuple(row.get("identity", "") for _, row in rows)
    if multilabel:
        try:
            labels = np.asarray([[float(row[c]) for c in label_columns] for _, row in rows])
        except ValueError as exc:
            raise DataError(f"manifest {path}: multilabel values must be 0 or 1 ({exc})") from None
        class_names = tuple(c[len("label_") :] for c in label_columns)
        task = "multilabel"
    else:
        values = [row["label"] for _, row in rows]
        empty = [n for (n, _), v in zip(rows, values, strict=True) if not v]
        if empty:
            raise DataError(f"manifest {path}: empty label on line(s) {empty[:5]}")
        class_names = tuple(_class_order(values))
        lookup = {name: i for i, name in enumerate(class_names)}
        labels = np.asarray([lookup[v] for v in values], np.int64)
        task = "multiclass"
    splits = None
    if "split" in columns:
        splits = tuple(row["split"] for _, row in rows)
        bad = sorted({s for s in splits if s not in SPLITS})
        if bad:
            raise DataError(f"manifest {path}: unknown split values {bad}; expected {SPLITS}")
    if check_files:
        check_listed_files(root, keys, f"manifest {path}")
    records = ImageRecords(root, tuple(keys), labels, identities, class_names, task, path.stem)
    return Manifest(records, splits)


def imagefolder_records(root: str | Path) -> ImageRecords:
    """An ImageFolder tree ``root/<class>/**/<image>``: class = top folder, no identities."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root} (expected {root}/<class>/<image files>)")
    classes = _class_order(
        [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    )
    if not classes:
        raise DataError(f"no class folders in {root} (expected {root}/<class>/<image files>)")
    base = root.resolve()
    paths, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                if not file.resolve().is_relative_to(base):
                    raise DataError(f"{file} links outside the image folder {root}")
                paths.append(file.relative_to(root).as_posix())
                labels.append(label)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    no_identities = ("",) * len(paths)
    return ImageRecords(
        base, tuple(paths), np.asarray(labels), no_identities, tuple(classes), name=root.name
    )
