"""MUFAC (Machine Unlearning for Facial Age Classifier; arXiv 2311.02240) in its published layout.

The user's folder (``--data-root``) holds ``custom_train_dataset.csv``, ``custom_val_dataset.csv``,
``custom_test_dataset.csv`` and the image folders ``train_images/``, ``val_images/``,
``test_images/`` (or one ``custom_korean_family_dataset_resolution_*`` folder containing them).
CSV columns (read by name; an unnamed index column is ignored): ``family_id``, ``person_id``
(the role in the family: GF, GM, F, M, S, D, S2...), ``age_class`` (a..h) and ``image_path``
(a file name inside the split's image folder). A person is ``family_id`` + ``person_id``.
Obtain the data from the authors of the benchmark (GitHub ndb796/MachineUnlearning); nothing
is downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlfd.data.records import ImageRecords, check_listed_files, read_csv_rows, safe_relative_path
from dlfd.errors import DataError

AGE_CLASSES: tuple[str, ...] = ("a", "b", "c", "d", "e", "f", "g", "h")
AGE_RANGES: tuple[str, ...] = ("0-6", "7-12", "13-19", "20-30", "31-45", "46-55", "56-66", "67-80")
#: The benchmark's names: its "test" set is custom_val, its "unseen" set is custom_test.
PARTS: dict[str, tuple[str, str]] = {
    "train": ("custom_train_dataset.csv", "train_images"),
    "val": ("custom_val_dataset.csv", "val_images"),
    "test": ("custom_test_dataset.csv", "test_images"),
}
REQUIRED_COLUMNS: tuple[str, ...] = ("family_id", "person_id", "age_class", "image_path")
PUBLISHED_FORGET_ROWS = 1500
_HOW_TO_GET = (
    "MUFAC is distributed by the benchmark's authors (GitHub ndb796/MachineUnlearning,"
    " custom_korean_family_dataset_resolution_128.zip); unzip it and pass that folder"
)


@dataclass(frozen=True)
class MufacData:
    """All MUFAC images in one table, with the published part (train/val/test) and family of each
    sample, in CSV row order (train rows first)."""

    records: ImageRecords
    part: np.ndarray
    family: np.ndarray


def locate_mufac(root: Path) -> Path:
    """The folder holding the three CSVs: ``root`` itself or its single unzipped subfolder."""
    if not root.is_dir():
        raise DataError(f"MUFAC folder not found: {root}. {_HOW_TO_GET}")
    if (root / PARTS["train"][0]).is_file():
        return root
    inner = sorted(p for p in root.glob("custom_korean_family_dataset_resolution_*") if p.is_dir())
    if len(inner) == 1 and (inner[0] / PARTS["train"][0]).is_file():
        return inner[0]
    raise DataError(
        f"no {PARTS['train'][0]} in {root} (expected the three custom_*_dataset.csv "
        f"files and train_images/, val_images/, test_images/). {_HOW_TO_GET}"
    )


def _read_part(base: Path, part: str) -> list[tuple[int, dict[str, str]]]:
    name, folder = PARTS[part]
    path = base / name
    if not path.is_file():
        raise DataError(f"MUFAC file missing: {path}. {_HOW_TO_GET}")
    if not (base / folder).is_dir():
        raise DataError(f"MUFAC image folder missing: {base / folder}. {_HOW_TO_GET}")
    _, rows = read_csv_rows(path, "MUFAC file", str(path), required=REQUIRED_COLUMNS)
    if not rows:
        raise DataError(f"{path} has no rows")
    return rows


def mufac_records(root: str | Path, *, check_files: bool = True) -> MufacData:
    """Read MUFAC's three CSVs into one :class:`MufacData` (labels: age class a..h -> 0..7)."""
    base = locate_mufac(Path(root))
    paths, labels, identities, parts, families = [], [], [], [], []
    for part, (csv_name, folder) in PARTS.items():
        for line, row in _read_part(base, part):
            letter = row["age_class"].lower()
            if letter not in AGE_CLASSES:
                raise DataError(
                    f"{base / csv_name}:{line}: age_class {row['age_class']!r} is not one of a..h"
                )
            if not row["family_id"] or not row["person_id"]:
                raise DataError(f"{base / csv_name}:{line}: empty family_id or person_id")
            key = safe_relative_path(
                f"{folder}/{row['image_path']}", base, what=f"{csv_name}:{line} image_path"
            )
            if not key.startswith(f"{folder}/"):
                raise DataError(
                    f"{base / csv_name}:{line}: image_path {row['image_path']!r} leaves {folder}/"
                )
            paths.append(key)
            labels.append(AGE_CLASSES.index(letter))
            identities.append(f"{row['family_id']}_{row['person_id']}")
            parts.append(part)
            families.append(row["family_id"])
    if check_files:
        check_listed_files(base, paths, "MUFAC")
    classes = tuple(f"{c}:{r}" for c, r in zip(AGE_CLASSES, AGE_RANGES, strict=True))
    records = ImageRecords(
        base, tuple(paths), np.asarray(labels, np.int64), tuple(identities), classes, name="mufac"
    )
    return MufacData(records, np.asarray(parts), np.asarray(families))
