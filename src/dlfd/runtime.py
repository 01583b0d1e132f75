"""Explicit devices, seeds and generators.

Nothing in dlfd reads a global device or seed: callers pass them, and random draws use a
:class:`torch.Generator` or :class:`numpy.random.Generator` built here from an explicit seed.
"""

from __future__ import annotations

import contextlib
import platform
import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``amp`` runs forward passes under bfloat16 autocast (weights,
    optimiser and saved checkpoints stay float32; no loss scaling is needed with bfloat16),
    ``channels_last`` stores convolution weights NHWC (what GPU convolution kernels prefer).
    Both are speed options for CUDA; they also run on a CPU (rarely faster there). The default
    is plain float32, and a run's records mention precision only when it is not the default."""

    amp: bool = False
    channels_last: bool = False

    @property
    def is_default(self) -> bool:
        return not (self.amp or self.channels_last)

    def to_dict(self) -> dict[str, bool]:
        return {"amp": self.amp, "channels_last": self.channels_last}

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        """The autocast context of a run on ``device`` (no context at all when off, so an
        enclosing one still applies)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in this precision's memory layout (in place)."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model


def contiguous(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` back in the default memory layout (before its weights are saved or hashed)."""
    return model.to(memory_format=torch.contiguous_format)
