"""Every registered method honours the shared contract (tested by being registered).

Each method brings small, fast settings at registration (``test_settings``); invalid values
are derived from each method's declared constraints (:func:`dlfd.config.invalid_examples`).
Below: what this fixture's model lets the tests check beyond the contract (parameters a masked
method must leave untouched; the method that returns its input).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlfd.config import invalid_examples
from dlfd.errors import ConfigError
from dlfd.methods import get_method, list_methods, unlearn
from dlfd.models import create_model

#: Prefixes of the small_cnn parameters a masked method must not change.
UNCHANGED = {"cf_k": ("features.",), "eu_k": ("features.0.", "features.1.", "features.2.")}
#: Methods that return their input.
IDENTITY = {"original"}


def fast(key: str) -> dict[str, Any]:
    return dict(get_method(key).test_settings or {})


IMAGE = (3, 16, 16)
CLASSES = 3


def _loader(n: int, seed: int, task: str = "multiclass", shuffle: bool = True) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *IMAGE, generator=g)
    if task == "multiclass":
        y = torch.randint(0, CLASSES, (n,), generator=g)
    else:
        y = torch.randint(0, 2, (n, CLASSES), generator=g).float()
    return DataLoader(
        TensorDataset(x, y),
        batch_size=8,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", CLASSES)


def _run(key: str, task: str = "multiclass", seed: int = 0, **extra: Any):
    model = _model()
    result = unlearn(
        model,
        _loader(48, 1, task),
        _loader(16, 2, task),
        _loader(16, 3, task, shuffle=False),
        method=key,
        task=task,
        seed=seed,
        input_bounds=(torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0)),
        **{**fast(key), **extra},
    )
    return model, result


REGISTERED = list(list_methods())


@pytest.mark.parametrize("key", REGISTERED)
def test_every_method_brings_valid_fast_settings(key: str) -> None:
    spec = get_method(key)
    assert spec.test_settings is not None, f"register {key} with test_settings={{...}}"
    spec.make_params(spec.test_settings)


@pytest.mark.parametrize("key", REGISTERED)
def test_method_contract(key: str) -> None:
    before = {k: v.clone() for k, v in _model().state_dict().items()}
    model, result = _run(key)
    # the input model is never modified
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"{key} modified the input model's {name}"
    # same architecture, finite parameters
    out = result.model
    assert type(out) is type(model)
    assert {k: v.shape for k, v in out.state_dict().items()} == {
        k: v.shape for k, v in before.items()
    }
    for name, value in out.state_dict().items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), f"{key} produced non-finite {name}"
    changed = {
        name for name, p in out.named_parameters() if not torch.equal(p.detach(), before[name])
    }
    if key in IDENTITY:
        assert not changed
    else:
        assert changed, f"{key} changed no parameter"
    for prefix in UNCHANGED.get(key, ()):
        touched = sorted(n for n in changed if n.startswith(prefix))
        assert not touched, f"{key} changed parameters it must not: {touched}"
    assert not out.training
    record = result.to_dict()
    json.dumps(record)
    assert record["method"] == key and record["wall_s"] >= record["monitor_s"] >= 0


@pytest.mark.parametrize("key", REGISTERED)
def test_method_is_deterministic_on_cpu(key: str) -> None:
    _, first = _run(key, seed=5)
    _, second = _run(key, seed=5)
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{key}: {name} differs between two runs with seed 5"


@pytest.mark.parametrize("key", REGISTERED)
def test_method_rejects_invalid_hyperparameters(key: str) -> None:
    spec = get_method(key)
    examples = invalid_examples(spec.params_cls)
    constrained = {name for example in examples for name in example}
    assert {"select", "selection", "save_threshold"} <= constrained
    for example in examples:
        ((name, value),) = example.items()
        with pytest.raises(ConfigError, match=rf"\b{name}\b"):
            spec.make_params({name: value})
        with pytest.raises(ConfigError, match=rf"^{name} must be .*, got "):
            spec.params_cls(**example)
    with pytest.raises(ConfigError, match="unknown setting"):
        spec.make_params({"no_such_setting": 1})


@pytest.mark.parametrize("key", REGISTERED)
def test_method_multilabel_runs_or_is_refused(key: str) -> None:
    if "multilabel" in get_method(key).tasks:
        _, result = _run(key, task="multilabel")
        for value in result.model.state_dict().values():
            if value.is_floating_point():
                assert torch.isfinite(value).all()
    else:
        with pytest.raises(ConfigError, match="multilabel"):
            _run(key, task="multilabel")


def test_selection_returns_the_best_eligible_state() -> None:
    _, result = _run("finetune", epochs=3, save_threshold=0.5)
    accs = [r["val_acc"] for r in result.readings]
    assert len(accs) == 3
    best = max(range(3), key=lambda i: (accs[i], -i))
    assert f"epoch {best + 1}" in result.selected


def _selection_run(forget: DataLoader, val: DataLoader, **extra: Any):
    """finetune (2 epochs) from a model that, whatever its input, predicts class 0 with a
    logit margin of 20 (``fc`` weights 0, bias (20, 0, 0)); two epochs at lr 0.01 move that
    bias by well under 1, so a sample's loss is ~20 for labels 1 and 2 and ~0 for label 0."""
    model = _model()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([20.0, 0.0, 0.0]))
    return unlearn(
        model,
        _loader(48, 1),
        forget,
        val,
        method="finetune",
        seed=0,
        input_bounds=(torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0)),
        **{"epochs": 2, "lr": 0.01, **extra},
    )


