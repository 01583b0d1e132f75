"""The JSON records of runs (evaluation, benchmark unit, audit certificate): each says when, on
which hardware and with which software it was made, so a number can be traced to its source."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlfd.checkpoint import CheckpointMeta
from dlfd.data.problem import UnlearningProblem
from dlfd.runtime import hardware_info, software_versions


def run_record(format: str, **fields: Any) -> dict[str, Any]:
    """``fields`` under ``format``, stamped with ``created`` (UTC), hardware and versions."""
    return {
        "format": format,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "hardware": hardware_info(),
        "versions": software_versions(),
    }


def data_hashes(problem: UnlearningProblem) -> dict[str, str]:
    """What a result was computed on: the forget set's and the data's fingerprints."""
    return {"forget_sha256": problem.forget_sha256, "data_sha256": problem.records.fingerprint}


def checkpoint_record(path: Path, meta: CheckpointMeta) -> dict[str, Any]:
    """The provenance of a checkpoint in a record: where it is, what it is, what made it."""
    keys = ("role", "arch", "scenario", "split_seed", "train_seed", "weights_sha256")
    keys += ("forget_sha256", "data_sha256", "config_sha256")
    return {"name": path.stem, "path": str(path), **{k: getattr(meta, k) for k in keys}}
