"""Every registered method honours the shared contract (tested by being registered).

The settings table below gives each method small, fast hyperparameters, one invalid value and
(for masked methods) the parameters it must leave untouched. A registered method missing from
the table fails :func:`test_every_registered_method_has_settings`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlfd.errors import ConfigError
from dlfd.methods import get_method, list_methods, unlearn
from dlfd.models import create_model

#: key -> {"fast": hparams for a quick run, "invalid": one bad value, "unchanged": prefixes of
#: parameter names the method must not change, "identity": True if it returns the input}.
SETTINGS: dict[str, dict[str, Any]] = {
    "original": {"fast": {}, "invalid": {"save_threshold": 0.9}, "identity": True},
    "retrain": {
        "fast": {
            "epochs": 1,
            "lr": 0.01,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "cosine",
        },
        "invalid": {"epochs": 0},
    },
    "finetune": {"fast": {"epochs": 2, "lr": 0.01}, "invalid": {"lr": -1.0}},
    "cf_k": {
        "fast": {"epochs": 1, "lr": 0.01, "k": 1},
        "invalid": {"k": 0},
        "unchanged": ("features.",),
    },
    "eu_k": {
        "fast": {"epochs": 1, "lr": 0.01, "k": 2},
        "invalid": {"k": 0},
        "unchanged": ("features.0.", "features.1.", "features.2."),
    },
    "neggrad": {"fast": {"epochs": 1, "lr": 0.01}, "invalid": {"lr": 0.0}},
    "neggrad_plus": {"fast": {"epochs": 1, "lr": 0.01}, "invalid": {"beta": -1.0}},
    "random_label": {"fast": {"epochs": 1, "lr": 0.01}, "invalid": {"epochs": 0}},
    "bad_teacher": {"fast": {"epochs": 1}, "invalid": {"temperature": 0.0}},
    "unsir": {"fast": {"noise_steps": 2}, "invalid": {"noise_steps": 0}},
    "scrub": {"fast": {"epochs": 1, "lr": 0.01}, "invalid": {"temperature": -1.0}},
    "ssd": {"fast": {"alpha": 2.0}, "invalid": {"alpha": 0.0}},
    "salun": {"fast": {"epochs": 1, "lr": 0.01}, "invalid": {"sparsity": 1.5}},
    "dlfd": {"fast": {"steps": 2}, "invalid": {"steps": 0}},
}

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
        **{**SETTINGS[key]["fast"], **extra},
    )
    return model, result


REGISTERED = list(list_methods())


def test_every_registered_method_has_settings() -> None:
    missing = sorted(set(REGISTERED) - set(SETTINGS))
    assert not missing, f"add contract-test settings for: {missing}"


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
    if SETTINGS[key].get("identity"):
        assert not changed
    else:
        assert changed, f"{key} changed no parameter"
    for prefix in SETTINGS[key].get("unchanged", ()):
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
    ((name, value),) = SETTINGS[key]["invalid"].items()
    with pytest.raises(ConfigError, match=name):
        spec.make_params({name: value})
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


def test_selection_falls_back_to_last_state_when_none_is_eligible() -> None:
    _, result = _run("finetune", save_threshold=0.0, monitor_samples=16)
    eligible = [r for r in result.readings if r["forgetting_score"] == 0.0]
    assert result.selected.startswith("best" if eligible else "last state")


def test_unknown_method_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"known: .*finetune"):
        unlearn(_model(), _loader(8, 1), _loader(8, 2), method="x")