def _fixed(inputs: torch.Tensor, label: int) -> DataLoader:
    return DataLoader(TensorDataset(inputs, torch.full((len(inputs),), label)), batch_size=8)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_selection_falls_back_to_last_state_when_none_is_eligible() -> None:
    # forget samples all have label 1 (loss ~20), validation samples label 0 (loss ~0): the
    # attack separates them perfectly at every epoch (accuracy 1, score 0.5 > 0.09), so no
    # state is eligible and the last one must be returned
    forget = _fixed(torch.randn(16, *IMAGE, generator=torch.Generator().manual_seed(2)), 1)
    val = _fixed(torch.randn(16, *IMAGE, generator=torch.Generator().manual_seed(3)), 0)
    result = _selection_run(forget, val, save_threshold=0.09)
    assert [r["forgetting_score"] for r in result.readings] == [0.5, 0.5]
    assert result.selected == "last state: no monitored state had a forgetting score <= 0.09"
    assert result.selection["states_examined"] == 2
    # the weights are those of the last state: the same training without selection
    unselected = _selection_run(forget, val, select=False)
    assert unselected.selected.startswith("last state")
    assert _same_weights(result.model, unselected.model)


def test_selection_keeps_an_eligible_state_even_at_threshold_zero() -> None:
    # forget and validation are the same all-zero image with the same label: every sample
    # has the same loss, the attack predicts one side for all and scores exactly 0.5, so every
    # state's forgetting score is exactly 0 and eligible at save_threshold=0; the validation
    # accuracy (label 0 is predicted) is 1 at both epochs and ties keep the first state
    zeros = torch.zeros(16, *IMAGE)
    result = _selection_run(_fixed(zeros, 0), _fixed(zeros.clone(), 0), save_threshold=0.0)
    assert [(r["forgetting_score"], r["val_acc"]) for r in result.readings] == [(0.0, 1.0)] * 2
    assert result.selected.startswith("best state at train epoch 1:")
    # not the last state: the kept epoch-1 weights were restored
    unselected = _selection_run(_fixed(zeros, 0), _fixed(zeros.clone(), 0), select=False)
    assert not _same_weights(result.model, unselected.model)


def test_unknown_method_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"known: .*finetune"):
        unlearn(_model(), _loader(8, 1), _loader(8, 2), method="x")
