"""Data-parallel runs: 2 CPU processes (gloo) against the single-process run.

One spawn of two processes (module fixture) runs every distributed check and returns plain
results; the tests compare them with single-process runs made here. Tolerance: a data-parallel
step averages the gradients of two half-batch means, which equals the full-batch mean up to
float summation order, so weights agree to ~1e-7 per step; ``ATOL`` = 1e-5 leaves room for a
few dozen steps. The model has no BatchNorm (each process would normalise with its own half
batch) and no dropout (each process draws its own masks); the data are not augmented.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from dlfd.distributed import DistributedContext, ShardSampler, spawn_local
from dlfd.errors import ConfigError
from dlfd.methods import get_method, list_methods, unlearn
from dlfd.models import create_model
from dlfd.recipe import TrainRecipe
from dlfd.training.loop import make_optimizer, train_epochs

WORLD = 2
BATCH = 8  # the global batch; 4 per process
ATOL = 1e-5
CPU = torch.device("cpu")
IMAGE = (3, 8, 8)


class TinyNet(nn.Module):
    """Conv-ReLU-pool-linear: no BatchNorm, no dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, *IMAGE, generator=g), torch.randint(0, 3, (n,), generator=g)
    )


def _loader(
    n: int, seed: int, dist: DistributedContext | None, *, shuffle: bool = True
) -> DataLoader:
    """The single-process loader, or this rank's shard of it (same seeded order)."""
    dataset = _data(n, seed)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    if dist is None:
        return DataLoader(dataset, batch_size=BATCH, shuffle=shuffle, generator=generator)
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    sampler = ShardSampler(base, dist.rank, dist.world_size, drop_tail=shuffle)
    return DataLoader(
        dataset, batch_size=dist.per_rank_batch(BATCH), sampler=sampler, generator=generator
    )


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _train(dist: DistributedContext | None) -> dict[str, Any]:
    """Three epochs of the training loop (SGD, momentum, weight decay, cosine schedule)."""
    model = _tiny()
    recipe = TrainRecipe(model="tiny", epochs=3, batch_size=BATCH, lr=0.05)
    optimizer = make_optimizer(model, recipe)
    net = model if dist is None else dist.wrap(model)
    stats = list(
        train_epochs(
            net,
            lambda epoch: _loader(32, 100 + epoch, dist),
            optimizer,
            recipe,
            task="multiclass",
            seed=3,
            device=CPU,
            dist=dist,
        )
    )
    return {"state": _state(model), "loss": [s.loss for s in stats]}


def _unlearn(method: str, dist: DistributedContext | None, model: nn.Module, **hp: Any) -> dict:
    result = unlearn(
        model,
        _loader(32, 1, dist),
        _loader(16, 2, dist),
        _loader(16, 3, dist, shuffle=False),
        method=method,
        seed=4,
        device=CPU,
        input_bounds=(torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0)),
        dist=dist,
        **hp,
    )
    return {
        "state": _state(result.model),
        "readings": result.readings,
        "selected": result.selected,
        "info": result.info,
        "world_size": result.world_size,
    }


FINETUNE = {"epochs": 3, "lr": 0.05, "save_threshold": 0.5}
DLFD = {"steps": 3, "forget_threshold": 0.0, "monitor_every": 2}


def _every_method(dist: DistributedContext) -> dict[str, Any]:
    torch.set_num_threads(1)
    states = {}
    for key in list_methods():
        torch.manual_seed(0)
        model = create_model("small_cnn", 3)  # BatchNorm: statistics must be synced at the end
        states[key] = _unlearn(key, dist, model, **get_method(key).test_settings)["state"]
    return states


def _worker(dist: DistributedContext) -> dict[str, Any]:
    torch.set_num_threads(1)  # two processes on a small machine: no oversubscription
    results: dict[str, Any] = {
        "train": _train(dist),
        "finetune": _unlearn("finetune", dist, _tiny(), **FINETUNE),
        "dlfd": _unlearn("dlfd", dist, _tiny(), **DLFD),
    }
    try:
        dist.on_main(lambda: (_ for _ in ()).throw(ConfigError("only rank 0 saw this")))
    except ConfigError as exc:
        results["error"] = str(exc)
    try:
        _unlearn("dlfd", dist, _tiny(), mode="official", steps=1)
    except ConfigError as exc:
        results["official"] = str(exc)
    return results


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    return spawn_local(_worker, WORLD)


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), rtol=0, atol=atol), (
            f"{name}: max difference {(a[name].float() - b[name].float()).abs().max():.3g}"
        )


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between ranks"


