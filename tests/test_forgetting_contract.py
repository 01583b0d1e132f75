"""Every registered method forgets: it lowers the forgetting score of a memorised forget set.

The fixture (fixed seeds, CPU, ~1 s to train): ten classes of 3x8x8 "images", each a fixed
random prototype plus Gaussian noise (sd 0.7), so the retain set (200 samples) is learnable and
a held-out test set of the same kind measures utility. The forget set is 32 pure-noise images
with random labels, which a small_cnn can only fit by memorising them; the original model is
trained on retain + forget until every forget sample is fitted. ``held`` is 32 more noise images
with random labels, never trained on: the same distribution as forget, so a model that never saw
the forget set cannot tell the two apart. The validation loader given to the methods (their
monitor and selection) is a third such noise set, disjoint from ``held``.

The measure is the project's own: the forgetting score ``|mia_acc - 0.5|`` of the benchmark's
loss attack (:func:`dlfd.metrics.mia_accuracy` on :func:`dlfd.metrics.per_sample_loss`), forget
(members) against ``held`` (non-members). The original scores 0.486 (attack accuracy 0.986);
``retrain`` scores 0.000.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dlfd.methods import list_methods, unlearn
from dlfd.metrics import forgetting_score, mia_accuracy, per_sample_loss
from dlfd.models import create_model

CLASSES = 10
IMAGE = (3, 8, 8)
BOUNDS = (torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The numbers below (and the xfail reasons quoting them) are measured with one thread:
    float sums in another order give another model, so pin it whatever the machine's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: The original must be clearly memorising: a score of 0.45 is an attack accuracy of 0.95.
MEMORISED = 0.45
#: A method passes if it lowers the score by at least 0.2 (0.486 -> <= 0.286). With 32
#: members and 32 non-members the attack accuracy's standard error is about
#: 0.5 / sqrt(64) ~ 0.06, so 0.2 is more than three standard errors: not noise. (retrain, the
#: gold standard, reaches 0.000; perfect forgetting is not required of the fast settings.)
MARGIN = 0.2
#: ... while the model stays useful: test accuracy at least 4x chance (0.1), so wrecking the
#: model (which also makes forget and held-out look alike) does not count as forgetting.
MIN_TEST_ACC = 0.4

#: key -> hyperparameters for a fast run (a few tenths of a second each here); "xfail": the
#: reason, with measured numbers, why the method does not pass at reasonable fast settings.
SETTINGS: dict[str, dict[str, Any]] = {
    "retrain": {
        "epochs": 10,
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "constant",
    },
    "eu_k": {"epochs": 3, "lr": 0.02, "k": 3},
    "neggrad": {"epochs": 3, "lr": 0.1},
    "neggrad_plus": {"epochs": 2, "lr": 0.05},
    "random_label": {"epochs": 3, "lr": 0.01},
    "bad_teacher": {"epochs": 3, "lr": 0.001},
    "unsir": {"noise_steps": 2, "impair_lr": 0.01, "repair_lr": 0.01},
    "scrub": {"epochs": 3, "lr": 0.03},
    "salun": {"epochs": 3, "lr": 0.013},
    "finetune": {
        "epochs": 5,
        "lr": 0.05,
        "xfail": "fine-tuning on retain never touches the memorised noise images: score 0.486 "
        "-> 0.500 at epochs=5 lr=0.05 (also 0.500 at epochs=10 lr=0.2; 0.357 with "
        "weight_decay=0.05)",
    },
    "cf_k": {
        "epochs": 5,
        "lr": 0.05,
        "k": 2,
        "xfail": "retraining the last k blocks on retain keeps the memorisation: score 0.486 "
        "-> 0.486 at epochs=5 lr=0.05 k=2 (0.500 at k=3 lr=0.1)",
    },
    "ssd": {
        "alpha": 1.0,
        "xfail": "dampening forget-important weights does not separate the memorisation from "
        "the task: score 0.486 -> 0.371 at alpha=1 (test acc 0.67); alpha=1 lam=0.5 reaches "
        "0.314 at test acc 0.22; default alpha=10 leaves 0.486",
    },
    "dlfd": {
        "steps": 5,
        "xfail": "score 0.486 -> 0.486 at steps=5 (0.443 at the default steps=15, 0.329 at "
        "steps=5 updates=40 lr=0.05); reinit=head reaches 0.157 but at test acc 0.16",
    },
}


def _dataset() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    prototypes = torch.randn(CLASSES, *IMAGE, generator=g)

    def learnable(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = prototypes[y] + 0.7 * torch.randn(n, *IMAGE, generator=g)
        return x.clamp(-3, 3), y

    def noise(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, *IMAGE, generator=g).clamp(-3, 3)
        return x, torch.randint(0, CLASSES, (n,), generator=g)

    retain, test = learnable(200), learnable(100)
    forget, val, held = noise(32), noise(32), noise(32)
    return {"retain": retain, "test": test, "forget": forget, "val": val, "held": held}


def _accuracy(model: torch.nn.Module, split: tuple[torch.Tensor, torch.Tensor]) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(split[0]).argmax(1) == split[1]).float().mean())


def _score(model: torch.nn.Module, data: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.no_grad():
        losses = {
            s: per_sample_loss(model(data[s][0]), data[s][1], "multiclass")
            for s in ("forget", "held")
        }
    return forgetting_score(mia_accuracy(losses["forget"], losses["held"]))


@pytest.fixture(scope="module")
def fixture() -> tuple[torch.nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The original model (trained on retain + forget until forget is fitted) and the data."""
    data = _dataset()
    torch.manual_seed(0)
    model = create_model("small_cnn", CLASSES)
    inputs = torch.cat([data["retain"][0], data["forget"][0]])
    labels = torch.cat([data["retain"][1], data["forget"][1]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    order = torch.Generator().manual_seed(1)
    for epoch in range(50):
        model.train()
        perm = torch.randperm(len(inputs), generator=order)
        for start in range(0, len(inputs), 16):
            batch = perm[start : start + 16]
            loss = F.cross_entropy(model(inputs[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch >= 5 and _accuracy(model, data["forget"]) == 1.0:
            break
    model.eval()
    return model, data


def _loader(split: tuple[torch.Tensor, torch.Tensor], seed: int | None = None) -> DataLoader:
    return DataLoader(
        TensorDataset(*split),
        batch_size=16,
        shuffle=seed is not None,
        generator=None if seed is None else torch.Generator().manual_seed(seed),
    )


#: ``original`` returns its input (nothing to forget by design); every other method is tested.
METHODS = [key for key in list_methods() if key != "original"]


def test_every_method_has_forgetting_settings() -> None:
    missing = sorted(set(METHODS) - set(SETTINGS))
    assert not missing, f"add forgetting-contract settings for: {missing}"


def test_original_has_memorised_its_forget_set(fixture) -> None:
    model, data = fixture
    assert _accuracy(model, data["forget"]) == 1.0
    assert _accuracy(model, data["held"]) <= 0.2  # random labels: about chance (0.1)
    assert _accuracy(model, data["test"]) >= 0.9
    assert _score(model, data) >= MEMORISED


@pytest.mark.parametrize("key", METHODS)
def test_method_lowers_the_forgetting_score(key: str, fixture) -> None:
    model, data = fixture
    hparams = dict(SETTINGS[key])
    xfail = hparams.pop("xfail", None)
    before = _score(model, data)
    assert before >= MEMORISED  # the precondition: there is something to forget
    result = unlearn(
        model,
        _loader(data["retain"], seed=1),
        _loader(data["forget"], seed=2),
        _loader(data["val"]),
        method=key,
        seed=0,
        input_bounds=BOUNDS,
        **hparams,
    )
    after = _score(result.model, data)
    test_acc = _accuracy(result.model, data["test"])
    forgot = after <= before - MARGIN and test_acc >= MIN_TEST_ACC
    if xfail is not None:
        if not forgot:
            pytest.xfail(f"{key}: {xfail} (this run: {before:.3f} -> {after:.3f})")
        pytest.fail(
            f"{key} now forgets ({before:.3f} -> {after:.3f}, test acc {test_acc:.2f}): "
            f"remove its xfail from SETTINGS"
        )
    assert after <= before - MARGIN, f"{key}: forgetting score {before:.3f} -> {after:.3f}"
    assert test_acc >= MIN_TEST_ACC, f"{key}: test accuracy {test_acc:.2f} after unlearning"
