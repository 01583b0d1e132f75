"""InputSpec, augmentation, image decoding and the split loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dlfd.data.images import load_image
from dlfd.data.loaders import ProblemLoaders
from dlfd.data.problem import UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.splits import identity_split
from dlfd.data.transforms import (
    AugmentConfig,
    BatchTransform,
    InputSpec,
    random_affine,
    random_crop,
    random_hflip,
)
from dlfd.errors import ConfigError, DataError

SPEC = InputSpec(size=(8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 6, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


# ------------------------------------------------------------------------------ InputSpec
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (4, 8)}, "input size must be"),
        ({"size": (8, 8, 8)}, "input size must be"),
        ({"size": (8, 8), "channels": 2}, "channels must be 1 or 3"),
        ({"size": (8, 8), "channels": 1}, "mean/std need 1 values"),
        ({"size": (8, 8), "mean": (0.5, 0.5)}, "mean/std need 3 values"),
        ({"size": (8, 8), "std": (0.5, 0.0, 0.5)}, "std must be positive"),
        ({"size": (8, 8), "std": (0.5, float("nan"), 0.5)}, "std must be positive"),
        ({"size": (8, 8), "std": (0.5, -1.0, 0.5)}, "std must be positive"),
    ],
)
def test_input_spec_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InputSpec(**kwargs)


def test_input_spec_dict_round_trip():
    spec = InputSpec(size=[16, 12], channels=1, mean=[0.5], std=[0.25])
    assert spec.size == (16, 12) and spec.mean == (0.5,)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == {
        "size": [16, 12],
        "channels": 1,
        "mean": [0.5],
        "std": [0.25],
        "grayscale": False,
    }
    gray = InputSpec(size=(16, 16), grayscale=True)
    assert InputSpec.from_dict(gray.to_dict()) == gray
    old = {k: v for k, v in gray.to_dict().items() if k != "grayscale"}  # older sidecars
    assert InputSpec.from_dict(old).grayscale is False
    with pytest.raises(ConfigError, match="malformed input spec"):
        InputSpec.from_dict({"size": [16, 12]})
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        InputSpec.from_dict(dict(spec.to_dict(), channels=4))


def test_normalize_denormalize_round_trip():
    pixels = _batch()
    inputs = SPEC.normalize(pixels)
    expected = (pixels - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.5]
    ).view(3, 1, 1)
    torch.testing.assert_close(inputs, expected)
    torch.testing.assert_close(SPEC.denormalize(inputs), pixels)


def test_input_bounds_are_the_images_of_0_and_1():
    low, high = SPEC.input_bounds(torch.zeros(1, dtype=torch.float64))
    assert low.shape == high.shape == (3, 1, 1) and low.dtype == torch.float64
    ones = torch.ones(3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(SPEC.normalize(ones * 0).amin(dim=(1, 2), keepdim=True), low)
    torch.testing.assert_close(SPEC.normalize(ones).amax(dim=(1, 2), keepdim=True), high)
    torch.testing.assert_close(low.flatten(), torch.tensor([-2.5, -1.6, -0.6], dtype=torch.float64))
    assert (low < high).all()


# ------------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize(
    "kwargs",
    [
        {"hflip": 1.5},
        {"hflip": -0.1},
        {"crop_padding": -1},
        {"degrees": -3.0},
        {"translate": 0.5},
        {"scale": (0.0, 1.0)},
        {"scale": (1.1, 0.9)},
    ],
)
def test_augment_config_validation(kwargs):
    with pytest.raises(ConfigError):
        AugmentConfig(**kwargs)


def test_random_hflip_flips_exactly_the_drawn_subset():
    images = _batch(n=32)
    out = random_hflip(images, 0.5, _gen(7))
    drawn = torch.rand(32, generator=_gen(7)) < 0.5
    assert 0 < drawn.sum() < 32
    torch.testing.assert_close(out[drawn], images[drawn].flip(-1))
    torch.testing.assert_close(out[~drawn], images[~drawn])
    torch.testing.assert_close(random_hflip(images, 0.5, _gen(7)), out)
    assert not torch.equal(random_hflip(images, 0.5, _gen(8)), out)
    torch.testing.assert_close(random_hflip(images, 0.0, _gen(7)), images)
    torch.testing.assert_close(random_hflip(images, 1.0, _gen(7)), images.flip(-1))
    assert torch.equal(images, _batch(n=32))  # input untouched


def test_random_crop_keeps_shape_and_takes_windows_of_the_padded_image():
    images = _batch()
    assert random_crop(images, 0, _gen(0)) is images
    out = random_crop(images, 2, _gen(0))
    assert out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect")
    offsets = torch.randint(0, 5, (6, 2), generator=_gen(0)).tolist()
    for i, (dy, dx) in enumerate(offsets):
        torch.testing.assert_close(out[i], padded[i, :, dy : dy + 8, dx : dx + 10])
    assert any(offset != [2, 2] for offset in offsets)  # not all centred: something moved
    torch.testing.assert_close(random_crop(images, 2, _gen(0)), out)


def test_random_affine():
    images = _batch()
    assert random_affine(images, 0.0, 0.0, (1.0, 1.0), _gen(0)) is images
    out = random_affine(images, 15.0, 0.1, (0.9, 1.1), _gen(0))
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, images)
    assert out.min() >= images.min() - 1e-6 and out.max() <= images.max() + 1e-6  # bilinear
    torch.testing.assert_close(random_affine(images, 15.0, 0.1, (0.9, 1.1), _gen(0)), out)
    # an identity transform drawn through the general path leaves the pixels (almost) as they are
    torch.testing.assert_close(random_affine(images, 0.0, 0.0, (1.0, 1.0 + 1e-9), _gen(0)), images)


def test_batch_transform_without_augmentation_is_normalised_pixels():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=_gen(1))
    copy = images.clone()
    out = BatchTransform(SPEC)(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, SPEC.normalize(images.float() / 255))
    assert torch.equal(images, copy)


def test_batch_transform_augmentation_is_seeded():
    augment = AugmentConfig(hflip=0.5, crop_padding=2, degrees=10.0, translate=0.1)
    with pytest.raises(ConfigError, match=r"needs an explicit torch\.Generator"):
        BatchTransform(SPEC, augment)
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8, generator=_gen(1))
    first = BatchTransform(SPEC, augment, _gen(3))(images)
    torch.testing.assert_close(BatchTransform(SPEC, augment, _gen(3))(images), first)
    assert not torch.allclose(BatchTransform(SPEC, augment, _gen(4))(images), first)
    assert not torch.allclose(BatchTransform(SPEC)(images), first)


# ------------------------------------------------------------------------------ load_image
def test_grayscale_file_gives_three_identical_channels(tmp_path, write_image):
    path = write_image(tmp_path / "g.pgm", size=(10, 12))
    image = load_image(path, InputSpec(size=(16, 20)))
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 20)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    same_size = load_image(path, InputSpec(size=(12, 10)))
    with Image.open(path) as img:
        assert same_size[0].tolist() == np.asarray(img).tolist()


def test_rgb_file(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (9, 9), (255, 0, 0)).save(path)
    rgb = load_image(path, InputSpec(size=(8, 8)))
    assert rgb.shape == (3, 8, 8)
    assert rgb[0].eq(255).all() and rgb[1:].eq(0).all()
    gray = load_image(path, InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,)))
    assert gray.shape == (1, 8, 8)
    assert gray.eq(76).all()  # ITU-R 601 luminance of pure red: 0.299 * 255


def test_palette_and_alpha_files_become_rgb(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 255, 128)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), (0, 255, 0)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "a.png", SPEC)[:, 0, 0].tolist() == [0, 0, 255]
    assert load_image(tmp_path / "p.png", SPEC)[:, 0, 0].tolist() == [0, 255, 0]


def test_unreadable_files_raise_data_error_naming_them(tmp_path):
    corrupt = tmp_path / "face.png"
    corrupt.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match=r"cannot read image .*face\.png"):
        load_image(corrupt, SPEC)
    truncated = tmp_path / "cut.png"
    Image.new("L", (64, 64), 9).save(tmp_path / "whole.png")
    truncated.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image(truncated, SPEC)
    with pytest.raises(DataError, match=r"image file not found: .*missing\.png"):
        load_image(tmp_path / "missing.png", SPEC)
    with pytest.raises(DataError, match="cannot read image"):
        load_image(tmp_path, SPEC)


# ------------------------------------------------------------------------------ loaders
@pytest.fixture
def problem(make_records) -> UnlearningProblem:
    records = make_records(6, 5)
    sizes = {"forget": 1, "retain": 3, "val": 1, "test": 1}
    return identity_split(records, sizes, seed=0)


def _collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = zip(*loader, strict=True)
    return torch.cat(inputs), torch.cat(labels)


def test_eval_loaders_are_in_split_order(problem):
    loaders = ProblemLoaders(problem, SPEC)
    for split in ("retain", "forget", "val", "test", "train"):
        indices = problem.split(split)
        loader = loaders.loader(split, batch_size=4)
        assert len(loaders.dataset(split)) == len(indices)
        batches = list(loader)
        assert all(x.dtype == torch.float32 and y.dtype == torch.long for x, y in batches)
        assert len(batches[0][1]) == min(4, len(indices))
        inputs, labels = _collect(loader)
        assert inputs.shape == (len(indices), 3, 8, 8)
        assert labels.tolist() == problem.records.labels[indices].tolist()
        expected = torch.stack(
            [load_image(problem.records.abspath(i), SPEC) for i in indices]
        ).float()
        torch.testing.assert_close(inputs, SPEC.normalize(expected / 255))
        again = _collect(loaders.loader(split, batch_size=3))
        assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_train_loaders_are_seeded(problem):
    augment = AugmentConfig(hflip=0.5, crop_padding=1)
    loaders = ProblemLoaders(problem, SPEC, augment)

    def run(seed):
        return _collect(loaders.loader("retain", batch_size=4, train=True, seed=seed))

    first = run(0)
    again = run(0)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = run(1)
    assert len(other[1]) == len(first[1]) == len(problem.retain)
    assert not torch.equal(other[0], first[0])
    plain = ProblemLoaders(problem, SPEC)
    eval_order = _collect(plain.loader("retain", batch_size=4))[0]
    shuffled = [
        _collect(plain.loader("retain", batch_size=4, train=True, seed=s))[0] for s in (0, 1)
    ]
    for batch in shuffled:  # no augmentation: the same images, in another order
        assert not torch.equal(batch, eval_order)
        assert sorted(map(tuple, batch.flatten(1).tolist())) == sorted(
            map(tuple, eval_order.flatten(1).tolist())
        )
    assert not torch.equal(shuffled[0], shuffled[1])
    dropped = list(plain.loader("retain", batch_size=4, train=True, drop_last=True))
    assert [len(y) for _, y in dropped] == [4] * (len(problem.retain) // 4)


def test_multilabel_loader_gives_float_labels(tmp_path, write_image):
    paths = tuple(f"{i}.png" for i in range(4))
    for p in paths:
        write_image(tmp_path / p)
    records = ImageRecords(
        root=tmp_path,
        paths=paths,
        labels=np.array([[0, 1], [1, 1], [1, 0], [0, 0]]),
        identities=("a", "b", "c", "d"),
        class_names=("smile", "male"),
        task="multilabel",
    )
    problem = UnlearningProblem(
        records=records, retain=[0, 1], forget=[2], val=[], test=[3], unseen=[]
    )
    inputs, labels = _collect(ProblemLoaders(problem, SPEC).loader("retain", batch_size=8))
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert inputs.shape == (2, 3, 8, 8)


def test_loader_surfaces_unreadable_images(problem):
    loaders = ProblemLoaders(problem, SPEC)
    victim = problem.records.abspath(int(problem.test[0]))
    victim.write_bytes(b"not an image")
    with pytest.raises(DataError, match=victim.name):
        loaders.cache.preload(problem.test)


def test_sixteen_bit_grayscale_is_rescaled_not_clipped(tmp_path):
    wide = np.full((8, 8), 257 * 100, dtype=np.uint16)
    wide[0, 0], wide[0, 1], wide[0, 2] = 0, 257 * 200, 65535
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    image = load_image(path, InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,)))
    assert image[0, 0, :4].tolist() == [0, 200, 255, 100]


def test_training_loader_drops_a_last_batch_of_one_sample(make_records) -> None:
    records = make_records(people=5, per_person=5)  # 25 images
    problem = identity_split(
        records, {"forget": 1, "retain": 1, "val": 1, "test": 1, "unseen": 1}, seed=0
    )
    loaders = ProblemLoaders(problem, InputSpec(size=(8, 8)))
    sizes = [len(y) for _, y in loaders.loader("train", batch_size=9, train=True)]
    assert sizes == [9]  # 10 train images: 9 + a batch of 1 that BatchNorm cannot train on
    assert [len(y) for _, y in loaders.loader("train", batch_size=4, train=True)] == [4, 4, 2]
    assert [len(y) for _, y in loaders.loader("train", batch_size=9)] == [9, 1]  # eval keeps all
    with pytest.raises(ConfigError, match="batch size"):
        loaders.loader("train", batch_size=0)
