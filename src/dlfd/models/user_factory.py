"""Classifiers from the user's own code, so any ``nn.Module`` can become a dlfd checkpoint.

A factory is named ``FILE.py:FUNCTION`` or ``package.module:function`` and called as
``factory(num_classes)``; ``timm:NAME`` and ``torchvision:NAME`` build a model of those libraries
(optional installs) with ``num_classes`` outputs. A checkpoint records the factory as its
``arch`` (``factory:/abs/path.py:function``) and the sha256 of the factory's source file.

Rebuilding such a checkpoint runs the user's code, so it is done only for code this machine's
user vouched for: ``dlfd import`` adds the source file's sha256 to a trust list
(``$XDG_CONFIG_HOME/dlfd/trusted-factories.json``, default ``~/.config/dlfd``), and loading
refuses a factory whose file is not on it or has changed since — a checkpoint received from
someone else cannot make dlfd run code it names.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

from torch import nn

from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import atomic_write_text, read_file_bytes, sha256_bytes, sha256_file

FACTORY_PREFIX = "factory:"
LIBRARIES = {"timm": "timm", "torchvision": "torchvision"}
TRUST_FILE = "trusted-factories.json"
MAX_SOURCE_BYTES = 16 << 20


def is_user_arch(arch: str) -> bool:
    """Whether a checkpoint's ``arch`` names user code or a library model (not the registry)."""
    return arch.startswith(FACTORY_PREFIX) or arch.split(":", 1)[0] in LIBRARIES


def _split(spec: str) -> tuple[str, str]:
    where, sep, function = spec.rpartition(":")
    if not sep or not where or not function.isidentifier():
        raise ConfigError(
            f"factory {spec!r} must be FILE.py:FUNCTION, package.module:function, "
            "timm:NAME or torchvision:NAME"
        )
    return where, function


def factory_source(spec: str) -> Path:
    """The Python file that defines the factory ``spec`` (its code is what gets trusted)."""
    where, _ = _split(spec)
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise ConfigError(f"factory file {where} does not exist")
        return path.resolve()
    origin = _module_file(where)
    if origin is None or not Path(origin).is_file():
        raise ConfigError(f"cannot find module {where!r} of factory {spec!r}")
    return Path(origin).resolve()


