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
]
