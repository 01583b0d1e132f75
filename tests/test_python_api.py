"""The Python API on plain DataLoaders: the README's example runs, batches of any shape work,
and the numbers are those of the protocol computed by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import dlfd
from dlfd.api import model_outputs
from dlfd.audit import AuditSettings
from dlfd.data.batches import as_pair
from dlfd.errors import ConfigError
from dlfd.metrics import mia_accuracy, per_sample_loss

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = 3


class DictImages(Dataset):
    """Samples as dicts, Hugging Face style, with an extra field dlfd must ignore."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"image": self.x[i], "label": self.y[i], "id": i}


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float()
    return x, y


def _dict_loader(n: int, seed: int, shuffle: bool = True) -> DataLoader:
    x, y = _data(n, seed)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(DictImages(x, y), batch_size=8, shuffle=shuffle, generator=g)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def _trained(loaders: list[DataLoader], seed: int) -> nn.Module:
    model = _net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        for loader in loaders:
            for batch in loader:
                x, y = as_pair(batch)
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setting() -> dict[str, object]:
    loaders = {
        "retain_dl": _dict_loader(64, 1),
        "forget_dl": _dict_loader(16, 2),
        "val_dl": _dict_loader(16, 3),
        "unseen_dl": _dict_loader(16, 4),
        "test_dl": _dict_loader(32, 5),
    }
    model = _trained([loaders["retain_dl"], loaders["forget_dl"]], seed=0)
    retrained = _trained([loaders["retain_dl"]], seed=1)
    return {**loaders, "model": model, "retrained": retrained}


def _readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_on_dict_batches(setting: dict[str, object]) -> None:
    namespace = dict(setting)
    code = _readme_example()
    for fast in ('method="dlfd", seed=0,', "retrained, loaders,"):  # test speed only
        assert fast in code
    code = code.replace('method="dlfd", seed=0,', 'method="dlfd", seed=0, steps=2,')
    code = code.replace("retrained, loaders,", "retrained, loaders, settings=FAST,")
    namespace["FAST"] = AuditSettings(n_boot=20)
    exec(compile(code, "README.md", "exec"), namespace)
    result, evaluation, audit = namespace["result"], namespace["evaluation"], namespace["audit"]
    assert result.info["features"] == "3:input"  # the hidden layer, after the ReLU
    assert not all(
        torch.equal(a, b)
        for a, b in zip(result.model.parameters(), setting["model"].parameters(), strict=True)
    )
    assert evaluation.sizes == {"retain": 64, "forget": 16, "unseen": 16, "test": 32}
    assert audit.verdict in ("pass", "inconclusive", "fail")
    record = audit.to_dict()
    assert record["verdict"] == audit.verdict and "attacks" in record and "utility" in record


def test_evaluate_is_the_protocol_computed_by_hand(setting: dict[str, object]) -> None:
    model = setting["model"]
    loaders = {split: setting[f"{split}_dl"] for split in ("retain", "forget", "unseen", "test")}
    evaluation = dlfd.evaluate(model, loaders)
    x_test, y_test = _data(32, 5)
    with torch.no_grad():
        test_acc = float((model(x_test).argmax(1) == y_test).float().mean())
        losses = {
            split: per_sample_loss(model(_data(n, seed)[0]), _data(n, seed)[1], "multiclass")
            for split, n, seed in (("forget", 16, 2), ("unseen", 16, 4))
        }
    assert evaluation.metrics["test_acc"] == pytest.approx(test_acc, abs=1e-12)
    # the attack's folds depend on the sample order: compare as sets of losses
    by_hand = mia_accuracy(np.sort(losses["forget"]), np.sort(losses["unseen"]))
    in_order = model_outputs({"m": model}, loaders)["m"]
    from_outputs = mia_accuracy(
        np.sort(
            per_sample_loss(in_order["forget"].logits, in_order["forget"].labels, "multiclass")
        ),
        np.sort(
            per_sample_loss(in_order["unseen"].logits, in_order["unseen"].labels, "multiclass")
        ),
    )
    assert from_outputs == pytest.approx(by_hand, abs=1e-9)
    assert evaluation.metrics["forget_acc"] == 1.0  # memorised
    assert evaluation.to_dict()["metrics"]["test_acc"] == evaluation.metrics["test_acc"]


