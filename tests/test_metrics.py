"""Tests of dlfd.metrics against scikit-learn, scipy, torch or hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from dlfd.errors import ConfigError
from dlfd.metrics import (
    METRIC_DESCRIPTIONS,
    SplitOutputs,
    balance_members,
    forgetting_score,
    loss_attack_fold_accuracies,
    mia_accuracy,
    multilabel_accuracy,
    nomus,
    output_kl,
    per_sample_loss,
    protocol_metrics,
    reference_gaps,
    top_k_accuracy,
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def mc() -> tuple[np.ndarray, np.ndarray]:
    """Random multi-class logits (no ties) and labels: 200 samples, 5 classes."""
    rng = np.random.default_rng(1)
    return rng.normal(size=(200, 5)) * 2.0, rng.integers(0, 5, size=200)


@pytest.fixture
def ml() -> tuple[np.ndarray, np.ndarray]:
    """Random multi-label logits and {0, 1} targets: 150 samples, 4 labels."""
    rng = np.random.default_rng(2)
    return rng.normal(size=(150, 4)) * 3.0, rng.integers(0, 2, size=(150, 4)).astype(np.float32)


# --- classification -------------------------------------------------------------------------


def test_top1_matches_sklearn(mc):
    logits, labels = mc
    expected = accuracy_score(labels, logits.argmax(axis=1))
    assert top_k_accuracy(logits, labels) == pytest.approx(expected, abs=1e-15)
    assert top_k_accuracy(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)) == (
        pytest.approx(expected, abs=1e-15)
    )


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_top_k_matches_sklearn(mc, k):
    logits, labels = mc
    expected = top_k_accuracy_score(labels, logits, k=k, labels=np.arange(5))
    got = top_k_accuracy(logits, labels, k=k)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-15)


def test_top_k_errors(mc):
    logits, labels = mc
    with pytest.raises(ConfigError, match="k=6"):
        top_k_accuracy(logits, labels, k=6)
    with pytest.raises(ConfigError, match="k must be"):
        top_k_accuracy(logits, labels, k=0)
    with pytest.raises(ConfigError, match="outside"):
        top_k_accuracy(logits, np.full(200, 5))
    with pytest.raises(ConfigError, match="integer class"):
        top_k_accuracy(logits, labels.astype(np.float64))
    with pytest.raises(ConfigError, match="shape"):
        top_k_accuracy(logits, labels[:-1])
    bad = logits.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="1 non-finite"):
        top_k_accuracy(bad, labels)


def test_multilabel_accuracy_matches_sklearn(ml):
    logits, targets = ml
    pred = (1.0 / (1.0 + np.exp(-logits))) >= 0.5
    expected = np.mean([accuracy_score(targets[:, j], pred[:, j]) for j in range(4)])
    assert multilabel_accuracy(logits, targets) == pytest.approx(expected, abs=1e-15)
    pred7 = (1.0 / (1.0 + np.exp(-logits))) >= 0.7
    expected7 = np.mean([accuracy_score(targets[:, j], pred7[:, j]) for j in range(4)])
    assert multilabel_accuracy(logits, targets, threshold=0.7) == pytest.approx(expected7)


def test_multilabel_accuracy_errors(ml):
    logits, targets = ml
    with pytest.raises(ConfigError, match="threshold"):
        multilabel_accuracy(logits, targets, threshold=1.5)
    with pytest.raises(ConfigError, match="not 0 or 1"):
        multilabel_accuracy(logits, targets * 0.5)
    with pytest.raises(ConfigError, match="shape"):
        multilabel_accuracy(logits, targets[:, :3])


def test_per_sample_loss_multiclass_matches_log_loss(mc):
    logits, labels = mc
    loss = per_sample_loss(logits, labels, "multiclass")
    assert loss.dtype == np.float64 and loss.shape == (200,)
    probs = _softmax(logits)
    for i in range(0, 200, 17):
        ref = log_loss([labels[i]], probs[i : i + 1], labels=np.arange(5), normalize=False)
        assert loss[i] == pytest.approx(ref, rel=1e-9)
    manual = -np.log(probs[np.arange(200), labels])
    np.testing.assert_allclose(loss, manual, rtol=1e-10)
    assert loss.mean() == pytest.approx(log_loss(labels, probs, labels=np.arange(5)), rel=1e-9)


def test_per_sample_loss_multilabel_matches_torch_bce(ml):
    logits, targets = ml
    loss = per_sample_loss(logits, targets, "multilabel")
    ref = F.binary_cross_entropy_with_logits(
        torch.tensor(logits), torch.tensor(targets, dtype=torch.float64), reduction="none"
    ).mean(dim=1)
    np.testing.assert_allclose(loss, ref.numpy(), rtol=1e-12)


def test_per_sample_loss_stable_for_large_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-800.0, 800.0, 0.0]])
    loss = per_sample_loss(logits, np.array([1, 1]), "multiclass")
    np.testing.assert_allclose(loss, [2000.0, 0.0], atol=1e-12)
    ml_loss = per_sample_loss(np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]), "multilabel")
    np.testing.assert_allclose(ml_loss, [1000.0])
    with pytest.raises(ConfigError, match="task"):
        per_sample_loss(logits, np.array([1, 1]), "regression")


def test_output_kl_multiclass_matches_scipy(mc):
    logits, _ = mc
    other = logits[::-1].copy() * 0.5
    expected = entropy(_softmax(logits), _softmax(other), axis=1).mean()
    assert output_kl(logits, other, "multiclass") == pytest.approx(expected, rel=1e-10)
    assert output_kl(logits, logits, "multiclass") == 0.0


def test_output_kl_multilabel_by_hand(ml):
    logits, _ = ml
    other = np.roll(logits, 1, axis=0)
    p, q = 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(-other))
    bern = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    assert output_kl(logits, other, "multilabel") == pytest.approx(bern.mean(), rel=1e-9)
    assert output_kl(logits, logits, "multilabel") == 0.0


def test_output_kl_stable_and_checked():
    a = np.array([[500.0, -500.0], [0.0, 0.0]])
    b = np.array([[-500.0, 500.0], [0.0, 0.0]])
    assert output_kl(a, b, "multiclass") == pytest.approx(1000.0 / 2)
    assert output_kl(a, b, "multilabel") == pytest.approx(500.0 / 2)
    with pytest.raises(ConfigError, match="same shape"):
        output_kl(a, b[:1], "multiclass")


# --- membership-inference attack ------------------------------------------------------------


def benchmark_cal_mia(forget_losses: np.ndarray, unseen_losses: np.ndarray) -> float:
    """The MUFAC benchmark notebook's ``cal_mia``, written out step by step."""
    np.random.seed(42)
    forget_losses = forget_losses.copy()
    np.random.shuffle(forget_losses)
    forget_losses = forget_losses[: len(unseen_losses)]
    samples_mia = np.concatenate((unseen_losses, forget_losses)).reshape((-1, 1))
    labels_mia = [0] * len(unseen_losses) + [1] * len(forget_losses)
    cv = StratifiedShuffleSplit(n_splits=10, random_state=0)
    scores = cross_val_score(
        LogisticRegression(), samples_mia, labels_mia, cv=cv, scoring="accuracy"
    )
    return float(scores.mean())


