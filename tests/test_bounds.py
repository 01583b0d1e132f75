"""Every user mistake ends in a one-line DlfdError naming its culprit: settings outside their
declared ranges, absurd input specs, one-class tasks, images too large or in ambiguous pixel
modes, and runs that diverge (named where they diverge, with the settings that drive them)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import types
import typing
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import dlfd.data.images as images
from dlfd.bench import BenchPlan, load_recipe_file, resolve_methods, split_settings, validate_plan
from dlfd.checkpoint import CheckpointMeta, read_meta, save_checkpoint, sidecar_path
from dlfd.config import apply_overrides, field_bounds, setting_ranges
from dlfd.data.images import image_hashes, load_image
from dlfd.data.problem import UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.transforms import AugmentConfig, InputSpec
from dlfd.errors import CheckpointError, ConfigError, DataError
from dlfd.methods import get_method, list_methods, unlearn
from dlfd.methods.base import NonFiniteUnlearningError
from dlfd.methods.registry import MethodSpec
from dlfd.models import create_model
from dlfd.scenarios import Scenario
from dlfd.training import NonFiniteLossError, TrainRecipe, train_checkpoint
from dlfd.training.loop import train_epochs

CPU = torch.device("cpu")
METHODS = list(list_methods())
RECIPES = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes"


# ------------------------------------------------------------------------- 1. setting bounds
def _numeric_fields(cls: type) -> list[tuple[str, Any]]:
    """(name, element type) of every int/float (optionally None, or tuple of) field."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
        if typing.get_origin(annotation) is tuple:
            annotation = typing.get_args(annotation)[0]
        if annotation in (int, float):
            out.append((f.name, annotation))
    return out


METHOD_FIELDS = [
    (key, name) for key in METHODS for name, _ in _numeric_fields(get_method(key).params_cls)
]
RECIPE_FIELDS = [name for name, _ in _numeric_fields(TrainRecipe)] + [
    f"augment.{name}" for name, _ in _numeric_fields(AugmentConfig)
]


@pytest.mark.parametrize("cls", [*(get_method(k).params_cls for k in METHODS), TrainRecipe,
                                 AugmentConfig], ids=lambda c: c.__name__)  # fmt: skip
def test_every_numeric_setting_declares_a_range(cls: type) -> None:
    declared = field_bounds(cls)
    missing = [name for name, _ in _numeric_fields(cls) if name not in declared]
    assert not missing, f"{cls.__name__}: no declared range for {missing}"
    assert set(setting_ranges(cls)) == set(declared)


@pytest.mark.parametrize("key", METHODS)
def test_every_method_default_passes(key: str) -> None:
    spec = get_method(key)
    params = spec.make_params({})
    assert params == spec.params_cls()


@pytest.mark.parametrize(("key", "name"), METHOD_FIELDS, ids=lambda v: str(v))
@pytest.mark.parametrize("value", [1e30, -1, math.nan], ids=["1e30", "-1", "nan"])
def test_absurd_method_settings_are_refused(key: str, name: str, value: float) -> None:
    spec = get_method(key)
    with pytest.raises(ConfigError, match=rf"^{key}: {name}\b") as raised:
        spec.make_params({name: value})
    assert len(str(raised.value).splitlines()) == 1
    # constructing the settings directly is checked the same way
    with pytest.raises(ConfigError, match=rf"^{name} must be .*in [\[(].*, got "):
        spec.params_cls(**{name: value})


@pytest.mark.parametrize("name", RECIPE_FIELDS)
@pytest.mark.parametrize("value", ["1e30", "-1", "nan"])
def test_absurd_recipe_settings_are_refused(name: str, value: str) -> None:
    if name == "augment.scale":
        value = f"{value},{value}" if value != "-1" else "-1,1"
    with pytest.raises(ConfigError, match=rf"^{name}\b"):
        apply_overrides(TrainRecipe(), {name: value})


