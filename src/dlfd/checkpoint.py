"""Checkpoints: safetensors weights plus a JSON sidecar; loading never unpickles.

``model.json`` beside ``model.safetensors`` records what the tensors are (architecture,
classes, input, scenario, split, role, hashes, recipe, dlfd's version). Both files are written
atomically, the sidecar first, so a run killed in between leaves no ``NAME.safetensors`` to be
mistaken for a finished checkpoint; on load the weights' hash is checked against the sidecar,
so a torn pair (an overwrite killed between the two renames) or a tampered one is refused.

``arch`` is a registered model (``dlfd models``) or, for a model imported with ``dlfd import``,
the user's code (``factory:FILE.py:FUNCTION``, ``timm:NAME``...); such a sidecar records the
sha256 of the factory's file (``factory_sha256``), and loading runs the factory only when that
file is unchanged and on this machine's trust list (:mod:`dlfd.models.user_factory`).
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field, fields, replace
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
_OPTIONAL_TEXT = ("scenario", "forget_sha256", "data_sha256", "data_root", "config_sha256")


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
    factory_sha256: str | None = None
    config_sha256: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    dlfd_version: str = __version__
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the sidecar: its format, then the fields in order (``input_spec`` as
        ``input``)."""
        data: dict[str, Any] = {"format": SIDECAR_FORMAT}
        for f in fields(self):
            data["input" if f.name == "input_spec" else f.name] = getattr(self, f.name)
        data["input"] = self.input_spec.to_dict()
        data["forget_keys"] = None if self.forget_keys is None else list(self.forget_keys)
        if self.factory_sha256 is None:
            del data["factory_sha256"]  # only checkpoints of user code (``dlfd import``) have one
        return data

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
        factory_sha = need("factory_sha256", str, optional=True)
        if factory_sha is not None and len(factory_sha) != 64:
            raise CheckpointError(f"{source}: factory_sha256 is not a sha256 hex digest")
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
            split_seed=seed("split_seed"),
            train_seed=seed("train_seed"),
            forget_keys=None if forget_keys is None else tuple(forget_keys),
            scenario_options=options,
            model_kwargs=model_kwargs,
            factory_sha256=factory_sha,
            **{k: need(k, str, optional=True) for k in _OPTIONAL_TEXT},
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


def weights_bytes(model: nn.Module, arch: str) -> bytes:
    """The safetensors file content :func:`save_checkpoint` writes for ``model``; non-finite
    weights are refused. The same weights always give the same bytes (and sha256): the header
    holds one metadata entry, since safetensors writes several in a random order."""
    # detached, contiguous, on CPU, no shared storage: what safetensors accepts
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite weights ({', '.join(bad[:3])})")
    return save_safetensors(tensors, metadata={"format": f"{SIDECAR_FORMAT} arch={arch}"})


def weights_sha256(model: nn.Module, arch: str) -> str:
    """The ``weights_sha256`` a checkpoint of ``model`` would record (without writing it)."""
    return sha256_bytes(weights_bytes(model, arch))