@pytest.mark.parametrize(("n_forget", "n_unseen"), [(90, 60), (60, 60), (150, 40)])
def test_attack_reproduces_the_benchmark_recipe_exactly(n_forget: int, n_unseen: int) -> None:
    rng = np.random.default_rng(n_forget)
    forget, unseen = rng.gamma(1.0, 0.5, size=n_forget), rng.gamma(1.5, 0.7, size=n_unseen)
    assert mia_accuracy(forget, unseen) == benchmark_cal_mia(forget, unseen)


def test_balance_truncates_larger_side_and_is_seeded():
    members, nonmembers = np.arange(30.0), 100.0 + np.arange(12.0)
    m, n = balance_members(members, nonmembers, seed=3)
    assert m.size == n.size == 12
    assert set(m) <= set(members)
    np.testing.assert_array_equal(n, nonmembers)  # the benchmark leaves unseen in order
    m2, n2 = balance_members(members, nonmembers, seed=3)
    np.testing.assert_array_equal(m, m2)
    np.testing.assert_array_equal(n, n2)
    m3, _ = balance_members(members, nonmembers, seed=4)
    assert not np.array_equal(m, m3)
    # unseen larger (the benchmark would stay unbalanced): the non-member side is truncated
    m4, n4 = balance_members(members[:5], nonmembers, seed=0)
    assert m4.size == n4.size == 5 and sorted(m4) == sorted(members[:5])
    assert set(n4) <= set(nonmembers)
    assert not np.array_equal(n4, nonmembers[:5])


