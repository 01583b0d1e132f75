"""Tests of dlfd.metrics.attacks and output_js against scikit-learn, scipy or hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import SVC

from dlfd.errors import ConfigError
from dlfd.metrics import (
    SVC_FEATURES,
    AttackResult,
    SplitOutputs,
    entropy_attack,
    loss_attack,
    loss_attack_fold_accuracies,
    mia_accuracy,
    modified_entropy,
    output_js,
    per_sample_loss,
    prediction_entropy,
    roc_summary,
    run_attacks,
    svc_attack,
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _set(rng: np.random.Generator, n: int, scale: float, c: int = 4):
    """(probs, labels, logits): ``scale`` sets how confidently the label class is predicted."""
    labels = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += scale
    return _softmax(logits), labels, logits


# --- output_js ------------------------------------------------------------------------------


def test_output_js_multiclass_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 6)) * 3, rng.normal(size=(50, 6)) * 3
    pa, pb = _softmax(a), _softmax(b)
    expected = np.mean([jensenshannon(p, q) ** 2 for p, q in zip(pa, pb, strict=True)])
    assert output_js(a, b, "multiclass") == pytest.approx(expected, rel=1e-9)
    assert output_js(torch.tensor(a), torch.tensor(b), "multiclass") == pytest.approx(expected)


def test_output_js_multilabel_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 4)) * 3, rng.normal(size=(30, 4)) * 3
    pa, pb = _sigmoid(a), _sigmoid(b)
    per = [
        jensenshannon([pa[i, j], 1 - pa[i, j]], [pb[i, j], 1 - pb[i, j]]) ** 2
        for i in range(30)
        for j in range(4)
    ]
    assert output_js(a, b, "multilabel") == pytest.approx(np.mean(per), rel=1e-9)


def test_output_js_properties():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    for task in ("multiclass", "multilabel"):
        assert output_js(a, a, task) == pytest.approx(0.0, abs=1e-15)
        assert output_js(a, b, task) == pytest.approx(output_js(b, a, task), rel=1e-12)
    # Disjoint supports reach the bound ln 2; huge logits stay finite.
    far = np.array([[1000.0, -1000.0]])
    assert output_js(far, -far, "multiclass") == pytest.approx(math.log(2), rel=1e-12)
    assert output_js(far, -far, "multilabel") == pytest.approx(math.log(2), rel=1e-12)
    with pytest.raises(ConfigError):
        output_js(a, b[:, :2], "multiclass")
    with pytest.raises(ConfigError):
        output_js(a, b, "regression")


# --- roc_summary and AttackResult -----------------------------------------------------------


def test_roc_summary_matches_sklearn():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 500)
    y = np.r_[np.ones(300), np.zeros(500)]
    s = np.r_[pos, neg]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    auc, t = roc_summary(pos, neg)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-15)
    assert t == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-15)
    # Brute force over thresholds: best TPR among thresholds with FPR <= 5%.
    best = max(
        ((pos >= thr).mean() for thr in np.r_[s, np.inf] if (neg >= thr).mean() <= 0.05),
        default=0.0,
    )
    assert roc_summary(pos, neg, max_fpr=0.05)[1] == pytest.approx(best, abs=1e-15)


def test_roc_summary_hand_cases():
    assert roc_summary([2.0, 3.0, 4.0], [0.0, 1.0]) == (1.0, 1.0)
    assert roc_summary([1.0, 1.0, 1.0], [1.0, 1.0]) == (0.5, 0.0)
    assert roc_summary([0.0, 1.0], [2.0, 3.0]) == (0.0, 0.0)
    with pytest.raises(ConfigError):
        roc_summary([], [1.0])
    with pytest.raises(ConfigError):
        roc_summary([np.nan], [1.0])
    with pytest.raises(ConfigError):
        roc_summary([1.0], [0.0], max_fpr=2.0)


def test_attack_result_summary_is_json_ready():
    r = AttackResult(
        "x", np.float64(0.6), 0.7, 0.1, np.zeros(2), np.ones(2), {"member_rate_in": np.float32(1)}
    )
    s = r.summary()
    assert s == {"accuracy": 0.6, "auc": 0.7, "tpr_at_1pct_fpr": 0.1, "member_rate_in": 1.0}
    assert all(type(v) is float for v in s.values())
    json.dumps(s)


# --- entropies ------------------------------------------------------------------------------


def test_prediction_entropy_matches_scipy():
    rng = np.random.default_rng(4)
    p = _softmax(rng.normal(size=(40, 5)))
    p[0] = [1.0, 0.0, 0.0, 0.0, 0.0]  # 0·log 0 = 0
    np.testing.assert_allclose(prediction_entropy(p), scipy_entropy(p, axis=1), rtol=1e-12)
    assert prediction_entropy(p)[0] == 0.0
    np.testing.assert_allclose(
        prediction_entropy(torch.tensor(p, dtype=torch.float32)), scipy_entropy(p, axis=1), 1e-6
    )
    with pytest.raises(ConfigError):
        prediction_entropy(np.array([[0.5, 1.5]]))


def test_modified_entropy_by_hand():
    p = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = np.array([0, 2, 0, 0])
    expected = [
        -0.3 * math.log(0.7) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9),
        -0.9 * math.log(0.1) - 0.7 * math.log(0.3) - 0.2 * math.log(0.8),
        0.0,  # confident and right
        -1.0 * math.log(1e-30),  # confident and wrong: both clipped logs (p_y = 0, p_1 = 1)
    ]
    expected[3] += -1.0 * math.log(1e-30)
    np.testing.assert_allclose(modified_entropy(p, y), expected, rtol=1e-12)
    # Per-sample labels, not SalUn's whole-column indexing: each row only depends on its label.
    np.testing.assert_allclose(modified_entropy(p[1:2], y[1:2]), expected[1:2], rtol=1e-12)
    with pytest.raises(ConfigError):
        modified_entropy(p, y[:2])
    with pytest.raises(ConfigError):
        modified_entropy(p, np.array([0, 1, 2, 3]))


# --- loss and entropy attacks ---------------------------------------------------------------


def test_loss_attack_reuses_benchmark_recipe():
    rng = np.random.default_rng(5)
    members, nonmembers = rng.exponential(0.5, 120), rng.exponential(1.0, 80)
    r = loss_attack(members, nonmembers)
    assert r.name == "loss"
    assert r.accuracy == mia_accuracy(members, nonmembers)
    assert loss_attack(members, nonmembers, seed=7).accuracy == mia_accuracy(
        members, nonmembers, balance_seed=7
    )
    np.testing.assert_array_equal(r.member_scores, -members)
    np.testing.assert_array_equal(r.nonmember_scores, -nonmembers)
    y = np.r_[np.ones(120), np.zeros(80)]
    assert r.auc == pytest.approx(roc_auc_score(y, -np.r_[members, nonmembers]), abs=1e-15)
    assert r.auc > 0.6
    assert r.extra == {}


def test_entropy_attack_matches_manual_pipeline():
    rng = np.random.default_rng(6)
    pm, _, _ = _set(rng, 90, 3.0)
    pn, _, _ = _set(rng, 70, 0.5)
    r = entropy_attack(pm, pn)
    hm, hn = scipy_entropy(pm, axis=1), scipy_entropy(pn, axis=1)
    assert r.name == "entropy"
    assert r.accuracy == pytest.approx(loss_attack_fold_accuracies(hm, hn).mean(), abs=1e-12)
    np.testing.assert_allclose(r.member_scores, -hm, rtol=1e-12)
    y = np.r_[np.ones(90), np.zeros(70)]
    assert r.auc == pytest.approx(roc_auc_score(y, -np.r_[hm, hn]), abs=1e-12)
    assert r.accuracy > 0.7


# --- SVC attack -----------------------------------------------------------------------------


def _reference_svc(sets, feature):
    """SalUn's SVC_fit_predict written directly with sklearn, for comparison."""

    def feats(p, y):
        if feature == "correctness":
            return (p.argmax(1) == y).astype(float).reshape(-1, 1)
        if feature == "confidence":
            return p[np.arange(len(y)), y].reshape(-1, 1)
        if feature == "entropy":
            return scipy_entropy(p, axis=1).reshape(-1, 1)
        if feature == "m_entropy":
            return modified_entropy(p, y).reshape(-1, 1)
        return p

    si, so, ti, to = (feats(*s) for s in sets)
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(np.r_[si, so], np.r_[np.ones(len(si)), np.zeros(len(so))])
    return (
        clf.predict(ti).mean(),
        clf.predict(to).mean(),
        clf.decision_function(ti),
        clf.decision_function(to),
    )