def test_shards_cover_the_global_batches_and_one_shard_is_the_plain_loader() -> None:
    dataset = _data(21, 0)

    def order(world_size: int, rank: int, epochs: int = 3) -> list[list[int]]:
        generator = torch.Generator().manual_seed(7)
        sampler = ShardSampler(
            RandomSampler(dataset, generator=generator), rank, world_size, drop_tail=True
        )
        return [list(sampler) for _ in range(epochs)]

    plain = DataLoader(
        dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7)
    )
    g = torch.Generator().manual_seed(7)
    sampler = ShardSampler(RandomSampler(dataset, generator=g), 0, 1, drop_tail=True)
    sharded = DataLoader(dataset, batch_size=4, sampler=sampler, generator=g)
    for _ in range(3):
        for (x, y), (sx, sy) in zip(plain, sharded, strict=True):
            assert torch.equal(x, sx) and torch.equal(y, sy)
    full = order(1, 0)
    for epoch in range(3):
        shards = [order(WORLD, r)[epoch] for r in range(WORLD)]
        assert len(shards[0]) == len(shards[1]) == 10  # 21 - 21 % 2, evenly
        interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
        assert interleaved == full[epoch][:20]


def test_problem_loader_shard_of_one_is_the_plain_loader() -> None:
    from dlfd.data.loaders import ProblemLoaders
    from dlfd.scenarios import get_scenario

    scenario = get_scenario("orl-glasses", split_seed=0, image_size=8)
    loaders = ProblemLoaders(scenario.problem, scenario.input_spec, scenario.recipe.augment)
    for train in (True, False):
        plain = loaders.loader("forget", batch_size=8, train=train, seed=5)
        sharded = loaders.loader("forget", batch_size=8, train=train, seed=5, shard=(0, 1))
        for (x, y), (sx, sy) in zip(plain, sharded, strict=True):
            assert torch.equal(x, sx) and torch.equal(y, sy)
    halves = [
        loaders.loader("retain", batch_size=4, train=True, seed=5, shard=(r, WORLD))
        for r in range(WORLD)
    ]
    assert len(halves[0]) == len(halves[1])


def test_batch_not_divisible_by_processes_is_refused() -> None:
    context = DistributedContext(rank=0, world_size=WORLD, local_rank=0, device=CPU)
    assert context.per_rank_batch(8) == 4
    with pytest.raises(ConfigError, match="not divisible by the 2 processes"):
        context.per_rank_batch(9)


def test_training_on_two_processes_matches_one(ranks: list[dict[str, Any]]) -> None:
    single = _train(None)
    for rank in ranks:
        _assert_close(rank["train"]["state"], single["state"], ATOL)
        assert rank["train"]["loss"] == pytest.approx(single["loss"], abs=ATOL)


def test_finetune_on_two_processes_matches_one(ranks: list[dict[str, Any]]) -> None:
    single = _unlearn("finetune", None, _tiny(), **FINETUNE)
    for rank in ranks:
        _assert_close(rank["finetune"]["state"], single["state"], ATOL)
        assert rank["finetune"]["selected"] == single["selected"]
        assert rank["finetune"]["world_size"] == WORLD
        for got, want in zip(rank["finetune"]["readings"], single["readings"], strict=True):
            assert got["val_acc"] == want["val_acc"]
            assert got["forgetting_score"] == pytest.approx(want["forgetting_score"], abs=1e-9)