def test_attack_matches_direct_sklearn():
    rng = np.random.default_rng(7)
    members, nonmembers = rng.gamma(1.0, 0.5, size=40), rng.gamma(1.5, 0.7, size=60)
    folds = loss_attack_fold_accuracies(members, nonmembers, balance_seed=5)
    bm, bn = balance_members(members, nonmembers, seed=5)
    x = np.concatenate([bn, bm]).reshape(-1, 1)
    y = np.array([0] * len(bn) + [1] * len(bm))
    cv = StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0)
    expected = cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=cv, scoring="accuracy")
    np.testing.assert_array_equal(folds, expected)
    assert folds.shape == (10,) and folds.dtype == np.float64
    assert mia_accuracy(members, nonmembers, balance_seed=5) == float(expected.mean())


def test_attack_unbalanced_matches_direct_sklearn():
    rng = np.random.default_rng(8)
    members, nonmembers = rng.normal(size=40), rng.normal(0.5, 1.0, size=60)
    folds = loss_attack_fold_accuracies(members, nonmembers, balance=False, n_splits=5)
    x = np.concatenate([nonmembers, members]).reshape(-1, 1)
    y = np.array([0] * 60 + [1] * 40)
    cv = StratifiedShuffleSplit(n_splits=5, test_size=0.1, random_state=0)
    expected = cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=cv, scoring="accuracy")
    np.testing.assert_array_equal(folds, expected)


def test_attack_separable_is_perfect():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.uniform(0, 0.1, size=100), rng.uniform(2.0, 3.0, size=100)
    assert mia_accuracy(members, nonmembers) == 1.0


def test_attack_same_distribution_near_chance():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.exponential(size=2000), rng.exponential(size=2000)
    assert abs(mia_accuracy(members, nonmembers) - 0.5) < 0.05


def test_attack_errors():
    ok = np.linspace(0, 1, 50)
    with pytest.raises(ConfigError, match="2 non-finite"):
        mia_accuracy(np.r_[ok, np.nan, np.inf], ok)
    with pytest.raises(ConfigError, match="1 member"):
        mia_accuracy(ok[:1], ok, balance=False)
    # 5 + 5 samples: a 10% test fold holds a single sample, so one class is never tested
    with pytest.raises(ConfigError, match="5 member"):
        mia_accuracy(ok[:5], ok[:20])
    assert 0.0 <= mia_accuracy(ok[:6], ok[:20]) <= 1.0  # 6 + 6: two test samples, one per class
    with pytest.raises(ConfigError, match="1-D"):
        mia_accuracy(ok.reshape(5, 10), ok)
    with pytest.raises(ConfigError, match="n_splits"):
        mia_accuracy(ok, ok, n_splits=0)
    with pytest.raises(ConfigError, match="test_size"):
        mia_accuracy(ok, ok, test_size=1.5)


# --- scores ---------------------------------------------------------------------------------


