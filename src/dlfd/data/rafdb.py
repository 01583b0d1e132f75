"""RAF-DB basic emotion (7 classes) in the ImageFolder layout DLFD trains on.

The user's folder (``--data-root``) is the ``DATASET`` folder (or a folder containing it) with
``train/<class>/*.jpg`` and ``test/<class>/*.jpg``; the class folders are ``1``..``7``
(:data:`CLASS_NAMES`). There are no identities. Images are listed exactly as torchvision's
``ImageFolder`` lists them (class folders sorted by name; within each, the folders of
``sorted(os.walk(...))`` and their files sorted by name), train first, so that sample ``i`` of the
train part is ``ImageFolder(train)[i]``. Accepted images: .jpg, .jpeg, .png (any case); other
files ImageFolder would load are refused, since they would shift that order.
Obtain RAF-DB from its authors (www.whdeng.cn/raf/model1.html, on request); nothing is
downloaded here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlfd.data.records import ImageRecords, check_listed_files
from dlfd.errors import DataError

CLASS_FOLDERS: tuple[str, ...] = ("1", "2", "3", "4", "5", "6", "7")
CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
PARTS: tuple[str, ...] = ("train", "test")
DATASET_FOLDER = "DATASET"
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
#: Further extensions torchvision's ImageFolder would load (refused: they would shift its order).
_IMAGEFOLDER_ONLY = (".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_HOW_TO_GET = (
    "RAF-DB is distributed by its authors on request (www.whdeng.cn/raf/model1.html); pass the"
    " DATASET folder of the basic-emotion release (train/1..7/, test/1..7/)"
)


@dataclass(frozen=True)
class RafdbData:
    """All RAF-DB images (train part first, each in ImageFolder order) and the part of each."""

    records: ImageRecords
    part: np.ndarray


def locate_rafdb(root: Path) -> Path:
    """The folder holding ``train/`` and ``test/``: ``root`` itself or ``root/DATASET``."""
    if not root.is_dir():
        raise DataError(f"RAF-DB folder not found: {root}. {_HOW_TO_GET}")
    for base in (root, root / DATASET_FOLDER):
        if (base / "train").is_dir() or (base / "test").is_dir():
            return base
    raise DataError(
        f"no train/ or test/ folder in {root} or {root / DATASET_FOLDER} (expected "
        f"train/<1..7>/*.jpg and test/<1..7>/*.jpg). {_HOW_TO_GET}"
    )


def imagefolder_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` in torchvision ImageFolder's order."""
    out = []
    for current, _, names in sorted(os.walk(folder, followlinks=True)):
        for name in sorted(names):
            lower = name.lower()
            if lower.endswith(IMAGE_SUFFIXES):
                out.append(Path(current) / name)
            elif lower.endswith(_IMAGEFOLDER_ONLY):
                raise DataError(
                    f"{Path(current) / name}: only {', '.join(IMAGE_SUFFIXES)} images are "
                    f"accepted in RAF-DB class folders"
                )
    return out


def _read_part(base: Path, part: str) -> tuple[list[str], list[int]]:
    folder = base / part
    if not folder.is_dir():
        raise DataError(f"RAF-DB folder missing: {folder}. {_HOW_TO_GET}")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    missing = [c for c in CLASS_FOLDERS if c not in found]
    if missing:
        raise DataError(
            f"RAF-DB class folder(s) {', '.join(missing)} missing in {folder} "
            f"(expected {', '.join(CLASS_FOLDERS)}). {_HOW_TO_GET}"
        )
    extra = [d for d in found if d not in CLASS_FOLDERS]
    if extra:
        raise DataError(
            f"unexpected folder(s) {', '.join(extra)} in {folder}: only the class folders "
            f"{', '.join(CLASS_FOLDERS)} may be there (ImageFolder would take them as classes)"
        )
    resolved = base.resolve()
    paths, labels = [], []
    for label, name in enumerate(CLASS_FOLDERS):  # sorted by name, as ImageFolder does
        for file in imagefolder_files(folder / name):
            if not file.resolve().is_relative_to(resolved):
                raise DataError(f"{file} links outside the RAF-DB folder {base}")
            paths.append(file.relative_to(base).as_posix())
            labels.append(label)
    if not paths:
        raise DataError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}/<1..7>/. {_HOW_TO_GET}"
        )
    return paths, labels


def rafdb_records(root: str | Path) -> RafdbData:
    """Read RAF-DB's train and test folders (labels: folder 1..7 -> 0..6, no identities)."""
    base = locate_rafdb(Path(root))
    paths, labels, parts = [], [], []
    for part in PARTS:
        part_paths, part_labels = _read_part(base, part)
        paths += part_paths
        labels += part_labels
        parts += [part] * len(part_paths)
    check_listed_files(base, paths, "RAF-DB")  # a FIFO or device named *.jpg is never opened
    no_identities = ("",) * len(paths)
    records = ImageRecords(
        base, tuple(paths), np.asarray(labels, np.int64), no_identities, CLASS_NAMES, name="rafdb"
    )
    return RafdbData(records, np.asarray(parts))