def test_a_reference_equal_to_the_model_has_no_gap_even_with_shuffling(
    setting: dict[str, object],
) -> None:
    loaders = {split: setting[f"{split}_dl"] for split in ("retain", "forget", "unseen", "test")}
    evaluation = dlfd.evaluate(setting["model"], loaders, reference=setting["model"])
    assert evaluation.metrics["avg_gap"] == 0.0


def test_tuple_and_three_tuple_batches_give_the_same_numbers(setting: dict[str, object]) -> None:
    def tuple_loader(n: int, seed: int, extra: bool) -> DataLoader:
        x, y = _data(n, seed)
        parts = (x, y, torch.arange(n)) if extra else (x, y)
        return DataLoader(TensorDataset(*parts), batch_size=8)

    sizes = {"retain": (64, 1), "forget": (16, 2), "unseen": (16, 4), "test": (32, 5)}
    plain = {s: tuple_loader(n, seed, False) for s, (n, seed) in sizes.items()}
    triple = {s: tuple_loader(n, seed, True) for s, (n, seed) in sizes.items()}
    dicts = {s: _dict_loader(n, seed, shuffle=False) for s, (n, seed) in sizes.items()}
    model = setting["model"]
    numbers = [dlfd.evaluate(model, loaders).metrics for loaders in (plain, triple, dicts)]
    assert numbers[0] == numbers[1] == numbers[2]


def test_bad_loaders_and_batches_are_refused_clearly(setting: dict[str, object]) -> None:
    model = setting["model"]
    with pytest.raises(ConfigError, match="missing unseen"):
        dlfd.evaluate(model, {"forget": setting["forget_dl"], "test": setting["test_dl"]})
    loaders = {s: setting[f"{s}_dl"] for s in ("retain", "forget", "unseen", "test")}
    with pytest.raises(ConfigError, match="no label key 'target'"):
        dlfd.evaluate(model, loaders, batch_keys=("image", "target"))
    with pytest.raises(ConfigError, match=r"must be \(inputs, labels, \.\.\.\) or a dict"):
        as_pair(torch.zeros(3))
    with pytest.raises(ConfigError, match="needs a retain loader"):
        dlfd.audit_models(model, model, model, {**loaders, "retain": None})
    with pytest.raises(ConfigError, match="shadows need a dlfd scenario"):
        dlfd.audit_models(model, model, model, loaders, settings=AuditSettings(shadows=2))


def test_input_bounds_are_black_and_white_pixels() -> None:
    low, high = dlfd.input_bounds([0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    assert low.shape == (3, 1, 1)
    assert low.flatten().tolist() == [-1.0, -1.0, 0.0]
    assert high.flatten().tolist() == [1.0, 3.0, 1.0]
    with pytest.raises(ConfigError):
        dlfd.input_bounds([0.5], [0.0])


def test_the_audit_reports_its_bootstrap_progress(setting: dict[str, object]) -> None:
    loaders = {s: setting[f"{s}_dl"] for s in ("retain", "forget", "unseen", "test")}
    seen: list[tuple[int, int, str]] = []
    dlfd.audit_models(
        setting["model"],
        setting["model"],
        setting["retrained"],
        loaders,
        settings=AuditSettings(n_boot=10),
        on_progress=lambda done, total, phase: seen.append((done, total, phase)),
    )
    total = seen[0][1]
    assert [d for d, _, _ in seen] == list(range(1, total + 1))
    assert {t for _, t, _ in seen} == {total} and {p for _, _, p in seen} == {"bootstrap"}