def test_nomus_mufac_check():
    assert nomus(0.5951, 0.2136) == pytest.approx(0.58395, abs=1e-12)
    assert abs(nomus(0.5951, 0.2136) - 0.5839) < 1e-4
    assert nomus(0.4880, 0.0445) == pytest.approx(0.6995, abs=1e-4)  # retrained row
    assert nomus(0.7, 0.3, lam=1.0) == 0.7
    assert nomus(0.7, 0.25, lam=0.0) == pytest.approx(0.5)


def test_scores_errors():
    with pytest.raises(ConfigError, match="lam"):
        nomus(0.5, 0.1, lam=1.5)
    with pytest.raises(ConfigError, match="test_acc"):
        nomus(1.2, 0.1)
    with pytest.raises(ConfigError, match="forgetting_score"):
        nomus(0.5, 0.6)
    with pytest.raises(ConfigError, match="mia_acc"):
        forgetting_score(float("nan"))


def test_forgetting_score_symmetric():
    assert forgetting_score(0.5) == 0.0
    assert forgetting_score(0.7) == pytest.approx(forgetting_score(0.3)) == pytest.approx(0.2)
    assert forgetting_score(1.0) == 0.5


def test_reference_gaps_by_hand():
    m = {"test_acc": 0.6, "forget_acc": 0.9, "retain_acc": 0.95, "mia_acc": 0.7, "other": 1.0}
    r = {"test_acc": 0.5, "forget_acc": 0.5, "retain_acc": 0.9, "mia_acc": 0.5}
    gaps = reference_gaps(m, r)
    assert gaps == pytest.approx(
        {
            "gap_test_acc": 0.1,
            "gap_forget_acc": 0.4,
            "gap_retain_acc": 0.05,
            "gap_mia_acc": 0.2,
            "avg_gap": 0.75 / 4,
        }
    )
    del m["retain_acc"], r["retain_acc"]
    assert reference_gaps(m, r)["avg_gap"] == pytest.approx(0.7 / 3)
    with pytest.raises(ConfigError, match="reference lacks 'mia_acc'"):
        reference_gaps(m, {k: v for k, v in r.items() if k != "mia_acc"})


# --- protocol -------------------------------------------------------------------------------


def _split(rng: np.random.Generator, n: int, c: int, task: str, shift: float) -> SplitOutputs:
    logits = torch.tensor(rng.normal(size=(n, c)) + shift, dtype=torch.float32)
    if task == "multiclass":
        labels = torch.tensor(rng.integers(0, c, size=n))
    else:
        labels = torch.tensor(rng.integers(0, 2, size=(n, c)), dtype=torch.float32)
    return SplitOutputs(logits=logits, labels=labels)


def _outputs(task: str, c: int, seed: int = 0) -> dict[str, SplitOutputs]:
    rng = np.random.default_rng(seed)
    sizes = {"retain": 80, "forget": 40, "val": 30, "test": 50, "unseen": 30}
    return {s: _split(rng, n, c, task, 0.0) for s, n in sizes.items()}


def test_protocol_multiclass_end_to_end():
    outs = _outputs("multiclass", 4)
    res = protocol_metrics(outs, task="multiclass")
    for s, o in outs.items():
        assert res[f"{s}_acc"] == top_k_accuracy(o.logits, o.labels)
        assert res[f"{s}_top2"] == top_k_accuracy(o.logits, o.labels, k=2)
        assert res[f"n_{s}"] == len(o)
    fl = per_sample_loss(outs["forget"].logits, outs["forget"].labels, "multiclass")
    ul = per_sample_loss(outs["unseen"].logits, outs["unseen"].labels, "multiclass")
    assert res["mia_acc"] == mia_accuracy(fl, ul)
    assert res["forgetting_score"] == forgetting_score(res["mia_acc"])
    assert res["nomus"] == nomus(res["test_acc"], res["forgetting_score"])
    assert all(type(v) is float for v in res.values())
    assert set(res) <= set(METRIC_DESCRIPTIONS)
    assert not any(k.startswith(("gap_", "kl_")) for k in res)
    json.dumps(res)