def test_messages_name_the_setting_the_value_and_the_range() -> None:
    cases = [
        (lambda: get_method("dlfd").make_params({"epsilon": 1e30}),
         "dlfd: epsilon must be in (0, 10], got 1e+30"),
        (lambda: get_method("unsir").make_params({"noise_lr": "1e30"}),
         "unsir: noise_lr must be in (0, 10], got 1e+30"),
        (lambda: get_method("finetune").make_params({"epochs": 10**6}),
         "finetune: epochs must be in [1, 10000], got 1000000"),
        (lambda: apply_overrides(TrainRecipe(), {"augment.degrees": "1e30"}),
         "augment.degrees must be in [0, 180], got 1e+30"),
        (lambda: apply_overrides(TrainRecipe(), {"batch_size": "100000"}),
         "batch_size must be in [1, 65536], got 100000"),
        (lambda: TrainRecipe(lr=1e6), "lr must be in (0, 10], got 1000000.0"),
        (lambda: AugmentConfig(scale=(0.5, 1e30)),
         "scale values must be in [0.1, 10], got (0.5, 1e+30)"),
        (lambda: get_method("dlfd").params_cls(steps=2.0),  # type: ignore[arg-type]
         "steps must be an integer in [1, 10000], got 2.0"),
    ]  # fmt: skip
    for make, message in cases:
        with pytest.raises(ConfigError) as raised:
            make()
        assert str(raised.value) == message


def test_range_edges_are_inclusive_or_exclusive_as_declared() -> None:
    spec = get_method("finetune")
    spec.make_params({"lr": 10.0, "momentum": 0.0, "weight_decay": 1.0, "epochs": 10_000})
    for name, value in [("lr", 10.001), ("momentum", 1.0), ("weight_decay", 1.01), ("lr", 0.0)]:
        with pytest.raises(ConfigError, match=name):
            spec.make_params({name: value})
    get_method("dlfd").make_params({"budget": None, "step_size": 1.0})
    with pytest.raises(ConfigError, match="budget"):
        get_method("dlfd").make_params({"budget": 1.5})
    AugmentConfig(degrees=180.0, hflip=1.0, scale=(0.1, 10.0))
    with pytest.raises(ConfigError, match="degrees"):
        AugmentConfig(degrees=180.5)
    with pytest.raises(ConfigError, match="low <= high"):
        AugmentConfig(scale=(2.0, 1.0))


def test_scenario_and_committed_recipes_still_pass() -> None:
    import dlfd.scenarios.custom as custom
    import dlfd.scenarios.mucac as mucac
    import dlfd.scenarios.mufac as mufac
    import dlfd.scenarios.rafdb as rafdb

    for recipe in (custom._RECIPE, mucac.RECIPE, mufac.RECIPE, rafdb.RECIPE):
        assert TrainRecipe.from_dict(dataclasses.asdict(recipe)) == recipe
    for path in sorted(RECIPES.glob("*.toml")):
        recipe = load_recipe_file(path)
        recipe_settings, settings = split_settings(recipe.settings)
        validate_plan(
            BenchPlan(
                dataset=recipe.dataset,
                out=Path("unused"),
                methods=resolve_methods(recipe.methods),
                options=recipe.options,
                recipe=recipe_settings,
                settings=settings,
            )
        )
    # the official DLFD step (0.4 in normalised units) the recipes' comments point to
    get_method("dlfd").make_params({"mode": "official", "step_size": 0.4})


# ------------------------------------------------------------------------ 2. InputSpec bounds
SPEC = {"size": [32, 32], "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"size": [4096, 4096]}, "8 to 1024"),
        ({"size": [1025, 32]}, "8 to 1024"),
        ({"size": [7, 32]}, "8 to 1024"),
        ({"size": [32.5, 32]}, "8 to 1024"),
        ({"size": ["32", 32]}, "8 to 1024"),
        ({"size": 32}, "8 to 1024"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"channels": "3"}, "channels must be 1 or 3"),
        ({"channels": True}, "channels must be 1 or 3"),
        ({"mean": [0.5, float("nan"), 0.5]}, "mean must be finite"),
        ({"mean": [1e308] * 3}, "mean must be finite"),
        ({"mean": ["x"] * 3}, "mean/std must be lists of numbers"),
        ({"std": [0.5, 0.0, 0.5]}, "std must be positive"),
        ({"std": [1e-320] * 3}, "std must be positive"),
        ({"std": [float("inf")] * 3}, "std must be positive"),
        ({"std": None}, "mean/std must be lists of numbers"),
        ({"grayscale": "yes"}, "grayscale must be true or false"),
    ],
)
def test_input_spec_bounds(changes: dict[str, Any], fragment: str) -> None:
    data = {**SPEC, **changes}
    with pytest.raises(ConfigError, match=fragment):
        InputSpec.from_dict(data)
    with pytest.raises(ConfigError, match=fragment):
        InputSpec(**data)


