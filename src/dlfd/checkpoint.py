"""Checkpoints: safetensors weights plus a JSON sidecar; loading never unpickles.

``model.safetensors`` holds the tensors; ``model.json`` beside it records what they are:
architecture, classes, input size and normalisation, scenario, split seed, role, the sha256 of
the weights file and of the forget list, the training recipe and dlfd's version. Both files are
written atomically, the sidecar first: the weights file appears only once its sidecar is in
place, so a run killed in between leaves no ``NAME.safetensors`` to be mistaken for a finished
checkpoint. On load the weights' hash is checked against the sidecar, so a torn pair (an
overwrite killed between the two renames) or a tampered one is refused.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from dlfd import __version__
from dlfd.data.transforms import InputSpec
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import atomic_write_bytes, atomic_write_text, parse_json, read_file_bytes, sha256_bytes

SIDECAR_FORMAT = "dlfd-checkpoint/1"
WEIGHTS_SUFFIX = ".safetensors"
_MAX_SIDECAR_BYTES = 4 << 20
_MAX_WEIGHTS_BYTES = 64 << 30
_MAX_CLASSES = 2**31 - 1


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint is: enough to rebuild the model and to audit where it came from."""

    arch: str
    num_classes: int
    task: str
    input_spec: InputSpec
    role: str = "model"
    scenario: str | None = None
    split_seed: int | None = None
    train_seed: int | None = None
    forget_sha256: str | None = None
    forget_keys: tuple[str, ...] | None = None
    data_sha256: str | None = None
    data_root: str | None = None
    scenario_options: dict[str, str] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    config_sha256: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    dlfd_version: str = __version__
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the sidecar."""
        return {
            "format": SIDECAR_FORMAT,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "task": self.task,
            "input": self.input_spec.to_dict(),
            "role": self.role,
            "scenario": self.scenario,
            "split_seed": self.split_seed,
            "train_seed": self.train_seed,
            "forget_sha256": self.forget_sha256,
            "forget_keys": None if self.forget_keys is None else list(self.forget_keys),
            "data_sha256": self.data_sha256,
            "data_root": self.data_root,
            "scenario_options": self.scenario_options,
            "model_kwargs": self.model_kwargs,
            "config_sha256": self.config_sha256,
            "recipe": self.recipe,
            "extra": self.extra,
            "weights_sha256": self.weights_sha256,
            "dlfd_version": self.dlfd_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "sidecar") -> CheckpointMeta:
        """Validate and parse a sidecar dict; any problem raises :class:`CheckpointError`."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: expected a JSON object")
        if data.get("format") != SIDECAR_FORMAT:
            raise CheckpointError(
                f"{source}: not a dlfd checkpoint sidecar "
                f"(format {data.get('format')!r}, expected {SIDECAR_FORMAT!r})"
            )

        def need(key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
            value = data.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise CheckpointError(f"{source}: field {key!r} missing or of the wrong type")
            return value

        def seed(key: str) -> int | None:
            value = need(key, int, optional=True)
            if value is not None and not 0 <= value < 2**63:
                raise CheckpointError(f"{source}: field {key!r} must be in [0, 2**63), got {value}")
            return value

        num_classes = need("num_classes", int)
        if not 1 <= num_classes <= _MAX_CLASSES:
            raise CheckpointError(
                f"{source}: num_classes must be in [1, {_MAX_CLASSES}], got {num_classes}"
            )
        task = need("task", str)
        if task not in ("multiclass", "multilabel"):
            raise CheckpointError(f"{source}: unknown task {task!r}")
        weights_sha = need("weights_sha256", str)
        if len(weights_sha) != 64:
            raise CheckpointError(f"{source}: weights_sha256 is not a sha256 hex digest")
        forget_keys = need("forget_keys", list, optional=True)
        if forget_keys is not None and not all(isinstance(k, str) for k in forget_keys):
            raise CheckpointError(f"{source}: field 'forget_keys' must be a list of strings")
        options = need("scenario_options", dict, optional=True) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
            raise CheckpointError(f"{source}: field 'scenario_options' must map strings to strings")
        model_kwargs = need("model_kwargs", dict, optional=True) or {}
        if not all(k.isidentifier() for k in model_kwargs):
            raise CheckpointError(f"{source}: field 'model_kwargs' has keys that are not names")
        taken = sorted({"num_classes", "in_channels"} & set(model_kwargs))
        if taken:
            raise CheckpointError(f"{source}: field 'model_kwargs' may not set {taken}")
        try:
            spec = InputSpec.from_dict(need("input", dict))
        except ConfigError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        return cls(
            arch=need("arch", str),
            num_classes=num_classes,
            task=task,
            input_spec=spec,
            role=need("role", str),
            scenario=need("scenario", str, optional=True),
            split_seed=seed("split_seed"),
            train_seed=seed("train_seed"),
            forget_sha256=need("forget_sha256", str, optional=True),
            forget_keys=None if forget_keys is None else tuple(forget_keys),
            data_sha256=need("data_sha256", str, optional=True),
            data_root=need("data_root", str, optional=True),
            scenario_options=options,
            model_kwargs=model_kwargs,
            config_sha256=need("config_sha256", str, optional=True),
            recipe=need("recipe", dict, optional=True) or {},
            extra=need("extra", dict, optional=True) or {},
            weights_sha256=weights_sha,
            dlfd_version=need("dlfd_version", str, optional=True) or "unknown",
            created=need("created", str, optional=True) or "",
        )


def sidecar_path(weights_path: str | Path) -> Path:
    """``model.safetensors`` -> ``model.json``."""
    return Path(weights_path).with_suffix(".json")


def check_weights_path(path: str | Path) -> Path:
    """Refuse output names that would not be recognised as checkpoints."""
    path = Path(path)
    if path.suffix != WEIGHTS_SUFFIX:
        raise ConfigError(f"checkpoint path {str(path)!r} must end with {WEIGHTS_SUFFIX}")
    return path


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict safe for safetensors: detached, contiguous, on CPU, no shared storage."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def weights_bytes(model: nn.Module, arch: str) -> bytes:
    """The safetensors file content :func:`save_checkpoint` writes for ``model``; non-finite
    weights are refused. The same weights always give the same bytes (and sha256): the header
    holds one metadata entry, since safetensors writes several in a random order."""
    tensors = _state_tensors(model)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({', '.join(bad[:3])})")
    return save_safetensors(tensors, metadata={"format": f"{SIDECAR_FORMAT} arch={arch}"})


def weights_sha256(model: nn.Module, arch: str) -> str:
    """The ``weights_sha256`` a checkpoint of ``model`` would record (without writing it)."""
    return sha256_bytes(weights_bytes(model, arch))


def save_checkpoint(model: nn.Module, path: str | Path, meta: CheckpointMeta) -> CheckpointMeta:
    """Write sidecar then weights, each atomically; returns the meta with hash and time filled in.

    Everything is built before anything is written, so a metadata problem writes nothing; the
    weights go last, so ``path`` exists only with its sidecar beside it.
    """
    path = check_weights_path(path)
    data = weights_bytes(model, meta.arch)
    final = CheckpointMeta(
        **{
            **meta.__dict__,
            "weights_sha256": sha256_bytes(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    try:
        sidecar_text = json.dumps(final.to_dict(), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not valid JSON: {exc}") from None
    atomic_write_text(sidecar_path(path), sidecar_text)
    atomic_write_bytes(path, data)
    return final


def _read_bytes(path: Path, missing: str, what: str, limit: int) -> bytes:
    """The content of file ``path``; missing (``missing`` is the message), not a regular file,
    unreadable or over ``limit`` bytes raises :class:`CheckpointError`."""
    if not os.path.lexists(path):
        raise CheckpointError(missing)
    return read_file_bytes(path, what, limit=limit, error=CheckpointError)


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read and validate the sidecar of checkpoint ``path``."""
    side = sidecar_path(path)
    raw = _read_bytes(
        side,
        f"checkpoint sidecar not found: {side} (a dlfd checkpoint is "
        f"NAME.safetensors plus NAME.json)",
        "checkpoint sidecar",
        limit=_MAX_SIDECAR_BYTES,
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"checkpoint sidecar {side} is not UTF-8 text: {exc}") from None
    data = parse_json(text, f"checkpoint sidecar {side}", error=CheckpointError)
    return CheckpointMeta.from_dict(data, source=str(side))


def read_weights(path: str | Path, meta: CheckpointMeta) -> dict[str, torch.Tensor]:
    """Read the safetensors file, verifying its sha256 against the sidecar first."""
    path = Path(path)
    data = _read_bytes(path, f"checkpoint not found: {path}", "checkpoint", _MAX_WEIGHTS_BYTES)
    if sha256_bytes(data) != meta.weights_sha256:
        raise CheckpointError(
            f"checkpoint {path} does not match its sidecar (sha256 differs): "
            f"the file was modified or partially written"
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a valid safetensors file: {exc}") from None


def check_state_fits(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse ``state`` unless it has exactly ``model``'s keys, shapes and kinds of dtype, and
    finite floating-point values; the message names the first difference."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    shapes = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise CheckpointError(
            f"{source} does not fit this model: {k} has shape "
            f"{tuple(state[k].shape)}, model expects {tuple(own[k].shape)}"
        )
    for k, value in state.items():
        if value.is_complex() or value.is_floating_point() != own[k].is_floating_point():
            raise CheckpointError(
                f"{source} does not fit this model: {k} has dtype {value.dtype}, "
                f"model expects {own[k].dtype}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{source} holds non-finite values in {k}")


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly (see :func:`check_state_fits`)."""
    check_state_fits(model, state, source)
    model.load_state_dict(state, strict=True)


def _build_model(meta: CheckpointMeta, path: str | Path) -> nn.Module:
    from dlfd.models import create_model

    try:
        return create_model(
            meta.arch, meta.num_classes, in_channels=meta.input_spec.channels, **meta.model_kwargs
        )
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    expect_num_classes: int | None = None,
    expect_arch: str | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild a registered model from its checkpoint (in eval mode, on ``device``).

    The model is first built without memory (on the ``meta`` device) and checked against the
    weights file, so a sidecar claiming a huge model allocates nothing before it is refused.
    """
    meta = read_meta(path)
    if expect_arch is not None and meta.arch != expect_arch:
        raise CheckpointError(f"checkpoint {path} is a {meta.arch!r}, expected {expect_arch!r}")
    if expect_num_classes is not None and meta.num_classes != expect_num_classes:
        raise CheckpointError(
            f"checkpoint {path} has {meta.num_classes} classes, the dataset "
            f"has {expect_num_classes}"
        )
    with torch.device("meta"):
        shape_only = _build_model(meta, path)
    state = read_weights(path, meta)
    check_state_fits(shape_only, state, str(path))
    model = _build_model(meta, path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, path: str | Path) -> CheckpointMeta:
    """Load a checkpoint's weights into a user-built ``model`` (any architecture)."""
    meta = read_meta(path)
    load_state_into(model, read_weights(path, meta), str(path))
    return meta


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: store non-finite floats as null."""
    return value if math.isfinite(value) else None