def test_protocol_with_reference():
    outs = _outputs("multiclass", 4)
    same = protocol_metrics(outs, task="multiclass", reference=outs)
    for key in ("gap_test_acc", "gap_forget_acc", "gap_retain_acc", "gap_mia_acc", "avg_gap"):
        assert same[key] == 0.0
    assert same["kl_to_reference_forget"] == 0.0 and same["kl_to_reference_test"] == 0.0
    rng = np.random.default_rng(9)
    ref = {
        s: SplitOutputs(o.logits + torch.tensor(rng.normal(size=o.logits.shape)), o.labels)
        for s, o in outs.items()
    }
    res = protocol_metrics(outs, task="multiclass", reference=ref, lam=0.3)
    ref_own = protocol_metrics(ref, task="multiclass", lam=0.3)
    assert res["gap_test_acc"] == abs(res["test_acc"] - ref_own["test_acc"])
    assert res["gap_mia_acc"] == abs(res["mia_acc"] - ref_own["mia_acc"])
    assert res["kl_to_reference_test"] == output_kl(
        ref["test"].logits, outs["test"].logits, "multiclass"
    )
    assert res["kl_to_reference_forget"] > 0
    assert set(res) <= set(METRIC_DESCRIPTIONS)


def test_protocol_multilabel_and_binary():
    outs = _outputs("multilabel", 3, seed=1)
    res = protocol_metrics(outs, task="multilabel", reference=outs)
    assert res["test_acc"] == multilabel_accuracy(outs["test"].logits, outs["test"].labels)
    assert not any(k.endswith("_top2") for k in res)
    fl = per_sample_loss(outs["forget"].logits, outs["forget"].labels, "multilabel")
    ul = per_sample_loss(outs["unseen"].logits, outs["unseen"].labels, "multilabel")
    assert res["mia_acc"] == mia_accuracy(fl, ul)
    assert res["avg_gap"] == 0.0
    binary = protocol_metrics(_outputs("multiclass", 2), task="multiclass")
    assert "test_top2" not in binary and "test_acc" in binary


def test_protocol_errors():
    outs = _outputs("multiclass", 4)
    with pytest.raises(ConfigError, match="lacks required split"):
        protocol_metrics({k: v for k, v in outs.items() if k != "unseen"}, task="multiclass")
    with pytest.raises(ConfigError, match="unknown split"):
        protocol_metrics({**outs, "train": outs["retain"]}, task="multiclass")
    with pytest.raises(ConfigError, match="task"):
        protocol_metrics(outs, task="binary")
    with pytest.raises(ConfigError, match="lam"):
        protocol_metrics(outs, task="multiclass", lam=2.0)
    bad_ref = dict(outs, test=SplitOutputs(outs["test"].logits[:10], outs["test"].labels[:10]))
    with pytest.raises(ConfigError, match=r"reference\['test'\].logits has shape"):
        protocol_metrics(outs, task="multiclass", reference=bad_ref)
    other_c = dict(outs, val=_split(np.random.default_rng(0), 30, 5, "multiclass", 0.0))
    with pytest.raises(ConfigError, match="outputs per sample"):
        protocol_metrics(other_c, task="multiclass")
    with pytest.raises(ConfigError, match="reference splits"):
        protocol_metrics(
            outs, task="multiclass", reference={k: v for k, v in outs.items() if k != "val"}
        )
    flipped = dict(outs, forget=SplitOutputs(outs["forget"].logits, 3 - outs["forget"].labels))
    with pytest.raises(ConfigError, match="labels differ"):
        protocol_metrics(outs, task="multiclass", reference=flipped)


def test_metric_descriptions_one_line():
    for key in ("test_acc", "mia_acc", "forgetting_score", "nomus", "avg_gap"):
        assert key in METRIC_DESCRIPTIONS
    assert all("\n" not in v and v for v in METRIC_DESCRIPTIONS.values())
