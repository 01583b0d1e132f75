"""MUCAC (Machine Unlearning for Celebrity Attribute Classifier) read from CelebAMask-HQ.

The user's folder (``--data-root``) is the unzipped ``CelebAMask-HQ`` folder (or a folder
containing it) with:

- ``CelebA-HQ-img/0.jpg, 1.jpg, ...`` (30,000 images);
- ``CelebA-HQ-identity.txt``: one line per image, ``<file_name> <identity>`` (whitespace
  separated, no header; the identity is an integer CelebA person number);
- ``CelebA-HQ-attribute.txt``: line 1 = number of images, line 2 = the 40 attribute names,
  then one line per image: ``<file_name>`` and 40 values in {-1, 1}.

Attributes are looked up by name (``Male``, ``Smiling``, ``Young``); -1 becomes 0. Every image
must be in both annotation files. Records come sorted by image number (``0.jpg, 1.jpg, ...``).
Obtain CelebAMask-HQ from its authors (GitHub switchablenorms/CelebAMask-HQ); the identity file
comes with the MUCAC benchmark (GitHub ndb796/CelebA-HQ-Face-Identity-and-Attributes-Recognition-
PyTorch). Nothing is downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlfd.data.records import ImageRecords, check_listed_files, safe_relative_path
from dlfd.errors import DataError
from dlfd.io import read_file_text

IMAGE_FOLDER = "CelebA-HQ-img"
IDENTITY_FILE = "CelebA-HQ-identity.txt"
ATTRIBUTE_FILE = "CelebA-HQ-attribute.txt"
#: The benchmark's name, then the name inside the CelebAMask-HQ release.
ATTRIBUTE_FILES: tuple[str, ...] = (ATTRIBUTE_FILE, "CelebAMask-HQ-attribute-anno.txt")
DATASET_FOLDER = "CelebAMask-HQ"
#: The attributes MUCAC classifies, in the order of the multi-label output.
ATTRIBUTES: tuple[str, ...] = ("Male", "Smiling", "Young")
LABEL_NAMES: tuple[str, ...] = ("male", "smiling", "young")
#: Binary tasks: option value -> (attribute, class names for value 0 and 1).
BINARY_TASKS: dict[str, tuple[str, tuple[str, str]]] = {
    "gender": ("Male", ("female", "male")),
    "smiling": ("Smiling", ("not_smiling", "smiling")),
    "young": ("Young", ("old", "young")),
}
TASKS: tuple[str, ...] = ("multilabel", *BINARY_TASKS)
_VALUES = {"-1": 0, "1": 1}
_HOW_TO_GET = (
    "CelebAMask-HQ is distributed by its authors (GitHub switchablenorms/CelebAMask-HQ), the"
    " identity file by the MUCAC benchmark (GitHub ndb796/CelebA-HQ-Face-Identity-and-Attributes-"
    "Recognition-PyTorch); unzip CelebAMask-HQ, add the identity file and pass that folder"
)


@dataclass(frozen=True)
class MucacData:
    """All annotated CelebA-HQ images: ``records`` for the chosen task and the integer CelebA
    identity of each sample (``identity_number``), sorted by image number."""

    records: ImageRecords
    identity_number: np.ndarray


def locate_mucac(root: Path) -> tuple[Path, Path, Path]:
    """The folder holding ``CelebA-HQ-img/``, the identity file and the attribute file, each
    found in ``root`` or its ``CelebAMask-HQ`` subfolder (the benchmark keeps the text files
    beside the unzipped folder)."""
    if not root.is_dir():
        raise DataError(f"MUCAC folder not found: {root}. {_HOW_TO_GET}")
    places = (root, root / DATASET_FOLDER)
    bases = [p for p in places if (p / IMAGE_FOLDER).is_dir()]
    identity = [p / IDENTITY_FILE for p in places if (p / IDENTITY_FILE).is_file()]
    attribute = [p / name for p in places for name in ATTRIBUTE_FILES if (p / name).is_file()]
    found = {f"{IMAGE_FOLDER}/": bases, IDENTITY_FILE: identity}
    found[" or ".join(ATTRIBUTE_FILES)] = attribute
    missing = [what for what, where in found.items() if not where]
    if missing:
        raise DataError(
            f"MUCAC: no {', no '.join(missing)} in {root} or {root / DATASET_FOLDER}. {_HOW_TO_GET}"
        )
    return bases[0], identity[0], attribute[0]


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines of ``path`` as (line number, whitespace-separated fields)."""
    if not path.is_file():
        raise DataError(f"MUCAC file missing: {path}. {_HOW_TO_GET}")
    text = read_file_text(path, "MUCAC file")
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _image_key(path: Path, line: int, name: str, seen: dict) -> str:
    """The image key of file ``name``, refused outside the image folder or when ``seen``."""
    key = safe_relative_path(f"{IMAGE_FOLDER}/{name}", path.parent, what=f"{path.name}:{line}")
    if not key.startswith(f"{IMAGE_FOLDER}/") or key.count("/") != 1:
        raise DataError(f"{path}:{line}: file name {name!r} is not a file in {IMAGE_FOLDER}/")
    if key in seen:
        raise DataError(f"{path}:{line}: {name} is listed twice")
    return key