def test_dlfd_on_two_processes_agrees_across_ranks_and_with_one(
    ranks: list[dict[str, Any]],
) -> None:
    first, second = (rank["dlfd"] for rank in ranks)
    _assert_equal(first["state"], second["state"])
    assert first["info"]["synthesis_batches"] == second["info"]["synthesis_batches"]
    assert first["readings"] == second["readings"] and first["selected"] == second["selected"]
    assert first["info"]["synthesis_batches"]  # it did synthesise
    single = _unlearn("dlfd", None, _tiny(), **DLFD)
    assert first["info"]["synthesis_batches"] == single["info"]["synthesis_batches"]
    _assert_close(first["state"], single["state"], ATOL)


@pytest.mark.slow
def test_every_method_ends_with_the_same_state_on_every_rank() -> None:
    first, second = spawn_local(_every_method, WORLD)
    assert set(first) == set(list_methods())
    for key, state in first.items():
        _assert_equal(state, second[key])


def test_an_error_on_rank_zero_is_raised_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    assert [rank["error"] for rank in ranks] == ["only rank 0 saw this"] * WORLD
    for rank in ranks:
        assert "cannot run data-parallel" in rank["official"]


class _Stop(Exception):
    """Raised by every rank after an epoch: an interruption."""


def _train_orl(dist: DistributedContext, out: str, stop_after: int | None) -> dict[str, Any]:
    from dlfd.config import apply_overrides
    from dlfd.scenarios import get_scenario
    from dlfd.training import train_checkpoint

    torch.set_num_threads(1)
    scenario = get_scenario("orl-glasses", split_seed=0, image_size=16)
    recipe = apply_overrides(
        scenario.recipe, {"model": "small_cnn", "epochs": "3", "batch_size": "32"}
    )

    def stop(stats: Any) -> None:
        if stats.epoch == stop_after:
            raise _Stop

    try:
        result = train_checkpoint(
            scenario,
            role="original",
            out=out,
            seed=0,
            device=CPU,
            recipe=recipe,
            resume_every_s=0,
            on_epoch_end=stop,
            dist=dist,
        )
    except _Stop:
        return {"stopped": True}
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    return {"resumed_from_epoch": result.resumed_from_epoch, "history": history}


@pytest.mark.slow
def test_interrupted_two_process_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    from dlfd.checkpoint import load_checkpoint

    straight, interrupted = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    spawn_local(_train_orl, WORLD, straight, None)
    assert spawn_local(_train_orl, WORLD, interrupted, 2) == [{"stopped": True}] * WORLD
    first, second = spawn_local(_train_orl, WORLD, interrupted, None)
    assert first == second and first["resumed_from_epoch"] == 2
    _assert_equal(
        load_checkpoint(straight)[0].state_dict(), load_checkpoint(interrupted)[0].state_dict()
    )


def _torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    command = [torchrun, "--standalone", f"--nproc_per_node={WORLD}", "-m", "dlfd", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("wrote ") == 1  # rank 0 alone speaks
    return done


TRAIN = ["--image-size", "16", "--set", "model=small_cnn", "--set", "epochs=1", "--device", "cpu"]


def test_dlfd_train_under_torchrun_writes_one_loadable_checkpoint(tmp_path: Path) -> None:
    from dlfd.checkpoint import load_checkpoint

    out = tmp_path / "model.safetensors"
    _torchrun("train", "--out", str(out), *TRAIN, "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    model, meta = load_checkpoint(out)
    assert meta.extra["world_size"] == WORLD and len(meta.extra["history"]) == 1
    for value in model.state_dict().values():
        assert not value.is_floating_point() or torch.isfinite(value).all()


@pytest.mark.slow
def test_dlfd_unlearn_under_torchrun_writes_one_result(tmp_path: Path) -> None:
    import json

    from dlfd.cli import main

    original = tmp_path / "original.safetensors"
    with pytest.raises(SystemExit) as done:
        main(["train", "--out", str(original), *TRAIN, "--quiet"])
    assert done.value.code in (None, 0)
    out = tmp_path / "unlearned.safetensors"
    args = ["--method", "dlfd", "--set", "steps=2", "--device", "cpu", "--quiet"]
    _torchrun("unlearn", "--model", str(original), "--out", str(out), *args)
    record = json.loads(out.with_suffix(".json").read_text())["extra"]["method"]
    assert record["world_size"] == WORLD and record["info"]["synthesis_batches"]
