"""Claiming output files before any work: never over an input, never over a stranger's file,
one writer at a time.

Every command that writes files claims its outputs with :func:`claim_outputs`:

- an output that is one of the command's inputs (through any link) is refused, even with
  ``--force``;
- an existing output dlfd did not write (:func:`written_by_dlfd`) is replaced only with
  ``--force``;
- an exclusive lock beside each output (``.NAME.lock``, released by the kernel even on
  ``kill -9``) is held until the command finishes, so a second command writing the same
  output is refused at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from dlfd.errors import ConfigError, DlfdError
from dlfd.io import read_json_file

#: Marks an HTML page dlfd wrote (in its ``<head>``).
HTML_MARK = "<meta name='generator' content='dlfd'>"
#: First line of a Markdown page dlfd wrote (invisible once rendered).
MD_MARK = "<!-- written by dlfd -->"
#: ``Software`` text chunk of a PNG figure dlfd wrote.
PNG_SOFTWARE = "dlfd"

_LEGACY_PAGE_TITLES = ("Unlearning benchmark:", "Unlearning audit:")
_SNIFF_BYTES = 1 << 16
_MAX_HEADER = 100 << 20


def _json_marked(value: object) -> bool:
    """A dlfd JSON document: ``dlfd-…`` format or ``dlfd_version``, or bench records."""
    if isinstance(value, dict):
        fmt = value.get("format")
        return (isinstance(fmt, str) and fmt.startswith("dlfd-")) or "dlfd_version" in value
    if isinstance(value, list) and value:
        return all(isinstance(r, dict) and {"method", "seed", "metrics"} <= set(r) for r in value)
    return False


def _json_file_marked(path: Path) -> bool:
    try:
        return _json_marked(read_json_file(path, "file"))
    except DlfdError:
        return False


def _safetensors_marked(path: Path) -> bool:
    """A safetensors file whose header metadata or JSON sidecar carries a dlfd format."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if 0 < size <= _MAX_HEADER:
                header = json.loads(handle.read(size).decode("utf-8"))
                fmt = (header.get("__metadata__") or {}).get("format", "")
                if isinstance(fmt, str) and fmt.startswith("dlfd-"):
                    return True
    except (OSError, struct.error, UnicodeDecodeError, ValueError, AttributeError):
        pass
    return _json_file_marked(path.with_suffix(".json"))


def _head_text(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _png_marked(path: Path) -> bool:
    """A PNG whose ``Software`` chunk is dlfd's (or matplotlib's, in a ``figures`` folder: the
    figures of earlier dlfd versions)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            software = str(getattr(image, "text", {}).get("Software", ""))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    legacy = path.parent.name == "figures" and software.startswith("Matplotlib")
    return software.startswith(PNG_SOFTWARE) or legacy


def written_by_dlfd(path: str | Path) -> bool:
    """Whether the regular file ``path`` carries a dlfd marker (JSON, safetensors, HTML,
    Markdown, PNG)."""
    path = Path(path)
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_file_marked(path)
    if suffix == ".safetensors":
        return _safetensors_marked(path)
    if suffix in (".html", ".htm"):
        head = _head_text(path)
        return HTML_MARK in head or any(f"<title>{t}" in head for t in _LEGACY_PAGE_TITLES)
    if suffix == ".md":
        first = _head_text(path).split("\n", 1)[0]
        legacy = any(first.startswith(f"# {t}") for t in _LEGACY_PAGE_TITLES)
        return first.startswith(MD_MARK) or legacy
    if suffix == ".png":
        return _png_marked(path)
    return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_output(
    path: Path, what: str, *, inputs: Iterable[Path] = (), force: bool = False
) -> None:
    """Refuse an output that cannot or must not be written; create its folder."""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    if os.path.lexists(path):
        for source in inputs:
            if _same_file(path, source):
                raise ConfigError(
                    f"{what} {path} is also an input of this command ({source}); "
                    "choose another output"
                )
        if not path.is_file() and not path.is_symlink():
            raise ConfigError(f"{what} {path} exists and is not a regular file")
        if not force and not written_by_dlfd(path):
            raise ConfigError(
                f"{what} {path} exists and was not written by dlfd; "
                "use --force to replace it or choose another output"
            )
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {path}: {folder} is a file, not a folder") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"{what} {path}: cannot create its folder ({reason})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {folder} is not writable")


def _missing_folders(folder: Path) -> list[Path]:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


#: Longest file name the lock name is derived from literally (file systems allow 255 bytes).
_MAX_LOCK_STEM = 200


def lock_path(path: Path) -> Path:
    """``.NAME.lock`` beside ``path`` (a digest of a name too long for the suffix)."""
    name = path.name
    if len(name.encode("utf-8", "surrogateescape")) > _MAX_LOCK_STEM:
        name = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return path.with_name(f".{name}.lock")


@contextlib.contextmanager
def output_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock of output ``path``; refuse at once when another process holds it.

    The lock file is removed on release (while still locked); a process that locked a file
    removed meanwhile sees it is no longer at the lock path and treats the output as taken.
    """
    try:
        import fcntl
    except ModuleNotFoundError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    where = lock_path(path)
    taken = ConfigError(
        f"{what} {path} is being written by another dlfd command (lock {where}); "
        "wait for it to finish or choose another output"
    )
    try:
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"{what} {path}: cannot create its lock file {where} ({exc.strerror or exc})"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise taken from None
        try:
            if not os.path.samestat(os.stat(where), os.fstat(fd)):
                raise taken
        except FileNotFoundError:
            raise taken from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where)
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim_outputs(
    outputs: Sequence[Path], what: str, *, inputs: Iterable[Path] = (), force: bool = False
) -> Iterator[None]:
    """Check every output with :func:`check_output` and hold their locks for the block (the
    checks are repeated under the locks, so two racing commands cannot both pass)."""
    inputs, outputs = [Path(p) for p in inputs], [Path(p) for p in outputs]
    created = sorted(
        {f for path in outputs for f in _missing_folders(path.parent)},
        key=lambda f: len(f.parts),
        reverse=True,
    )
    try:
        for path in outputs:  # clear errors (and the folders) before any lock file is made
            check_output(path, what, inputs=inputs, force=force)
        with contextlib.ExitStack() as stack:
            for path in outputs:
                stack.enter_context(output_lock(path, what))
            for path in outputs:  # again under the locks: another writer may have finished
                check_output(path, what, inputs=inputs, force=force)
            yield
    except BaseException:
        for folder in created:  # a failed command leaves no empty folder of its own behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def refuse_listed_outputs(
    outputs: Iterable[Path], what: str, root: Path, is_listed: Callable[[str], bool]
) -> None:
    """Refuse an output that is one of a dataset's own files under ``root``, even with
    ``--force``."""
    real_root = Path(os.path.realpath(root))
    for path in outputs:
        real = Path(os.path.realpath(path))
        if real.is_relative_to(real_root) and is_listed(real.relative_to(real_root).as_posix()):
            raise ConfigError(
                f"{what} {path} is a file of the dataset under {root}; choose another output"
            )
