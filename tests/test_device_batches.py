"""Batches transformed where the model runs (the GPU path of ``ProblemLoaders``), checked on
the CPU: the same seeded augmentation, batch for batch, as the loader's own collate step, with
or without worker processes."""

from __future__ import annotations

import pytest
import torch

from dlfd.data.loaders import OnDeviceLoader, ProblemLoaders, batch_device
from dlfd.data.transforms import AugmentConfig
from dlfd.errors import ConfigError
from dlfd.scenarios import get_scenario

AUGMENT = AugmentConfig(hflip=0.5, crop_padding=2, degrees=10.0, translate=0.1, scale=(0.9, 1.1))


@pytest.fixture(scope="module")
def problem_and_spec():
    scenario = get_scenario("orl-glasses", split_seed=0, data_root=None, image_size=16, options={})
    return scenario.problem, scenario.input_spec


def _batches(loaders: ProblemLoaders, **kw: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loaders.loader("train", batch_size=32, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, 2])
def test_on_device_batches_equal_the_collated_ones(problem_and_spec, workers: int) -> None:
    problem, spec = problem_and_spec
    plain = ProblemLoaders(problem, spec, AUGMENT)
    moved = ProblemLoaders(problem, spec, AUGMENT, device=torch.device("cpu"), workers=workers)
    for seed in (0, 1):
        expected = _batches(plain, train=True, seed=seed)
        loader = moved.loader("train", batch_size=32, train=True, seed=seed)
        assert isinstance(loader, OnDeviceLoader) and len(loader) == len(expected)
        got = list(loader)
        assert len(got) == len(expected)
        for (x, y), (ex, ey) in zip(got, expected, strict=True):
            assert torch.equal(x, ex) and torch.equal(y, ey)
    shard = moved.loader("train", batch_size=16, train=True, seed=0, shard=(1, 2))
    unmoved = plain.loader("train", batch_size=16, train=True, seed=0, shard=(1, 2))
    for (x, _), (ex, _) in zip(shard, unmoved, strict=True):
        assert torch.equal(x, ex)


def test_evaluation_batches_are_normalised_on_the_device(problem_and_spec) -> None:
    problem, spec = problem_and_spec
    a = list(ProblemLoaders(problem, spec).loader("test", batch_size=8))
    b = list(ProblemLoaders(problem, spec, device=torch.device("cpu")).loader("test", batch_size=8))
    assert all(torch.equal(x, bx) for (x, _), (bx, _) in zip(a, b, strict=True))
    assert a[0][0].dtype == torch.float32


def test_workers_need_an_on_device_transform(problem_and_spec) -> None:
    problem, spec = problem_and_spec
    with pytest.raises(ConfigError, match="workers need an on-device transform"):
        ProblemLoaders(problem, spec, AUGMENT, workers=2)


def test_only_a_gpu_run_moves_its_transform() -> None:
    assert batch_device(torch.device("cpu")) is None
    assert batch_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
