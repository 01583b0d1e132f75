"""dlfd: machine unlearning for image classifiers (DLFD, baselines, membership-inference audit)."""

from __future__ import annotations

__version__ = "0.1.0"

from dlfd.errors import CheckpointError, ConfigError, DataError, DlfdError, SplitError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DlfdError",
    "SplitError",
    "__version__",
    "audit_models",
    "evaluate",
    "input_bounds",
    "unlearn",
]

#: The Python API, imported on first use (PEP 562) so that ``import dlfd`` stays light.
_API = {
    "unlearn": "dlfd.methods",
    "evaluate": "dlfd.api",
    "audit_models": "dlfd.api",
    "input_bounds": "dlfd.api",
}


def __getattr__(name: str):
    """``dlfd.unlearn`` (:func:`dlfd.methods.unlearn`), ``dlfd.evaluate``,
    ``dlfd.audit_models`` and ``dlfd.input_bounds`` (:mod:`dlfd.api`)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'dlfd' has no attribute {name!r}")
