"""Explicit devices, seeds and generators.

Nothing in dlfd reads a global device or seed: callers pass them, and random draws use a
:class:`torch.Generator` or :class:`numpy.random.Generator` built here from an explicit seed.
"""

from __future__ import annotations

import platform
import random

import numpy as np
import torch

from dlfd.errors import ConfigError

#: Largest seed a user may give (seeds are recorded in checkpoints and fed to numpy, whose
#: generators take 32-bit seeds).
SEED_MAX = 2**32 - 1


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return a usable torch device; ``None`` or ``"auto"`` picks CUDA when present, else CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or auto")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} GPU(s) here")
    return resolved


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed derived from several parts (e.g. a run seed and an epoch number)."""
    import hashlib

    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def software_versions() -> dict[str, str]:
    """Versions of dlfd and the libraries that determine its numbers."""
    import importlib.metadata

    versions = {"python": platform.python_version()}
    packages = "dlfd torch numpy scikit-learn scipy safetensors pillow matplotlib"
    for package in packages.split():
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def hardware_info() -> dict[str, str | int]:
    """A short description of the machine, recorded next to results."""
    info: dict[str, str | int] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info