def test_input_spec_accepts_the_largest_sides_and_ints_given_as_floats() -> None:
    assert InputSpec.from_dict({**SPEC, "size": [1024, 8]}).size == (1024, 8)
    spec = InputSpec.from_dict({**SPEC, "size": [32.0, 32.0], "channels": 3.0})
    assert spec.size == (32, 32) and spec.channels == 3 and isinstance(spec.channels, int)


def test_checkpoint_claiming_a_huge_input_is_refused_before_any_allocation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.safetensors"
    meta = CheckpointMeta(
        arch="small_cnn",
        num_classes=3,
        task="multiclass",
        input_spec=InputSpec(size=(32, 32)),
        role="original",
    )
    save_checkpoint(create_model("small_cnn", 3), path, meta)
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["input"]["size"] = [4096, 4096]
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=r"8 to 1024 pixels each, got \[4096, 4096\]"):
        read_meta(path)


# --------------------------------------------------------------------- 3. one-class tasks
def _records(tmp_path: Path, labels: list[int], class_names: tuple[str, ...]) -> ImageRecords:
    paths = tuple(f"p{i}/{i}.png" for i in range(len(labels)))
    rng = np.random.default_rng(0)
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / p)
    return ImageRecords(
        root=tmp_path,
        paths=paths,
        labels=np.asarray(labels),
        identities=tuple(p.split("/")[0] for p in paths),
        class_names=class_names,
        name="faces",
    )


SPLITS = {"retain": [0, 1], "forget": [2], "val": [3], "test": [4], "unseen": [5]}


def test_a_single_class_name_is_refused_naming_the_dataset_and_the_class(tmp_path: Path) -> None:
    records = _records(tmp_path, [0] * 6, ("smiling",))
    with pytest.raises(DataError, match=r"dataset 'faces' defines only the class 'smiling'"):
        UnlearningProblem(records=records, **SPLITS)  # type: ignore[arg-type]


def test_training_on_a_single_present_class_is_refused(tmp_path: Path) -> None:
    records = _records(tmp_path, [1, 1, 1, 0, 0, 0], ("no", "yes"))
    problem = UnlearningProblem(records=records, **SPLITS)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"\(retain \+ forget\) of 'faces' holds only the class "
                       r"'yes' of 2"):  # fmt: skip
        problem.check_trainable()
    scenario = Scenario(
        name="faces",
        description="one class in training",
        problem=problem,
        input_spec=InputSpec(size=(8, 8)),
        recipe=TrainRecipe(model="small_cnn", epochs=1, batch_size=2),
    )
    out = tmp_path / "m.safetensors"
    with pytest.raises(DataError, match="'yes'"):
        train_checkpoint(scenario, role="original", out=out, seed=0, device=CPU)
    assert not out.exists()
    # two classes present (or a multilabel task) pass
    two = UnlearningProblem(
        records=_records(tmp_path / "two", [0, 1, 1, 0, 0, 0], ("no", "yes")),
        **SPLITS,  # type: ignore[arg-type]
    )
    two.check_trainable()


# -------------------------------------------------------------------- 4. image size and modes
RGB = np.tile(
    np.array(
        [
            [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]],
            [[200, 100, 50], [0, 0, 0], [255, 255, 255], [90, 90, 90]],
        ],
        dtype=np.uint8,
    ),
    (4, 2, 1),
)  # fmt: skip  (8 x 8)
SPEC_RGB = InputSpec(size=(8, 8))
SPEC_GRAY = InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("1", "png"),
        ("L", "png"),
        ("LA", "png"),
        ("P", "png"),
        ("PA", "tif"),
        ("RGB", "png"),
        ("RGBA", "png"),
        ("CMYK", "tif"),
        ("YCbCr", "tif"),
        ("LAB", "tif"),
    ],
)
def test_eight_bit_modes_give_the_pixels_pillow_defines(
    tmp_path: Path, mode: str, suffix: str
) -> None:
    image = Image.fromarray(RGB).convert(mode)
    path = tmp_path / f"x.{suffix}"
    image.save(path)
    with Image.open(path) as stored:
        assert stored.mode == mode
        rgb = stored.convert("RGB")  # palette lookup, alpha dropped, CMYK/YCbCr/LAB to RGB
        gray = rgb.convert("L") if mode == "LAB" else stored.convert("L")  # LAB: RGB only
    expected_rgb = np.asarray(gray if mode in ("1", "L", "LA") else rgb)
    expected_gray = np.asarray(gray)
    got_rgb = load_image(path, SPEC_RGB)
    want = _as_tensor(expected_rgb)
    assert torch.equal(got_rgb, want.expand(3, -1, -1) if want.shape[0] == 1 else want)
    assert torch.equal(load_image(path, SPEC_GRAY), _as_tensor(expected_gray))
    if mode in ("RGB", "RGBA", "CMYK"):  # colours survive exactly
        assert torch.equal(got_rgb, _as_tensor(RGB))
    image_hashes(path)  # hashing accepts what loading accepts