def _module_file(name: str) -> str | None:
    """The file of module ``name``, found without importing it or its packages (their code
    must not run before the factory is known to be trusted)."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    found = None
    search: list[str] | None = None
    for k, part in enumerate(parts):
        try:
            if k == 0:
                found = sys.modules[part].__spec__ if part in sys.modules else None
                found = found or importlib.machinery.PathFinder.find_spec(part)
            else:
                found = importlib.machinery.PathFinder.find_spec(part, search)
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        locations = found.submodule_search_locations
        search = None if locations is None else list(locations)
        if k < len(parts) - 1 and search is None:
            return None  # a module, not a package: it has no submodules
    return None if found is None else found.origin


def factory_sha256(arch: str) -> str | None:
    """The sha256 of the file that defines user factory ``arch`` (None for library models)."""
    if not arch.startswith(FACTORY_PREFIX):
        return None
    return sha256_file(factory_source(arch.removeprefix(FACTORY_PREFIX)))


def canonical_arch(spec: str) -> str:
    """The ``arch`` a checkpoint records: library names as given, files as absolute paths."""
    library = spec.split(":", 1)[0]
    if library in LIBRARIES:
        _split(spec)
        return spec
    where, function = _split(spec)
    if where.endswith(".py"):
        where = str(factory_source(spec))
    return f"{FACTORY_PREFIX}{where}:{function}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _load_function(arch: str, source_sha256: str | None = None) -> Callable[..., nn.Module]:
    """The factory function ``arch`` names. A file is read once and run from the bytes read,
    refused if they do not have ``source_sha256`` (when given): what runs is what was checked."""
    where, function = _split(arch.removeprefix(FACTORY_PREFIX))
    if where.endswith(".py"):
        source = read_file_bytes(where, "factory file", limit=MAX_SOURCE_BYTES, error=ConfigError)
        if source_sha256 is not None and sha256_bytes(source) != source_sha256:
            raise CheckpointError(f"the factory file {where} changed while it was being loaded")
        name = f"dlfd_user_factory_{sha256_bytes(where.encode())[:12]}"
        module = types.ModuleType(name)
        module.__file__ = where
        sys.modules[name] = module  # dataclasses and pickling look their module up here
        try:
            exec(compile(source, where, "exec"), module.__dict__)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"factory file {where} failed to import: {_one_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise ConfigError(f"module {where} failed to import: {_one_line(exc)}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"{where} has no function {function!r}")
    return factory


def _library_model(arch: str, num_classes: int) -> nn.Module:
    library, name = arch.split(":", 1)
    try:
        module = importlib.import_module(LIBRARIES[library])
    except ImportError:
        raise ConfigError(
            f"model {arch!r} needs {library}, which is not installed: pip install {library}"
        ) from None
    try:
        if library == "timm":
            return module.create_model(name, pretrained=False, num_classes=num_classes)
        return module.models.get_model(name, weights=None, num_classes=num_classes)
    except Exception as exc:
        raise ConfigError(f"{library} cannot build {name!r}: {_one_line(exc)}") from None


def build_user_model(arch: str, num_classes: int, *, source_sha256: str | None = None) -> nn.Module:
    """Call the factory ``arch`` names with ``num_classes`` (its file must still have the
    content ``source_sha256``); whatever it raises becomes a one-line :class:`ConfigError`."""
    if arch.split(":", 1)[0] in LIBRARIES:
        model = _library_model(arch, num_classes)
    else:
        factory = _load_function(arch, source_sha256)
        try:
            by_name = "num_classes" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            by_name = False
        try:
            model = factory(num_classes=num_classes) if by_name else factory(num_classes)
        except Exception as exc:
            raise ConfigError(
                f"factory {arch!r} failed when called with num_classes={num_classes}: "
                f"{_one_line(exc)}"
            ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {arch!r} returned {type(model).__name__}, not an nn.Module")
    model.arch = arch
    return model


def trust_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "dlfd" / TRUST_FILE


def _trusted() -> dict[str, str]:
    path = trust_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the factory trust list {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"the factory trust list {path} is not a JSON object of strings")
    return data


def trust_factory(arch: str, sha256: str | None = None) -> str | None:
    """Record the source file of ``arch`` as trusted; returns its sha256 (None for libraries).
    ``sha256``: the content the caller checked (and ran); a file that changed since is refused."""
    if not arch.startswith(FACTORY_PREFIX):
        return None
    source = factory_source(arch.removeprefix(FACTORY_PREFIX))
    digest = sha256_file(source)
    if sha256 is not None and digest != sha256:
        raise ConfigError(f"the factory file {source} changed during the import; run it again")
    trusted = _trusted()
    if trusted.get(digest) != str(source):
        trusted[digest] = str(source)
        path = trust_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(trusted, indent=1, sort_keys=True) + "\n")
    return digest


def check_trusted(arch: str, recorded_sha256: str | None, where: str) -> None:
    """Refuse to run the factory of a checkpoint unless its file is unchanged and trusted."""
    if not arch.startswith(FACTORY_PREFIX):
        return
    spec = arch.removeprefix(FACTORY_PREFIX)
    try:
        source = factory_source(spec)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if recorded_sha256 is None:
        raise CheckpointError(
            f"{where} does not record the sha256 of its factory file {source}; "
            "import the weights again with `dlfd import`"
        )
    digest = sha256_file(source)
    if digest != recorded_sha256:
        raise CheckpointError(
            f"{where}: the factory file {source} changed since the checkpoint was imported "
            "(sha256 differs); import the weights again with `dlfd import`"
        )
    if digest not in _trusted():
        raise CheckpointError(
            f"{where} is built by code in {source}, which this machine has not imported; "
            f"dlfd runs a model factory only after `dlfd import` registered it ({trust_file()})"
        )
