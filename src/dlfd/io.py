"""Atomic file writes, bounded reads of outside files, and hashing.

A write goes to a temporary file in the destination folder, is flushed, then renamed over the
destination: a crash leaves the old file or the new one, never a half-written one. A read of a
file a user names goes through :func:`read_file_bytes`: only a regular file is opened (a FIFO,
device or folder is refused before it can hang or flood memory), at most ``limit`` bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dlfd.errors import DataError, DlfdError

_CHUNK = 1 << 20
#: Bytes of the destination's name kept in its temporary file's name (names are <= 255 bytes).
_MAX_TMP_STEM = 200

#: Upper bound of a text input a user names (forget list, manifest, recipe, JSON records).
MAX_TEXT_BYTES = 256 << 20


def _umask() -> int:
    # there is no getter: set and restore it
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` only when the block exits cleanly."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name.encode("utf-8", "surrogateescape")[:_MAX_TMP_STEM]
    stem_text = stem.decode("utf-8", "ignore")  # a long name must leave room for the suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem_text}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` for the block (``wait=False``: raise
    :class:`BlockingIOError` at once when it is held; no lock where ``fcntl`` is missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ModuleNotFoundError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_file_bytes(
    path: str | Path, what: str, *, limit: int = MAX_TEXT_BYTES, error: type[DlfdError] = DataError
) -> bytes:
    """The content of the regular file ``path`` (``what`` names it in messages); anything else
    raises ``error``. It is opened without blocking and checked on its open descriptor, so a
    FIFO swapped in after a check cannot hang the read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except ValueError:  # a NUL byte in the name
        raise error(f"{what} name {str(path)!r} is not a valid file name") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise error(f"{what} {path} is {kind}")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise error(f"{what} {path} is too large ({info.st_size} bytes; at most {limit})")
        chunks, total = [], 0
        try:
            while chunk := handle.read(max(_CHUNK, min(info.st_size, limit) + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:  # the file grew since it was looked at
                    raise error(f"{what} {path} is too large (over {limit} bytes)")
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return b"".join(chunks)


def read_file_text(
    path: str | Path, what: str, *, limit: int = MAX_TEXT_BYTES, error: type[DlfdError] = DataError
) -> str:
    """:func:`read_file_bytes` decoded as UTF-8 (a byte-order mark is dropped)."""
    data = read_file_bytes(path, what, limit=limit, error=error)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text ({exc.reason})") from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(text: str, what: str, *, error: type[DlfdError] = DataError) -> Any:
    """Strict JSON (no NaN/Infinity); malformed or too deeply nested text raises ``error``."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None


def read_json_file(
    path: str | Path, what: str, *, limit: int = MAX_TEXT_BYTES, error: type[DlfdError] = DataError
) -> Any:
    """A JSON file read with :func:`read_file_text` and parsed with :func:`parse_json`."""
    text = read_file_text(path, what, limit=limit, error=error)
    return parse_json(text, f"{what} {path}", error=error)