def _sixteen_bit() -> np.ndarray:
    wide = (RGB[..., 0].astype(np.uint16) * 257)[:, :]
    wide[0, 0], wide[0, 1] = 65535, 12850  # 12850 / 257 = 50
    return wide


@pytest.mark.parametrize("kind", ["I;16 png", "I;16B tif", "I pgm"])
def test_sixteen_bit_images_are_scaled_and_hash_like_their_eight_bit_version(
    tmp_path: Path, kind: str
) -> None:
    wide = _sixteen_bit()
    eight = np.round(wide / 257).astype(np.uint8)
    mode, suffix = kind.split()
    path = tmp_path / f"deep.{suffix}"
    h, w = wide.shape
    if suffix == "pgm":  # Pillow opens 16-bit PGM files as mode "I"
        path.write_bytes(f"P5\n{w} {h}\n65535\n".encode() + wide.astype(">u2").tobytes())
    elif mode == "I;16B":  # (Pillow's convert("I;16B") clips to 255: build it from bytes)
        Image.frombytes(mode, (w, h), wide.astype(">u2").tobytes()).save(path)
    else:
        Image.fromarray(wide).save(path)
    with Image.open(path) as stored:
        assert stored.mode == mode
    assert torch.equal(load_image(path, SPEC_GRAY), _as_tensor(eight))
    assert torch.equal(load_image(path, SPEC_RGB), _as_tensor(eight).expand(3, -1, -1))
    Image.fromarray(eight).save(tmp_path / "eight.png")
    assert image_hashes(path)[1] == image_hashes(tmp_path / "eight.png")[1]  # same dHash


@pytest.mark.parametrize(
    ("array", "mode"),
    [
        (np.array([[0, 100, 70000, -5] * 2] * 8, dtype=np.int32), "I"),
        (np.array([[0.0, 0.5, 1.0, 200.0] * 2] * 8, dtype=np.float32), "F"),
    ],
)
def test_ambiguous_modes_are_refused_by_loading_and_hashing(
    tmp_path: Path, array: np.ndarray, mode: str
) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(array).save(path)
    for read in (lambda: load_image(path, SPEC_GRAY), lambda: image_hashes(path)):
        with pytest.raises(DataError, match=rf"odd\.tif has .* pixel mode '{mode}'"):
            read()


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data at all)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path: Path) -> None:
    assert images.MAX_IMAGE_PIXELS == 64_000_000 == Image.MAX_IMAGE_PIXELS
    path = tmp_path / "bomb.png"
    _png_header_only(path, 10_000, 10_000)  # 100 MP: Pillow itself would only warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning must not be what stops (or lets) it through
        for read in (lambda: load_image(path, SPEC_RGB), lambda: image_hashes(path)):
            with pytest.raises(DataError, match=r"bomb\.png is 10000x10000 pixels .*64 megapixels"):
                read()
    _png_header_only(path, 30_000, 30_000)  # beyond Pillow's own error threshold
    with pytest.raises(DataError, match=r"bomb\.png is larger than the limit of 64 megapixels"):
        load_image(path, SPEC_RGB)


def test_the_pixel_limit_is_the_module_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(RGB).save(path)  # 8 x 8 = 64 pixels
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 63)
    for read in (lambda: load_image(path, SPEC_RGB), lambda: image_hashes(path)):
        with pytest.raises(DataError, match=r"x\.png is 8x8 pixels"):
            read()
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 64)
    load_image(path, SPEC_RGB)


# ------------------------------------------------------------- 5. divergence, with its cause
IMAGE = (3, 16, 16)


def _loader(n: int, seed: int, scale: float = 1.0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *IMAGE, generator=g) * scale
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 3)


