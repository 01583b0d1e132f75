"""Training: schedules, determinism, bit-identical resume, caching, and NaN detection."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dlfd.checkpoint import load_checkpoint, read_meta
from dlfd.config import apply_overrides
from dlfd.errors import ConfigError
from dlfd.scenarios import Scenario, get_scenario
from dlfd.training import NonFiniteLossError, TrainRecipe, learning_rate, train_checkpoint
from dlfd.training.loop import EpochStats, train_epochs
from dlfd.training.resume import ResumePaths

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return get_scenario("orl-glasses", split_seed=0, image_size=32)


def _recipe(scenario: Scenario, epochs: int = 2) -> TrainRecipe:
    return apply_overrides(
        scenario.recipe, {"model": "small_cnn", "epochs": str(epochs), "batch_size": "64"}
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


def test_cosine_schedule_by_hand() -> None:
    recipe = TrainRecipe(epochs=4, lr=0.1)
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [learning_rate(recipe, e) for e in range(4)] == pytest.approx(expected)
    assert learning_rate(TrainRecipe(schedule="constant", lr=0.3), 7) == 0.3


def test_training_learns_and_records_its_provenance(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "orig.safetensors"
    result = train_checkpoint(
        scenario, role="original", out=out, seed=0, device=CPU, recipe=_recipe(scenario, epochs=3)
    )
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    meta = read_meta(out)
    assert meta.role == "original" and meta.extra["n_train"] == 240
    assert meta.forget_sha256 == scenario.problem.forget_sha256
    assert meta.split_seed == 0 and meta.train_seed == 0 and meta.arch == "small_cnn"
    assert not ResumePaths.for_checkpoint(out).meta.exists()


def test_retrained_reference_sees_only_retain(scenario: Scenario, tmp_path: Path) -> None:
    result = train_checkpoint(
        scenario,
        role="retrained",
        out=tmp_path / "r.safetensors",
        seed=0,
        device=CPU,
        recipe=_recipe(scenario, epochs=1),
    )
    assert result.meta.extra == result.meta.extra | {"train_split": "retain", "n_train": 180}


def test_same_seed_same_weights_different_seed_different(
    scenario: Scenario, tmp_path: Path
) -> None:
    recipe = _recipe(scenario, epochs=1)
    runs = [
        train_checkpoint(
            scenario,
            role="original",
            out=tmp_path / f"{i}.safetensors",
            seed=s,
            device=CPU,
            recipe=recipe,
        ).path
        for i, s in enumerate([5, 5, 6])
    ]
    a, b, c = (_weights(p) for p in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_after_interruption_is_bit_identical(scenario: Scenario, tmp_path: Path) -> None:
    # resnet18_mlp has dropout and BatchNorm: both must continue exactly as without the crash
    recipe = apply_overrides(_recipe(scenario, epochs=3), {"model": "resnet18_mlp"})
    straight = train_checkpoint(
        scenario, role="original", out=tmp_path / "a.safetensors", seed=1, device=CPU, recipe=recipe
    ).path

    class Crash(Exception):
        pass

    def crash_after_first(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise Crash

    out = tmp_path / "b.safetensors"
    with pytest.raises(Crash):
        train_checkpoint(
            scenario,
            role="original",
            out=out,
            seed=1,
            device=CPU,
            recipe=recipe,
            resume_every_s=0,
            on_epoch_end=crash_after_first,
        )
    assert not out.exists() and ResumePaths.for_checkpoint(out).meta.exists()
    resumed = train_checkpoint(
        scenario, role="original", out=out, seed=1, device=CPU, recipe=recipe
    )
    assert resumed.resumed_from_epoch == 1
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = _weights(straight), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_checkpoint_is_reused_and_never_silently_overwritten(
    scenario: Scenario, tmp_path: Path
) -> None:
    out = tmp_path / "o.safetensors"
    recipe = _recipe(scenario, epochs=1)
    first = train_checkpoint(scenario, role="original", out=out, seed=0, device=CPU, recipe=recipe)
    again = train_checkpoint(scenario, role="original", out=out, seed=0, device=CPU, recipe=recipe)
    assert again.reused and again.meta.weights_sha256 == first.meta.weights_sha256
    with pytest.raises(ConfigError, match="--force"):
        train_checkpoint(scenario, role="original", out=out, seed=1, device=CPU, recipe=recipe)
    forced = train_checkpoint(
        scenario, role="original", out=out, seed=1, device=CPU, recipe=recipe, force=True
    )
    assert not forced.reused and forced.meta.train_seed == 1


def test_non_finite_loss_stops_training_with_a_clear_message() -> None:
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w * torch.full((x.shape[0], 2), float("nan"))

    model = Broken()
    loader = [(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))]
    recipe = TrainRecipe(epochs=1, lr=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 1 \(lr=0.1\)"):
        list(
            train_epochs(
                model,
                lambda e: loader,
                optimizer,
                recipe,  # type: ignore[arg-type]
                task="multiclass",
                seed=0,
                device=CPU,
            )
        )


def test_unknown_role_is_refused(scenario: Scenario, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="role"):
        train_checkpoint(
            scenario,
            role="teacher",
            out=tmp_path / "x.safetensors",  # type: ignore[arg-type]
            seed=0,
            device=CPU,
        )
