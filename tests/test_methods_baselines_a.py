"""What makes each of retrain, cf_k, eu_k, neggrad, neggrad_plus, random_label and salun itself.

Tiny data (8x8 images, a few batches, unshuffled so that two runs see the same batches) and
``small_cnn``, whose blocks are features.0-3 and fc.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dlfd.methods.common as random_label_module  # the random-label loop lives there
from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods import unlearn
from dlfd.methods.salun import saliency_mask
from dlfd.models import create_model
from dlfd.recipe import TrainRecipe

IMAGE = (3, 8, 8)
CLASSES = 4


def _loader(n: int, seed: int, batch_size: int = 8, task: str = "multiclass") -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *IMAGE, generator=g)
    if task == "multiclass":
        y = torch.randint(0, CLASSES, (n,), generator=g)
    else:
        y = torch.randint(0, 2, (n, CLASSES), generator=g).float()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", CLASSES)


def _run(method: str, model: nn.Module | None = None, **hparams: Any):
    model = model if model is not None else _model()
    retain = hparams.pop("retain", None) or _loader(16, 1)
    forget = hparams.pop("forget", None) or _loader(8, 2, batch_size=4)
    result = unlearn(model, retain, forget, method=method, seed=3, **hparams)
    return model, result


def _changed(before: nn.Module, after: nn.Module) -> set[str]:
    old = before.state_dict()
    return {
        name
        for name, value in after.state_dict().items()
        if not torch.equal(value, old[name]) and not name.endswith("num_batches_tracked")
    }


@torch.no_grad()
def _mean_loss(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    losses = [task_loss(model(x), y, "multiclass", reduction="sum") for x, y in loader]
    return float(torch.stack(losses).sum()) / len(loader.dataset)


# ----------------------------------------------------------------------------- retrain


def test_retrain_without_recipe_or_settings_names_what_to_pass() -> None:
    with pytest.raises(ConfigError, match=r"epochs=.*lr=.*recipe"):
        _run("retrain")
    with pytest.raises(ConfigError, match=r"momentum=.*schedule=") as raised:
        _run("retrain", epochs=1, lr=0.01)
    assert "epochs=" not in str(raised.value)


def test_retrain_takes_missing_settings_from_the_recipe() -> None:
    recipe = TrainRecipe(model="small_cnn", epochs=2, lr=0.05, momentum=0.5, schedule="constant")
    _, result = _run("retrain", recipe=recipe, lr=0.01)
    assert [r["epoch"] for r in result.trace] == [1, 2]
    info = result.info
    assert (info["epochs"], info["lr"], info["momentum"], info["schedule"]) == (
        2,
        0.01,
        0.5,
        "constant",
    )
    assert info["weight_decay"] == recipe.weight_decay
    assert info["from_recipe"] == ["epochs", "momentum", "weight_decay", "schedule"]


def test_retrain_starts_from_a_fresh_initialisation() -> None:
    model, result = _run(
        "retrain", epochs=1, lr=1e-12, momentum=0.0, weight_decay=0.0, schedule="constant"
    )
    # with a negligible learning rate the result is the re-initialised network: every weight
    # tensor (convolutions and fc; BatchNorm starts at ones/zeros either way) is new
    weights = [n for n, p in model.named_parameters() if p.dim() > 1]
    assert weights == [f"features.{i}.0.weight" for i in range(4)] + ["fc.weight"]
    new = dict(result.model.named_parameters())
    for name, old in model.named_parameters():
        if old.dim() > 1:
            assert not torch.allclose(new[name], old, atol=1e-3), name
    assert result.info["reinitialised_modules"] == 9  # 4 conv, 4 BatchNorm, 1 linear


def test_retrain_refuses_parameters_it_cannot_reinitialise() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * self.scale

    with pytest.raises(ConfigError, match="scale"):
        _run(
            "retrain",
            model=Scaled(),
            epochs=1,
            lr=0.01,
            momentum=0.0,
            weight_decay=0.0,
            schedule="constant",
        )


# ----------------------------------------------------------------------------- cf_k / eu_k


def test_cf_k_trains_only_the_last_blocks_and_keeps_frozen_statistics() -> None:
    model, result = _run("cf_k", k=2, lr=0.05, epochs=1)
    changed = _changed(model, result.model)
    assert changed
    assert all(name.startswith(("features.3.", "fc.")) for name in changed), changed
    # frozen blocks run in eval mode, so their BatchNorm statistics are untouched
    assert result.info["trained_blocks"] == ["features.3", "fc"]
    # the reference code's behaviour (whole model in train mode) moves them
    _, legacy = _run("cf_k", k=2, lr=0.05, epochs=1, frozen_train_mode=True)
    assert "features.0.1.running_mean" in _changed(model, legacy.model)
    assert all(p.requires_grad for p in result.model.parameters())


def test_cf_k_default_is_the_head_only() -> None:
    model, result = _run("cf_k", lr=0.05, epochs=1)
    assert result.info["trained_blocks"] == ["fc"]
    assert _changed(model, result.model) <= {"fc.weight", "fc.bias"}


def test_cf_k_refuses_k_larger_than_the_model() -> None:
    with pytest.raises(ConfigError, match="k=6 but the model has only 5 blocks"):
        _run("cf_k", k=6)


def test_eu_k_reinitialises_the_last_blocks_then_trains_only_them() -> None:
    model, result = _run("eu_k", k=2, lr=1e-12, epochs=1)
    out = result.model
    changed = _changed(model, out)
    assert all(name.startswith(("features.3.", "fc.")) for name in changed), changed
    # with a negligible learning rate, what changed is the re-initialisation itself
    assert not torch.allclose(out.fc.weight, model.fc.weight, atol=1e-3)
    assert not torch.allclose(out.features[3][0].weight, model.features[3][0].weight, atol=1e-3)
    assert torch.equal(out.features[2][0].weight, model.features[2][0].weight)
    assert result.info["trained_blocks"] == ["features.3", "fc"]


def test_eu_k_and_cf_k_differ_only_by_the_reinitialisation() -> None:
    model, cf = _run("cf_k", lr=1e-12, epochs=1)
    _, eu = _run("eu_k", lr=1e-12, epochs=1)
    assert torch.allclose(cf.model.fc.weight, model.fc.weight, atol=1e-9)
    assert not torch.allclose(eu.model.fc.weight, model.fc.weight, atol=1e-3)


# ----------------------------------------------------------------------------- neggrad


def test_neggrad_raises_the_forget_loss() -> None:
    forget = _loader(8, 2, batch_size=4)
    model, result = _run("neggrad", forget=forget, lr=0.01, epochs=2)
    assert _mean_loss(result.model, forget) > _mean_loss(model, forget) + 0.1
    assert result.trace[0]["loss"] < 0  # the minimised loss is minus the task loss


def test_neggrad_trains_on_forget_only() -> None:
    # one epoch over a 2-batch forget set is 2 steps, whatever the retain set
    steps: list[tuple[int, int, str]] = []
    unlearn(
        _model(),
        _loader(64, 1),
        _loader(8, 2, batch_size=4),
        method="neggrad",
        seed=3,
        on_progress=lambda done, total, phase: steps.append((done, total, phase)),
    )
    assert steps == [(1, 2, "neggrad"), (2, 2, "neggrad")]


# ----------------------------------------------------------------------------- neggrad_plus


def test_neggrad_plus_step_is_retain_loss_minus_beta_forget_loss() -> None:
    retain = _loader(8, 1)
    forget = _loader(4, 2, batch_size=4)
    beta, lr = 0.7, 0.1
    model, result = _run(
        "neggrad_plus",
        retain=retain,
        forget=forget,
        beta=beta,
        lr=lr,
        epochs=1,
        momentum=0.0,
        weight_decay=0.0,
    )
    by_hand = copy.deepcopy(model).train()
    (xr, yr), (xf, yf) = next(iter(retain)), next(iter(forget))
    loss = task_loss(by_hand(xr), yr, "multiclass") - beta * task_loss(
        by_hand(xf), yf, "multiclass"
    )
    grads = torch.autograd.grad(loss, list(by_hand.parameters()))
    for (name, p), g, q in zip(
        by_hand.named_parameters(), grads, result.model.parameters(), strict=True
    ):
        assert torch.allclose(p - lr * g, q, atol=1e-6), name
    assert result.trace[0]["loss"] == pytest.approx(float(loss.detach()), rel=1e-5)


def test_neggrad_plus_with_beta_zero_is_finetuning() -> None:
    settings = {"lr": 0.05, "epochs": 2, "momentum": 0.9, "weight_decay": 5e-4}
    _, plus = _run("neggrad_plus", beta=0.0, **settings)
    _, finetune = _run("finetune", schedule="constant", **settings)
    for (name, a), b in zip(
        plus.model.named_parameters(), finetune.model.parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_neggrad_plus_cycles_the_forget_set_along_the_retain_set() -> None:
    seen: list[int] = []
    forget = _loader(4, 2, batch_size=2)  # 2 batches against 4 retain batches per epoch

    class Counting(DataLoader):
        def __iter__(self):
            seen.append(1)
            return super().__iter__()

    counting = Counting(forget.dataset, batch_size=2, shuffle=False)
    _run("neggrad_plus", retain=_loader(32, 1), forget=counting, epochs=1)
    assert len(seen) == 2


# ----------------------------------------------------------------------------- random_label


def test_random_label_never_uses_the_true_label_and_varies(monkeypatch) -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = random_label_module.random_wrong_labels

    def spy(labels, num_outputs, task, generator):
        wrong = original(labels, num_outputs, task, generator)
        calls.append((labels.clone(), wrong.clone()))
        return wrong

    monkeypatch.setattr(random_label_module, "random_wrong_labels", spy)
    forget = _loader(32, 2, batch_size=16)
    _run("random_label", forget=forget, epochs=2, lr=0.01)
    assert len(calls) == 4  # 2 forget batches in each of 2 epochs
    true = torch.cat([t for t, _ in calls])
    drawn = torch.cat([w for _, w in calls])
    assert not (true == drawn).any()
    assert drawn.min() >= 0 and drawn.max() < CLASSES
    # every wrong class occurs and the two epochs relabel the same samples differently
    assert len(drawn.unique()) == CLASSES
    assert not torch.equal(drawn[:32], drawn[32:])


def test_random_label_multilabel_flips_at_least_one_label(monkeypatch) -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = random_label_module.random_wrong_labels

    def spy(labels, num_outputs, task, generator):
        wrong = original(labels, num_outputs, task, generator)
        calls.append((labels.clone(), wrong.clone()))
        return wrong

    monkeypatch.setattr(random_label_module, "random_wrong_labels", spy)
    unlearn(
        _model(),
        _loader(16, 1, task="multilabel"),
        _loader(8, 2, batch_size=4, task="multilabel"),
        method="random_label",
        task="multilabel",
        epochs=1,
    )
    for true, wrong in calls:
        assert ((true != wrong).sum(dim=1) >= 1).all()


# ----------------------------------------------------------------------------- salun


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_salun_mask_keeps_the_most_salient_fraction(sparsity: float) -> None:
    model = _model()
    forget = _loader(8, 2, batch_size=4)
    masks = saliency_mask(model, forget, "multiclass", torch.device("cpu"), sparsity)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == round(total * (1 - sparsity))
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    for x, y in forget:
        task_loss(model(x), y, "multiclass").backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters()}
    if sparsity > 0:
        salient = torch.cat([grads[n][m] for n, m in masks.items()])
        other = torch.cat([grads[n][~m] for n, m in masks.items()])
        assert salient.min() >= other.max()


def test_salun_changes_only_salient_weights() -> None:
    model = _model()
    forget = _loader(8, 2, batch_size=4)
    _, result = _run("salun", model=model, forget=forget, sparsity=0.8, epochs=1, lr=0.05)
    masks = saliency_mask(copy.deepcopy(model), forget, "multiclass", torch.device("cpu"), 0.8)
    moved = 0
    for name, p in result.model.named_parameters():
        before = dict(model.named_parameters())[name]
        assert torch.equal(p[~masks[name]], before[~masks[name]]), name
        moved += int((p[masks[name]] != before[masks[name]]).sum())
    assert moved > 0
    assert result.info["salient_fraction"] == pytest.approx(0.2, abs=1e-4)
