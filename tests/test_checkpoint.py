"""Checkpoints: safetensors + sidecar round trip, hashes, and refusal of anything untrusted."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from dlfd.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_weights,
    read_meta,
    save_checkpoint,
    sidecar_path,
)
from dlfd.data.transforms import InputSpec
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import atomic_write_bytes, sha256_file
from dlfd.models import create_model

SPEC = InputSpec(size=(32, 32))


def _meta(**changes: object) -> CheckpointMeta:
    base = dict(
        arch="small_cnn",
        num_classes=3,
        task="multiclass",
        input_spec=SPEC,
        role="original",
        scenario="orl-glasses",
        split_seed=4,
        train_seed=1,
        forget_sha256="f" * 64,
    )
    base.update(changes)
    return CheckpointMeta(**base)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("small_cnn", 3)
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, _meta())
    return path, model


def test_round_trip_restores_weights_and_metadata(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded, meta = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training
    assert meta.weights_sha256 == sha256_file(path)
    sidecar = json.loads(sidecar_path(path).read_text())
    for field in (
        "arch",
        "num_classes",
        "input",
        "scenario",
        "split_seed",
        "weights_sha256",
        "forget_sha256",
        "role",
        "dlfd_version",
        "created",
    ):
        assert field in sidecar, field
    assert sidecar["input"] == {
        "size": [32, 32],
        "channels": 3,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "grayscale": False,
    }
    assert (sidecar["scenario"], sidecar["split_seed"]) == ("orl-glasses", 4)


def test_modified_weights_are_refused(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_checkpoint(path)


def test_missing_sidecar_is_refused(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match="sidecar not found"):
        load_checkpoint(path)


def test_pickle_disguised_as_checkpoint_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    meta = _meta().to_dict() | {"weights_sha256": sha256_file(path)}
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "not a dlfd checkpoint"),
        ({"num_classes": "3"}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"task": "regression"}, "unknown task"),
        ({"input": {"size": [32]}}, "input"),
        ({"weights_sha256": "abc"}, "sha256"),
        ({"arch": None}, "arch"),
    ],
)
def test_malformed_sidecar_is_refused(
    saved: tuple[Path, torch.nn.Module], change: dict, message: str
) -> None:
    path, _ = saved
    side = sidecar_path(path)
    data = json.loads(side.read_text()) | change
    side.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        read_meta(path)


def test_sidecar_that_is_not_json_is_refused(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    sidecar_path(path).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_meta(path)


def test_class_count_and_architecture_mismatches_are_named(
    saved: tuple[Path, torch.nn.Module],
) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError, match="3 classes, the dataset has 40"):
        load_checkpoint(path, expect_num_classes=40)
    with pytest.raises(CheckpointError, match="expected 'resnet18'"):
        load_checkpoint(path, expect_arch="resnet18")
    with pytest.raises(CheckpointError, match=r"fc\.weight has shape"):
        load_weights(create_model("small_cnn", 5), path)
    with pytest.raises(CheckpointError, match="missing"):
        load_weights(create_model("resnet18", 3), path)


def test_checkpoint_name_must_end_with_safetensors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        save_checkpoint(create_model("small_cnn", 3), tmp_path / "model.pt", _meta())


def test_non_finite_weights_are_not_saved(tmp_path: Path) -> None:
    model = create_model("small_cnn", 3)
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(model, path, _meta())
    assert not path.exists() and not sidecar_path(path).exists()


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    class Boom(Exception):
        pass

    from dlfd.io import atomic_open

    with pytest.raises(Boom), atomic_open(target) as handle:
        handle.write(b"partial new content")
        raise Boom
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


class _Planted:
    """Unpickling this touches ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of unpickling fail the test loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


def _plant(path: Path, payload: bytes, **sidecar: object) -> None:
    """Put ``payload`` at ``path`` with a sidecar that vouches for it (its true sha256)."""
    path.write_bytes(payload)
    meta = _meta().to_dict() | {"weights_sha256": sha256_file(path)} | sidecar
    sidecar_path(path).write_text(json.dumps(meta))


def test_torch_pt_file_renamed_to_safetensors_is_refused(tmp_path: Path, no_unpickling) -> None:
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(3, 128), "payload": _Planted(marker)}, pt)
    path = tmp_path / "model.safetensors"
    _plant(path, pt.read_bytes())
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_weights(create_model("small_cnn", 3), path)
    assert not marker.exists()


def test_weights_linked_to_a_pickle_elsewhere_are_refused(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path, no_unpickling
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "elsewhere" / "evil.pt"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(_Planted(marker)))
    path, _ = saved
    path.unlink()
    path.symlink_to(evil)  # the sidecar still vouches for the genuine weights
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(path)
    assert not marker.exists()


def test_sidecar_pointing_elsewhere_is_never_followed(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path, no_unpickling
) -> None:
    """Paths in a sidecar (here unknown fields naming a pickle) are never opened: the weights
    are always NAME.safetensors beside NAME.json, checked against the recorded sha256."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Planted(marker)))
    path, model = saved
    side = sidecar_path(path)
    pointing = json.loads(side.read_text()) | {
        "weights": str(evil),
        "path": str(evil),
        "data_root": str(tmp_path),
        "extra": {"weights_file": str(evil)},
    }
    side.write_text(json.dumps(pointing))
    loaded, _ = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    # with the genuine weights gone the loader refuses; it does not go looking elsewhere
    path.unlink()
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(path)
    # a sidecar vouching for the pickle's hash does not make the pickle loadable either
    other = tmp_path / "other.safetensors"
    _plant(other, evil.read_bytes(), weights=str(evil))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(other)
    assert not marker.exists()


def test_sidecar_linked_to_another_checkpoints_sidecar_is_refused(
    saved: tuple[Path, torch.nn.Module], tmp_path: Path, no_unpickling
) -> None:
    marker = tmp_path / "pwned"
    genuine, _ = saved
    path = tmp_path / "planted" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(_Planted(marker)))
    sidecar_path(path).symlink_to(sidecar_path(genuine))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(path)
    assert not marker.exists()


def test_loaded_weights_must_be_finite_and_real(tmp_path: Path) -> None:
    model = create_model("small_cnn", 3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    from safetensors.torch import save as save_safetensors

    for name, bad in (
        ("nan", {"fc.weight": torch.full_like(state["fc.weight"], float("nan"))}),
        ("complex", {"fc.weight": state["fc.weight"].to(torch.complex64)}),
        ("bool", {"fc.weight": state["fc.weight"] > 0}),
    ):
        path = tmp_path / f"{name}.safetensors"
        _plant(path, save_safetensors(state | bad))
        with pytest.raises(CheckpointError, match=r"non-finite|dtype"):
            load_checkpoint(path)


def test_sidecar_claiming_a_huge_model_allocates_nothing(
    saved: tuple[Path, torch.nn.Module],
) -> None:
    path, _ = saved
    side = sidecar_path(path)
    side.write_text(json.dumps(json.loads(side.read_text()) | {"num_classes": 10**9}))
    with pytest.raises(CheckpointError, match=r"fc\.weight has shape"):
        load_checkpoint(path)  # a real 10**9-class head would need 512 GB


def test_same_weights_same_sha256() -> None:
    """The file bytes, hence weights_sha256, depend on the weights only (safetensors writes
    several metadata entries in a random order, so there is just one)."""
    from dlfd.checkpoint import weights_sha256

    model = torch.nn.Linear(3, 2)
    assert len({weights_sha256(model, "linear") for _ in range(20)}) == 1