def test_one_error_type_for_divergence() -> None:
    assert NonFiniteUnlearningError is NonFiniteLossError


def test_training_with_a_huge_learning_rate_stops_at_the_batch_naming_lr_and_tensor() -> None:
    # TrainRecipe refuses lr=1e6 now; the loop itself must still catch what diverges
    with pytest.raises(ConfigError, match="lr must be in"):
        TrainRecipe(lr=1e6)
    recipe = types.SimpleNamespace(epochs=3, lr=1e6, schedule="constant")
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e6, momentum=0.9)
    seen = []
    with pytest.raises(NonFiniteLossError) as raised:
        for stats in train_epochs(
            model,
            lambda epoch: _loader(64, 0),
            optimizer,
            recipe,  # type: ignore[arg-type]
            task="multiclass",
            seed=0,
            device=CPU,
        ):
            seen.append(stats)
    message = str(raised.value)
    assert not seen  # stopped inside epoch 1, not after the run
    assert message.startswith("training diverged: ")
    assert "at epoch 1, batch " in message and "(lr=1e+06)" in message
    assert "became non-finite" in message or "loss became" in message
    assert "lower the learning rate" in message


def test_training_names_a_blown_batchnorm_statistic_while_the_loss_is_finite() -> None:
    recipe = types.SimpleNamespace(epochs=1, lr=0.01, schedule="constant")
    model = _model()
    with pytest.raises(
        NonFiniteLossError,
        match=r"running_var of features\.0\.1 became non-finite at epoch 1, batch 1 \(lr=0.01\)",
    ):
        list(
            train_epochs(
                model,
                lambda epoch: _loader(32, 0, scale=1e20),  # activations square past float32
                torch.optim.SGD(model.parameters(), lr=0.01),
                recipe,  # type: ignore[arg-type]
                task="multiclass",
                seed=0,
                device=CPU,
            )
        )


def _unchecked(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """Let settings past validation (as if an in-range combination diverged)."""
    original = MethodSpec.make_params

    def make(self: MethodSpec, overrides: Any = None) -> Any:
        params = original(self)
        for name, value in values.items():
            object.__setattr__(params, name, value)
        return params

    monkeypatch.setattr(MethodSpec, "make_params", make)


def _unlearn(method: str, **kwargs: Any) -> None:
    unlearn(
        _model(),
        _loader(48, 1, kwargs.pop("scale", 1.0)),
        _loader(16, 2),
        _loader(16, 3),  # monitored: the error must come before any monitor metric complains
        method=method,
        input_bounds=(torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0)),
        **kwargs,
    )


def test_finetune_with_a_huge_learning_rate_names_method_batch_and_lr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _unchecked(monkeypatch, lr=1e30)
    with pytest.raises(NonFiniteLossError) as raised:
        _unlearn("finetune")
    message = str(raised.value)
    assert message.startswith("method 'finetune' diverged: ")
    assert "at train epoch 1, batch " in message
    assert "lr=1e+30" in message and "epochs=2" in message
    assert "save_threshold" not in message  # the shared selection settings are not the cause


def test_dlfd_with_a_huge_learning_rate_names_method_and_step_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _unchecked(monkeypatch, lr=1e30, steps=2, features="penultimate")
    with pytest.raises(NonFiniteLossError) as raised:  # not the attack's "member_losses ..."
        _unlearn("dlfd")
    message = str(raised.value)
    assert message.startswith("method 'dlfd' diverged: ")
    assert "at batch 1" in message
    for fragment in ("lr=1e+30", "step_size=", "budget=", "epsilon=", "ot_weight="):
        assert fragment in message


@pytest.mark.parametrize("method", ["finetune", "scrub", "neggrad_plus", "random_label",
                                    "bad_teacher", "dlfd"])  # fmt: skip
def test_methods_name_a_blown_batchnorm_statistic_where_it_happens(method: str) -> None:
    with pytest.raises(NonFiniteLossError) as raised:
        _unlearn(method, scale=1e20, **({"steps": 1} if method == "dlfd" else {}))
    message = str(raised.value)
    assert message.startswith(f"method {method!r} diverged: ")
    assert "of features." in message and "became non-finite at " in message
    assert re.search(r"(batch|step) \d+", message)
    if method != "dlfd":  # (dlfd trains on images projected onto valid pixels while it synthesises)
        assert "batch 1" in message or "step 1" in message