@pytest.fixture
def svc_sets():
    """Shadow/target sets: members predicted confidently, non-members less so (overlapping)."""
    rng = np.random.default_rng(7)
    return [_set(rng, n, s)[:2] for n, s in ((60, 2.5), (60, 1.0), (50, 2.5), (40, 1.0))]


@pytest.mark.parametrize("feature", SVC_FEATURES)
def test_svc_attack_matches_direct_sklearn(svc_sets, feature):
    r = svc_attack(*svc_sets, feature=feature)
    rate_in, rate_out, d_in, d_out = _reference_svc(svc_sets, feature)
    assert r.name == f"svc_{feature}"
    assert r.extra["member_rate_in"] == pytest.approx(rate_in, abs=1e-12)
    assert r.extra["member_rate_out"] == pytest.approx(rate_out, abs=1e-12)
    assert r.accuracy == pytest.approx(0.5 * (rate_in + 1 - rate_out), abs=1e-12)
    np.testing.assert_allclose(r.member_scores, d_in, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.nonmember_scores, d_out, rtol=1e-9, atol=1e-12)
    auc, tpr = roc_summary(d_in, d_out)
    assert (r.auc, r.tpr_at_low_fpr) == pytest.approx((auc, tpr), abs=1e-9)


def test_svc_attack_separates_clear_distributions():
    rng = np.random.default_rng(8)
    confident = [_set(rng, 80, 12.0)[:2] for _ in range(2)]
    confused = [_set(rng, 80, 0.0)[:2] for _ in range(2)]
    for feature in ("confidence", "entropy", "m_entropy", "prob"):
        r = svc_attack(confident[0], confused[0], confident[1], confused[1], feature=feature)
        assert r.accuracy > 0.95, feature
        assert r.auc > 0.95, feature


