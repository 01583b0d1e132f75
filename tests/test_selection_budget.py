"""Same budget, no peeking: every result records what its selection examined and read, and
``selection=val_only`` chooses by validation accuracy alone, for every method."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlfd.bench import BenchPlan, resolve_methods, split_settings, validate_plan
from dlfd.bench.plan import CHECKPOINT_ROWS
from dlfd.checkpoint import CheckpointMeta, load_checkpoint, sidecar_path
from dlfd.data.transforms import InputSpec
from dlfd.errors import ConfigError
from dlfd.methods import MethodParams, get_method, list_methods, unlearn
from dlfd.methods.base import SELECTION_RULES, MonitorReading, Selector
from dlfd.models import create_model
from dlfd.runs.method_run import save_unlearned

IMAGE = (3, 16, 16)
CLASSES = 3


def _loader(n: int, seed: int, shuffle: bool = True) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *IMAGE, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=8,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def _run(method: str = "finetune", *, val: bool = True, **hparams: Any):
    torch.manual_seed(0)
    model = create_model("small_cnn", CLASSES)
    return unlearn(
        model,
        _loader(48, 1),
        _loader(16, 2),
        _loader(16, 3, shuffle=False) if val else None,
        method=method,
        seed=0,
        input_bounds=(torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0)),
        **hparams,
    )


def _best_index(readings: list[dict[str, Any]]) -> int:
    """The first reading with the highest validation accuracy (the selector keeps the first)."""
    accs = [r["val_acc"] for r in readings]
    return max(range(len(accs)), key=lambda i: (accs[i], -i))


def test_default_rule_records_every_offered_state_and_reading_forget() -> None:
    result = _run(epochs=3, lr=0.01, save_threshold=0.5)
    assert len(result.readings) == 3  # one offered state per epoch
    assert result.selection == {
        "rule": "forget_and_val",
        "states_examined": 3,
        "read_forget": True,
        "save_threshold": 0.5,
        "method_reads_forget": False,
    }
    assert all(math.isfinite(r["forgetting_score"]) for r in result.readings)
    record = result.to_dict()
    json.dumps(record)
    assert record["selection"] == result.selection


def test_val_only_picks_best_val_accuracy_without_reading_forget() -> None:
    # lr 0.3 on this tiny problem: epoch 1 has the best validation accuracy, but only epoch 2's
    # forgetting score is <= 0.09, so the two rules choose different states
    default = _run(epochs=3, lr=0.3)
    result = _run(epochs=3, lr=0.3, selection="val_only")
    assert result.params["selection"] == "val_only"
    assert result.selection["rule"] == "val_only"
    assert result.selection["read_forget"] is False
    assert result.selection["method_reads_forget"] is False
    assert result.selection["states_examined"] == len(result.readings) == 3
    assert result.selection["save_threshold"] is None
    # the forget set was never scored: no forgetting score, no attack accuracy
    assert all(r["forgetting_score"] is None and r["mia_acc"] is None for r in result.readings)
    json.dumps(result.to_dict())
    # the training is the same as under the default rule: the rules differ in the choice only
    assert [r["val_acc"] for r in result.readings] == [r["val_acc"] for r in default.readings]
    assert result.trace == default.trace
    best = _best_index(result.readings)
    assert result.selected.startswith(f"best state at {result.readings[best]['where']}:")
    assert "val_only" in result.selected
    assert best < 2 and result.selected != default.selected


def test_val_only_returns_the_weights_of_the_best_state() -> None:
    result = _run(epochs=3, lr=0.3, selection="val_only")
    # every score is <= 0.5, so the default rule with save_threshold=0.5 chooses among all
    # states by validation accuracy too: the same training, the same choice, the same weights
    everything_eligible = _run(epochs=3, lr=0.3, save_threshold=0.5)
    best = _best_index(result.readings)
    assert everything_eligible.selected.startswith(
        f"best state at {result.readings[best]['where']}:"
    )
    for a, b in zip(
        result.model.state_dict().values(),
        everything_eligible.model.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def _reading(where: str, score: float, acc: float) -> MonitorReading:
    return MonitorReading(where, score, acc, 0.5 + score, 0.0)


@pytest.mark.parametrize("rule", SELECTION_RULES)
def test_selector_counts_states_and_applies_its_rule(rule: str) -> None:
    model = torch.nn.Linear(2, 1)
    states = []
    readings = [_reading("a", 0.3, 0.9), _reading("b", 0.01, 0.6), _reading("c", 0.02, 0.7)]
    selector = Selector(0.09, rule)
    for k, reading in enumerate(readings):
        with torch.no_grad():
            model.weight.fill_(float(k))
        states.append(model.weight.detach().clone())
        selector.consider(model, reading)
    selector.restore(model)
    expected = 0 if rule == "val_only" else 2  # "a" is best but its score is above 0.09
    assert torch.equal(model.weight, states[expected])
    assert selector.record()["states_examined"] == 3
    assert selector.record()["read_forget"] is (rule == "forget_and_val")


def test_no_selection_records_none() -> None:
    for result in (_run(epochs=1, lr=0.01, val=False), _run(epochs=1, lr=0.01, select=False)):
        assert result.selection == {
            "rule": "none",
            "states_examined": 0,
            "read_forget": False,
            "save_threshold": None,
            "method_reads_forget": False,
        }


def test_dlfd_reads_the_forget_score_itself_under_val_only() -> None:
    result = _run("dlfd", steps=1, selection="val_only")
    selection = result.selection
    assert selection["rule"] == "val_only" and selection["read_forget"] is False
    assert selection["method_reads_forget"] is True  # its dynamic switch, not the selection
    assert selection["states_examined"] == len(result.readings) > 0
    # its monitor computed the score for the switch; the selection ignored it
    assert all(r["forgetting_score"] is not None for r in result.readings)
    best = _best_index(result.readings)
    assert result.selected.startswith(f"best state at {result.readings[best]['where']}:")
    default = _run("dlfd", steps=1)
    assert default.selection["read_forget"] is True
    assert default.selection["method_reads_forget"] is True


@pytest.mark.parametrize("value", ["bogus", "VAL_ONLY", ""])
def test_invalid_selection_is_refused_naming_the_choices(value: str) -> None:
    with pytest.raises(ConfigError, match=r"selection.*forget_and_val or val_only"):
        get_method("finetune").make_params({"selection": value})
    with pytest.raises(ConfigError, match=r"forget_and_val or val_only"):
        MethodParams(selection=value)
    with pytest.raises(ConfigError, match=r"forget_and_val or val_only"):
        _run(epochs=1, selection=value)


@pytest.mark.parametrize("key", sorted(list_methods()))
def test_every_method_accepts_both_rules(key: str) -> None:
    spec = get_method(key)
    assert spec.make_params().selection == "forget_and_val"
    assert spec.make_params({"selection": "val_only"}).selection == "val_only"


def test_bench_plan_applies_all_selection_to_every_method() -> None:
    recipe, settings = split_settings({"all.selection": "val_only"})
    methods = resolve_methods(["all"])
    plan = BenchPlan(
        dataset="mufac", out=Path("unused"), methods=methods, recipe=recipe, settings=settings
    )
    validate_plan(plan)
    trained = [m for m in methods if m not in CHECKPOINT_ROWS]
    assert set(trained) == set(list_methods()) - set(CHECKPOINT_ROWS)
    for method in trained:
        assert plan.method_params(method).selection == "val_only", method
    _, bad = split_settings({"all.selection": "bogus"})
    with pytest.raises(ConfigError, match=r"forget_and_val or val_only"):
        validate_plan(BenchPlan(dataset="mufac", out=Path("unused"), methods=methods, settings=bad))


def test_unlearned_sidecar_carries_the_selection(tmp_path: Path) -> None:
    result = _run(epochs=2, lr=0.01, selection="val_only")
    spec = InputSpec(size=(16, 16), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    original = CheckpointMeta("small_cnn", CLASSES, "multiclass", spec, role="original")
    out = tmp_path / "unlearned.safetensors"
    save_unlearned(result, out, original, source="original.safetensors")
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["role"] == "unlearned"
    assert sidecar["extra"]["selection"] == result.selection
    assert sidecar["extra"]["method"]["selection"] == result.selection
    assert sidecar["extra"]["selection"]["rule"] == "val_only"
    assert sidecar["extra"]["selection"]["states_examined"] == 2
    assert sidecar["extra"]["selection"]["read_forget"] is False
    _, meta = load_checkpoint(out)
    assert meta.extra["selection"] == result.selection