def read_identities(path: Path) -> dict[str, int]:
    """``CelebA-HQ-identity.txt`` -> image key -> CelebA identity number."""
    out: dict[str, int] = {}
    for line, fields in _lines(path):
        if len(fields) != 2:
            raise DataError(
                f"{path}:{line}: expected '<file_name> <identity>', got {len(fields)} field(s)"
            )
        try:
            identity = int(fields[1])
        except ValueError:
            raise DataError(f"{path}:{line}: identity {fields[1]!r} is not an integer") from None
        out[_image_key(path, line, fields[0], out)] = identity
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def read_attributes(path: Path) -> dict[str, tuple[int, ...]]:
    """``CelebA-HQ-attribute.txt`` -> image key -> 0/1 values of :data:`ATTRIBUTES`."""
    lines = _lines(path)
    if len(lines) < 2:
        raise DataError(
            f"{path}: expected the image count on line 1 and the attribute names on line 2"
        )
    (count_line, count_fields), (names_line, names) = lines[0], lines[1]
    if len(count_fields) != 1 or not count_fields[0].isdigit():
        raise DataError(f"{path}:{count_line}: expected the number of images, got {count_fields}")
    missing = [a for a in ATTRIBUTES if a not in names]
    if missing:
        raise DataError(
            f"{path}:{names_line}: attribute name(s) {', '.join(missing)} not found "
            f"(line {names_line} must list the 40 attribute names)"
        )
    columns = [names.index(a) for a in ATTRIBUTES]
    out: dict[str, tuple[int, ...]] = {}
    for line, fields in lines[2:]:
        if len(fields) != len(names) + 1:
            raise DataError(
                f"{path}:{line}: expected a file name and {len(names)} values, "
                f"got {len(fields)} field(s)"
            )
        unknown = [v for v in fields[1:] if v not in _VALUES]
        if unknown:
            raise DataError(f"{path}:{line}: value {unknown[0]!r} is not -1 or 1")
        out[_image_key(path, line, fields[0], out)] = tuple(_VALUES[fields[1 + c]] for c in columns)
    if len(out) != int(count_fields[0]):
        raise DataError(
            f"{path}:{count_line}: announces {count_fields[0]} images but lists {len(out)}"
        )
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def _order(key: str) -> tuple[int, int, str]:
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return (0, int(stem), key) if stem.isdigit() else (1, 0, key)


def _not_in(keys: set[str], path: Path) -> str:
    shown = ", ".join(k.rsplit("/", 1)[-1] for k in sorted(keys, key=_order)[:3])
    return f"{len(keys)} image(s) missing from {path}: {shown}"


def mucac_records(
    root: str | Path, *, task: str = "multilabel", check_files: bool = True
) -> MucacData:
    """Read the CelebA-HQ annotations for ``task`` (``multilabel`` or a key of
    :data:`BINARY_TASKS`); identities are the CelebA identity numbers as text."""
    if task not in TASKS:
        raise DataError(f"unknown MUCAC task {task!r}; expected one of {TASKS}")
    base, identity_file, attribute_file = locate_mucac(Path(root))
    identities = read_identities(identity_file)
    attributes = read_attributes(attribute_file)
    if set(identities) - set(attributes):
        raise DataError(_not_in(set(identities) - set(attributes), attribute_file))
    if set(attributes) - set(identities):
        raise DataError(_not_in(set(attributes) - set(identities), identity_file))
    paths = sorted(identities, key=_order)
    if check_files:
        check_listed_files(base, paths, "MUCAC")
    values = np.asarray([attributes[p] for p in paths], np.int64)
    if task == "multilabel":
        labels, class_names = values.astype(np.float32), LABEL_NAMES
    else:
        attribute, class_names = BINARY_TASKS[task]
        labels = values[:, ATTRIBUTES.index(attribute)]
    numbers = np.asarray([identities[p] for p in paths], np.int64)
    identities = tuple(str(n) for n in numbers.tolist())
    kind = "multilabel" if task == "multilabel" else "multiclass"
    records = ImageRecords(base, tuple(paths), labels, identities, class_names, kind, "mucac")
    return MucacData(records, numbers)
