"""Tests of dlfd.metrics.lira against scipy, scikit-learn and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from dlfd.errors import ConfigError
from dlfd.metrics.lira import (
    OFFLINE_THRESHOLD,
    LiraFit,
    fit_lira,
    lira_compare,
    lira_scores,
    logit_confidence,
)

N, K = 2000, 16


def _hand_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y) via float64 probabilities (fine for moderate logits)."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p_y = p[np.arange(len(labels)), labels]
    return np.log(p_y) - np.log1p(-p_y)


def test_logit_confidence_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(50, 7))
    labels = rng.integers(0, 7, size=50)
    expected = _hand_phi(logits, labels)
    np.testing.assert_allclose(logit_confidence(logits, labels), expected, rtol=1e-10, atol=1e-10)
    got_torch = logit_confidence(torch.tensor(logits), torch.tensor(labels))
    np.testing.assert_allclose(got_torch, expected, rtol=1e-10, atol=1e-10)
    assert got_torch.dtype == np.float64


def test_logit_confidence_is_finite_for_large_logits() -> None:
    logits = np.array([[200.0, 0.0, 0.0], [0.0, -200.0, 5.0]])
    labels = np.array([0, 1])
    with np.errstate(divide="ignore"):
        naive = _hand_phi(logits, labels)
    assert np.isinf(naive[0])  # p_y rounds to 1
    expected = [200.0 - math.log(2.0), -200.0 - math.log(1.0 + math.exp(5.0))]
    got = logit_confidence(torch.tensor(logits, dtype=torch.float32), labels)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_logit_confidence_binary_is_logit_difference() -> None:
    logits = np.array([[1.5, -0.5], [0.0, 4.0]])
    np.testing.assert_allclose(logit_confidence(logits, [0, 0]), [2.0, -4.0])


@pytest.mark.parametrize(
    ("logits", "labels"),
    [
        (np.zeros((3, 1)), [0, 0, 0]),  # one class
        (np.zeros((2, 3)), [0, 3]),  # label out of range
        (np.zeros((2, 3)), [0.0, 1.0]),  # float labels
        (np.array([[np.nan, 0.0]]), [0]),  # non-finite
        (np.zeros(3), [0]),  # not 2-D
    ],
)
def test_logit_confidence_rejects_bad_input(logits: np.ndarray, labels: list) -> None:
    with pytest.raises(ConfigError):
        logit_confidence(logits, labels)


def _reference(rng: np.random.Generator, k: int = K, n: int = N) -> tuple[np.ndarray, ...]:
    """Per-example offsets; in models ~ offset + N(3, 1), out models ~ offset + N(0, 1)."""
    offset = rng.normal(scale=2.0, size=n)
    in_conf = offset + 3.0 + rng.normal(size=(k, n))
    out_conf = offset + rng.normal(size=(k, n))
    return offset, in_conf, out_conf


@pytest.mark.parametrize("target_is_member", [True, False])
def test_online_compare_separates_a_remembering_target_from_the_control(
    target_is_member: bool,
) -> None:
    rng = np.random.default_rng(1)
    offset, in_conf, out_conf = _reference(rng)
    target = offset + (3.0 if target_is_member else 0.0) + rng.normal(size=N)
    control = offset + rng.normal(size=N)  # a held-out out model (the retrained reference)
    fit = fit_lira(in_conf, out_conf)
    assert fit.online and not fit.global_variance and (fit.n_in, fit.n_out) == (K, K)
    report = lira_compare(target, control, fit)
    # Unit variances: LR > 1 iff x > offset + 1.5; P = Phi(1.5) ~ 0.933 for a member.
    p_member = norm.sf(-1.5) if target_is_member else norm.sf(1.5)
    assert report["member_fraction_target"] == pytest.approx(p_member, abs=0.04)
    assert report["member_fraction_control"] == pytest.approx(norm.sf(1.5), abs=0.04)
    assert report["excess"] == pytest.approx(
        report["member_fraction_target"] - report["member_fraction_control"]
    )
    if target_is_member:
        assert report["mean_score_target"] > 2.0 and report["auc"] > 0.85
        assert report["tpr_at_1pct_fpr"] > 0.1
    else:
        assert report["auc"] == pytest.approx(0.5, abs=0.04)
        assert abs(report["excess"]) < 0.04


def test_online_scores_match_scipy_logpdf_difference() -> None:
    in_conf = np.array([[2.0, 0.0], [3.0, 1.0], [4.0, 0.5], [5.0, 1.5]])
    out_conf = np.array([[0.0, 1.0], [1.0, 2.0], [-1.0, 0.0], [0.5, 4.0]])
    target = np.array([2.5, 1.0])
    fit = fit_lira(in_conf, out_conf)
    mu_in, sd_in = in_conf.mean(axis=0), in_conf.std(axis=0, ddof=1)
    mu_out, sd_out = out_conf.mean(axis=0), out_conf.std(axis=0, ddof=1)
    np.testing.assert_allclose(fit.mu_in, mu_in)
    np.testing.assert_allclose(fit.sd_out, sd_out)
    expected = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
    np.testing.assert_allclose(lira_scores(target, fit), expected, rtol=1e-12)
    np.testing.assert_allclose(lira_scores(torch.tensor(target), fit), expected, rtol=1e-12)


def test_automatic_global_variance_with_few_models() -> None:
    rng = np.random.default_rng(3)
    in_conf = rng.normal(size=(2, 30)) + np.arange(30)
    out_conf = rng.normal(size=(6, 30))
    fit = fit_lira(in_conf, out_conf)
    # 2 in models < 4: one pooled sd, sum of squared deviations / (N * (K - 1)); 6 out models:
    # per example, unbiased.
    pooled = np.sqrt(((in_conf - in_conf.mean(axis=0)) ** 2).sum() / (30 * (2 - 1)))
    np.testing.assert_allclose(fit.sd_in, np.full(30, pooled))
    np.testing.assert_allclose(fit.sd_out, out_conf.std(axis=0, ddof=1))
    assert fit.global_variance

    forced = fit_lira(in_conf, out_conf, global_variance=True)
    out_pooled = np.sqrt(((out_conf - out_conf.mean(0)) ** 2).sum() / (30 * (6 - 1)))
    np.testing.assert_allclose(forced.sd_out, np.full(30, out_pooled))
    per_example = fit_lira(in_conf, out_conf, global_variance=False)
    np.testing.assert_allclose(per_example.sd_in, in_conf.std(axis=0, ddof=1))
    assert not per_example.global_variance


def test_single_model_side_is_floored_at_min_sd() -> None:
    fit = fit_lira(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]), min_sd=0.25)
    np.testing.assert_allclose(fit.sd_in, [0.25, 0.25])
    np.testing.assert_allclose(fit.sd_out, [0.25, 0.25])
    assert fit.global_variance and (fit.n_in, fit.n_out) == (1, 1)


def test_offline_scores_order_and_threshold() -> None:
    rng = np.random.default_rng(4)
    out_conf = rng.normal(size=(8, 5)) + np.arange(5)
    fit = fit_lira(None, out_conf)
    assert isinstance(fit, LiraFit) and not fit.online and fit.n_in == 0
    assert fit.mu_in is None and fit.sd_in is None
    assert not fit_lira(np.empty((0, 5)), out_conf).online

    grid = np.linspace(-3, 3, 13)
    scores = np.array([lira_scores(fit.mu_out + d * fit.sd_out, fit) for d in grid])
    assert np.all(np.diff(scores, axis=0) > 0)  # more confident -> higher score
    np.testing.assert_allclose(scores[6], OFFLINE_THRESHOLD)  # x == mu_out: p = 0.5
    target = fit.mu_out + 0.7
    np.testing.assert_allclose(
        lira_scores(target, fit), -norm.logsf(target, fit.mu_out, fit.sd_out)
    )
    # Very confident targets still score finitely.
    assert np.all(np.isfinite(lira_scores(fit.mu_out + 1e3, fit)))


def test_offline_compare_member_fractions() -> None:
    rng = np.random.default_rng(5)
    offset, _, out_conf = _reference(rng)
    member_target = offset + 3.0 + rng.normal(size=N)
    control = offset + rng.normal(size=N)
    fit = fit_lira(None, out_conf)
    report = lira_compare(member_target, control, fit)
    # Member target vs out models: x > mu_out with probability P(N(3, ~1) > 0) ~ 0.998.
    assert report["member_fraction_target"] > 0.95
    assert report["member_fraction_control"] == pytest.approx(0.5, abs=0.06)
    target_scores = lira_scores(member_target, fit)
    control_scores = lira_scores(control, fit)
    labels = np.r_[np.ones(N), np.zeros(N)]
    assert report["auc"] == pytest.approx(
        roc_auc_score(labels, np.r_[target_scores, control_scores])
    )
    assert report["member_fraction_target"] == pytest.approx(np.mean(target_scores > math.log(2)))
    assert report["mean_score_control"] == pytest.approx(control_scores.mean())


def test_tpr_at_1pct_fpr_hand_example() -> None:
    # Offline scores are increasing in x, so the ROC is that of the raw confidences.
    target = np.r_[np.full(50, 10.0), np.full(50, -10.0), 0.5]
    control = np.r_[5.0, np.zeros(98), -1.0, -1.0]
    fit = fit_lira(None, np.zeros((1, target.size)), min_sd=1.0)
    assert fit.sd_out[0] == 1.0
    report = lira_compare(target, control, fit)
    # Calling x >= 0.5 a member: FPR 1/101 (only 5.0), TPR 51/101.
    assert report["tpr_at_1pct_fpr"] == pytest.approx(51 / 101)
    assert report["member_fraction_target"] == pytest.approx(51 / 101)
    assert report["member_fraction_control"] == pytest.approx(1 / 101)


@pytest.mark.parametrize(
    ("in_conf", "out_conf", "kwargs"),
    [
        (None, np.empty((0, 3)), {}),  # K_out < 1
        (None, np.empty((2, 0)), {}),  # no examples
        (np.zeros((2, 4)), np.zeros((2, 3)), {}),  # mismatched N
        (np.zeros((2, 3)), np.array([[0.0, np.inf, 0.0]]), {}),  # non-finite out
        (np.array([[np.nan, 0.0, 0.0]]), np.zeros((2, 3)), {}),  # non-finite in
        (None, np.zeros(3), {}),  # 1-D out
        (None, np.zeros((2, 3)), {"min_sd": 0.0}),
        (None, np.zeros((2, 3)), {"global_variance": "yes"}),
    ],
)
def test_fit_lira_rejects_bad_input(in_conf: object, out_conf: object, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        fit_lira(in_conf, out_conf, **kwargs)


def test_scores_and_audit_reject_bad_input() -> None:
    online = fit_lira(np.zeros((2, 3)), np.ones((2, 3)))
    offline = fit_lira(None, np.ones((2, 3)))
    with pytest.raises(ConfigError, match="3"):
        lira_scores(np.zeros(4), online)
    with pytest.raises(ConfigError):
        lira_scores(np.zeros((1, 3)), online)
    with pytest.raises(ConfigError):
        lira_scores(np.array([0.0, np.nan, 0.0]), offline)
    with pytest.raises(ConfigError, match="3"):
        lira_compare(np.zeros(3), np.zeros(4), online)