def save_checkpoint(model: nn.Module, path: str | Path, meta: CheckpointMeta) -> CheckpointMeta:
    """Write sidecar then weights, each atomically (the weights last, so ``path`` exists only
    with its sidecar; a metadata problem writes nothing); returns the meta as written."""
    path = check_weights_path(path)
    data = weights_bytes(model, meta.arch)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    final = replace(meta, weights_sha256=sha256_bytes(data), created=created)
    try:
        sidecar_text = json.dumps(final.to_dict(), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not valid JSON: {exc}") from None
    atomic_write_text(sidecar_path(path), sidecar_text)
    atomic_write_bytes(path, data)
    return final


def _read_bytes(path: Path, missing: str, what: str, limit: int) -> bytes:
    """The content of file ``path``; every problem raises :class:`CheckpointError`."""
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


def read_weights_bytes(path: str | Path, meta: CheckpointMeta) -> bytes:
    """The safetensors file's bytes, verified against the sidecar's sha256."""
    path = Path(path)
    data = _read_bytes(path, f"checkpoint not found: {path}", "checkpoint", _MAX_WEIGHTS_BYTES)
    if sha256_bytes(data) != meta.weights_sha256:
        raise CheckpointError(
            f"checkpoint {path} does not match its sidecar (sha256 differs): "
            f"the file was modified or partially written"
        )
    return data


def read_weights(path: str | Path, meta: CheckpointMeta) -> dict[str, torch.Tensor]:
    """Read the safetensors file, verifying its sha256 against the sidecar first."""
    return _load_safetensors(read_weights_bytes(path, meta), f"checkpoint {path}")


def _load_safetensors(data: bytes, what: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} is not a valid safetensors file: {exc}") from None


#: The suffixes :func:`read_state_dict` reads as PyTorch files (``torch.save`` of a state_dict).
TORCH_SUFFIXES = (".pt", ".pth")
#: Keys under which PyTorch training scripts often nest the state_dict in the file they save.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def _tensor_dict(value: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        return dict(value)
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A user's state_dict file: safetensors, or a PyTorch ``.pt``/``.pth`` read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only; nothing else is ever
    unpickled). A PyTorch file may nest the state_dict under ``state_dict``,
    ``model_state_dict`` or ``model``. Every problem raises :class:`CheckpointError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != WEIGHTS_SUFFIX and suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"weights {path} must be a {WEIGHTS_SUFFIX} file or a PyTorch state_dict "
            f"({', '.join(TORCH_SUFFIXES)})"
        )
    data = _read_bytes(path, f"weights not found: {path}", "weights", _MAX_WEIGHTS_BYTES)
    if suffix == WEIGHTS_SUFFIX:
        return _load_safetensors(data, str(path))
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError...: one line either way
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"cannot read {path} as a state_dict with torch.load(weights_only=True): {first}"
        ) from None
    state = _tensor_dict(loaded)
    if state is None and isinstance(loaded, dict):
        nested = [_tensor_dict(loaded.get(key)) for key in _NESTED_STATE_KEYS]
        state = next((s for s in nested if s is not None), None)
    if state is None:
        raise CheckpointError(
            f"{path} holds a {type(loaded).__name__}, not a state_dict (a dict of tensor names "
            f"to tensors, possibly under {', '.join(repr(k) for k in _NESTED_STATE_KEYS)})"
        )
    return state


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
    check_state_fits(model, state, source)
    model.load_state_dict(state, strict=True)


def _build_model(meta: CheckpointMeta, path: str | Path) -> nn.Module:
    """The untrained model of ``meta`` (a user factory only once :func:`load_checkpoint` has
    checked that this machine trusts it)."""
    from dlfd.models import create_model
    from dlfd.models.user_factory import build_user_model, is_user_arch

    try:
        if is_user_arch(meta.arch):
            return build_user_model(meta.arch, meta.num_classes, source_sha256=meta.factory_sha256)
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
    """Rebuild a checkpoint's model (in eval mode, on ``device``): a registered architecture,
    or one of the user's code imported with ``dlfd import``.

    The model is first built without memory (on the ``meta`` device) and checked against the
    weights file, so a sidecar claiming a huge model allocates nothing before it is refused.
    (User code that cannot build on the meta device is checked once built for real.)
    """
    from dlfd.models.user_factory import check_trusted, is_user_arch

    meta = read_meta(path)
    if expect_arch is not None and meta.arch != expect_arch:
        raise CheckpointError(f"checkpoint {path} is a {meta.arch!r}, expected {expect_arch!r}")
    if expect_num_classes is not None and meta.num_classes != expect_num_classes:
        raise CheckpointError(
            f"checkpoint {path} has {meta.num_classes} classes, the dataset "
            f"has {expect_num_classes}"
        )
    user_code = is_user_arch(meta.arch)
    if user_code:
        check_trusted(meta.arch, meta.factory_sha256, f"checkpoint {path}")
    shape_only: nn.Module | None = None
    try:
        with torch.device("meta"):
            shape_only = _build_model(meta, path)
    except CheckpointError:
        if not user_code:
            raise
    state = read_weights(path, meta)
    if shape_only is not None:
        check_state_fits(shape_only, state, str(path))
    model = _build_model(meta, path)
    if shape_only is None:
        check_state_fits(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, path: str | Path) -> CheckpointMeta:
    """Load a checkpoint's weights into a user-built ``model`` (any architecture)."""
    meta = read_meta(path)
    load_state_into(model, read_weights(path, meta), str(path))
    return meta
