"""Resume state of an interrupted training run: model + optimizer after the last full epoch.

Stored as ``NAME.resume.safetensors`` (tensors of the model and of the optimizer state) and
``NAME.resume.json`` (epoch, history, non-tensor optimizer fields, config hash, weights hash),
both written atomically, the JSON last. Nothing is unpickled on load.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from dlfd.checkpoint import load_state_into
from dlfd.errors import CheckpointError, DlfdError
from dlfd.io import atomic_write_bytes, atomic_write_json, read_file_bytes, sha256_bytes

_FORMAT = "dlfd-resume/1"
_MAX_META_BYTES = 256 << 20
_MAX_TENSOR_BYTES = 64 << 30


@dataclass(frozen=True)
class ResumePaths:
    tensors: Path
    meta: Path

    @classmethod
    def for_checkpoint(cls, out: Path) -> ResumePaths:
        return cls(
            out.with_name(out.stem + ".resume.safetensors"),
            out.with_name(out.stem + ".resume.json"),
        )

    def remove(self) -> None:
        for path in (self.meta, self.tensors):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, slots in state["state"].items():
        plain_slots = {}
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain_slots[key] = value
        plain["state"][str(pid)] = plain_slots
    return tensors, plain


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {
        int(pid): dict(slots) for pid, slots in plain["state"].items()
    }
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_resume_state(
    paths: ResumePaths,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    config_sha256: str,
    history: list[dict],
) -> None:
    tensors = {
        f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
    }
    optim_tensors, optim_plain = _split_optimizer_state(optimizer.state_dict())
    data = save_safetensors({**tensors, **optim_tensors}, metadata={"format": _FORMAT})
    atomic_write_bytes(paths.tensors, data)
    atomic_write_json(
        paths.meta,
        {
            "format": _FORMAT,
            "epoch": epoch,
            "config_sha256": config_sha256,
            "history": history,
            "optimizer": optim_plain,
            "sha256": sha256_bytes(data),
        },
    )


def load_resume_state(
    paths: ResumePaths, model: nn.Module, optimizer: torch.optim.Optimizer, *, config_sha256: str
) -> tuple[int, list[dict]] | None:
    """Restore model and optimizer: (epochs done, history), or None (nothing usable: a state of
    another configuration or a torn pair of files is not trusted)."""
    if not paths.meta.is_file() or not paths.tensors.is_file():
        return None
    try:
        meta = json.loads(read_file_bytes(paths.meta, "resume state", limit=_MAX_META_BYTES))
        data = read_file_bytes(paths.tensors, "resume state", limit=_MAX_TENSOR_BYTES)
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _FORMAT
            or meta.get("config_sha256") != config_sha256
            or meta.get("sha256") != sha256_bytes(data)
        ):
            return None
        epoch, history = int(meta["epoch"]), list(meta.get("history", []))
        tensors = load_safetensors(data)
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        optim_state = _join_optimizer_state(
            {k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"]
        )
    except (DlfdError, ValueError, KeyError, TypeError, RecursionError, SafetensorError):
        return None
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        load_state_into(model, model_state, str(paths.tensors))
        optimizer.load_state_dict(optim_state)
    except (ValueError, KeyError, TypeError, RuntimeError, CheckpointError):
        model.load_state_dict(initial)  # start over from the untouched initial weights
        return None
    return epoch, history