def test_svc_attack_rejects_bad_inputs(svc_sets):
    p, y = svc_sets[0]
    with pytest.raises(ConfigError, match="feature"):
        svc_attack(*svc_sets, feature="loss")
    with pytest.raises(ConfigError):
        svc_attack((p[:0], y[:0]), *svc_sets[1:], feature="confidence")
    with pytest.raises(ConfigError):
        svc_attack((p, y[:-1]), *svc_sets[1:], feature="confidence")
    with pytest.raises(ConfigError):
        svc_attack(
            (p[:, :3] / p[:, :3].sum(1, keepdims=True), y % 3), *svc_sets[1:], feature="prob"
        )
    with pytest.raises(ConfigError):
        svc_attack(p, *svc_sets[1:], feature="confidence")


# --- run_attacks ----------------------------------------------------------------------------


def _outputs(seed: int = 9):
    rng = np.random.default_rng(seed)
    sizes = {"retain": 100, "forget": 40, "test": 50, "unseen": 40}
    scale = {"retain": 3.0, "forget": 3.0, "test": 1.0, "unseen": 1.0}
    out = {}
    for split, n in sizes.items():
        _, labels, logits = _set(rng, n, scale[split])
        out[split] = (torch.tensor(logits, dtype=torch.float32), torch.tensor(labels))
    return out


def test_run_attacks_composes_the_attacks():
    out = _outputs()
    res = run_attacks(out)
    assert list(res) == ["loss", "entropy"] + [f"svc_{f}" for f in SVC_FEATURES]
    loss_f = per_sample_loss(*out["forget"], "multiclass")
    loss_u = per_sample_loss(*out["unseen"], "multiclass")
    assert res["loss"].accuracy == mia_accuracy(loss_f, loss_u)
    probs = {s: torch.softmax(v[0].double(), 1).numpy() for s, v in out.items()}
    labels = {s: v[1].numpy() for s, v in out.items()}
    assert res["entropy"].accuracy == entropy_attack(probs["forget"], probs["unseen"]).accuracy
    pick = np.sort(np.random.default_rng(0).choice(100, 50, replace=False))
    shadow_in = (probs["retain"][pick], labels["retain"][pick])
    sets = [shadow_in] + [(probs[s], labels[s]) for s in ("test", "forget", "unseen")]
    expected = svc_attack(*sets, feature="m_entropy")
    assert res["svc_m_entropy"].summary() == expected.summary()
    # SplitOutputs are accepted too, with the same result.
    as_split = {s: SplitOutputs(*v) for s, v in out.items()}
    assert run_attacks(as_split)["svc_prob"].summary() == res["svc_prob"].summary()
    for r in res.values():
        json.dumps(r.summary())


def test_run_attacks_refuses_multilabel_and_missing_splits():
    out = _outputs()
    with pytest.raises(ConfigError, match="multi-class"):
        run_attacks(out, task="multilabel")
    ml = dict(out)
    ml["test"] = (out["test"][0], torch.ones_like(out["test"][0]))
    with pytest.raises(ConfigError, match="multi-class"):
        run_attacks(ml)
    with pytest.raises(ConfigError, match="unseen"):
        run_attacks({k: v for k, v in out.items() if k != "unseen"})
