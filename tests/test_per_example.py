"""The NeurIPS 2023 challenge's per-example epsilon score (metrics/per_example.py) and
``dlfd bench --per-example N`` (bench/per_example.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_BENCH
from dlfd.bench import BenchPlan, validate_plan
from dlfd.bench.per_example import SUMMARY_FILE, model_seed
from dlfd.cli import main
from dlfd.errors import ConfigError
from dlfd.metrics.per_example import (
    DELTA,
    EPSILON_CAP,
    bucket_edges,
    bucket_points,
    example_epsilon,
    final_score,
    forgetting_quality,
    logit_scaled_confidence,
    max_epsilon,
    per_example_epsilons,
    per_example_score,
)

# --- a brute-force reading of the reference metric.py, for comparison ----------------------


def _ref_rates_single(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.concatenate([pos, neg])
    lo, hi = both.min(), both.max()
    thr = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    fnr = (pos[:, None] < thr[None, :]).mean(axis=0)
    fpr = (neg[:, None] >= thr[None, :]).mean(axis=0)
    return fpr, fnr


def _ref_rates_double(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pd, nd = np.ptp(pos), np.ptp(neg)
    width = nd if pd > nd else pd
    if pd >= nd:
        pos, neg = neg, pos
    lo, hi = pos.min() + width - 2.0, pos.max() + 2.0
    rights = np.linspace(lo, hi, int(np.ceil((hi - lo) * 100)))
    n_left = int(np.ceil(4.0 * 100))
    left = np.concatenate([np.linspace(r - width - 2, r - width + 2, n_left) for r in rights])
    right = np.repeat(rights, n_left)

    def inside(c: np.ndarray) -> np.ndarray:
        return ((left[None, :] <= c[:, None]) & (c[:, None] <= right[None, :])).mean(axis=0)

    tpr, fpr = inside(pos), inside(neg)
    return fpr, 1.0 - tpr


def _ref_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float = DELTA) -> float:
    pd, nd = np.ptp(pos), np.ptp(neg)
    largest, smallest = max(pd, nd), min(pd, nd)
    if largest > 0 and smallest / largest < 0.01:
        return EPSILON_CAP
    rates = [_ref_rates_double(pos, neg), _ref_rates_single(pos, neg)]
    fpr = np.concatenate([r[0] for r in rates])
    fnr = np.concatenate([r[1] for r in rates])
    eps = np.zeros(fpr.shape)
    eps[(fpr + fnr) == 0] = np.inf
    eps[(eps == 0) & (fpr * fnr == 0)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1 - delta - fpr) - np.log(fnr)
        b = np.log(1 - delta - fnr) - np.log(fpr)
        both = np.stack([a, b])
        best = np.where(
            np.isnan(both).all(axis=0),
            np.nan,
            np.nanmax(np.where(np.isnan(both), -np.inf, both), axis=0),
        )
    eps = np.where(eps == 0, np.clip(best, 0, None), eps)
    kept = eps[~np.isnan(eps)]
    return float(np.clip(kept.max(), 0, EPSILON_CAP)) if kept.size else 0.0


def _ref_forget_score(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, float]:
    n, m = unlearned.shape
    rp = np.median(retrained, axis=0) > np.median(unlearned, axis=0)
    eps = []
    for i in range(m):
        pos, neg = (
            (retrained[:, i], unlearned[:, i]) if rp[i] else (unlearned[:, i], retrained[:, i])
        )
        eps.append(_ref_epsilon(pos, neg))
    top = np.ceil(np.log(n - 1))
    buckets, start, points = {}, 0.0, 1.0
    while start + 0.5 <= top:
        buckets[start] = points
        points /= 2
        start += 0.5
    score = 0.0
    for e in eps:
        for s, p in buckets.items():
            if e < s + 0.5:
                score += p
                break
    return np.asarray(eps), score / m


# --- epsilon -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "shift", "seed"), [(8, 0.0, 0), (8, 0.7, 1), (16, 0.3, 2), (16, 3.0, 3)]
)
def test_epsilons_match_the_reference_on_gaussians(n: int, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    unlearned = rng.normal(0.0, 1.0, (n, 12))
    retrained = rng.normal(shift, rng.uniform(0.5, 1.5), (n, 12))
    expected_eps, expected_f = _ref_forget_score(unlearned, retrained)
    eps = per_example_epsilons(unlearned, retrained)
    np.testing.assert_allclose(eps, expected_eps, rtol=0, atol=1e-9)
    assert forgetting_quality(eps, n) == pytest.approx(expected_f, abs=1e-12)


def test_identical_samples_are_top_bucket_and_separated_ones_bottom() -> None:
    rng = np.random.default_rng(4)
    same = rng.normal(0.0, 1.0, (32, 10))
    eps = per_example_epsilons(same, same.copy())
    assert np.all(eps == 0.0)
    assert np.all(bucket_points(eps, 32) == 1.0)
    assert forgetting_quality(eps, 32) == 1.0
    far = per_example_epsilons(same, same + 25.0)
    assert np.all(far == EPSILON_CAP)
    assert np.all(bucket_points(far, 32) == 0.0)
    assert forgetting_quality(far, 32) == 0.0


def test_close_distributions_score_better_than_far_ones() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 1.0, (64, 20))
    near = per_example_epsilons(base, rng.normal(0.0, 1.0, (64, 20)))
    mid = per_example_epsilons(base, rng.normal(1.5, 1.0, (64, 20)))
    assert forgetting_quality(near, 64) > forgetting_quality(mid, 64)
    assert np.median(near) < np.median(mid)


def test_degenerate_samples() -> None:
    same = np.full(5, 1.25)
    assert example_epsilon(same, same.copy()) == 0.0  # the reference fails an assertion here
    assert example_epsilon(np.full(5, 2.0), np.full(5, 1.0)) == EPSILON_CAP  # perfectly separated
    spread = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    assert example_epsilon(spread, np.full(5, 1.0)) == EPSILON_CAP  # one side peaky (range 0)
    # range ratio just below / above 1%: the peaky shortcut, then the threshold attacks
    assert example_epsilon(spread, 1.0 + spread * 0.0099) == EPSILON_CAP
    narrow = 1.0 + spread * 0.0101
    assert example_epsilon(spread, narrow) == pytest.approx(_ref_epsilon(spread, narrow), abs=1e-9)
    assert example_epsilon(spread, narrow) < EPSILON_CAP
    # per_example_epsilons picks the positive side by median, ties -> unlearned
    u = np.array([[0.0], [1.0], [2.0], [3.0]])
    r = np.array([[0.0], [1.0], [2.0], [3.0]]) + 0.001
    assert per_example_epsilons(u, r)[0] == pytest.approx(_ref_epsilon(r[:, 0], u[:, 0]), abs=1e-9)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError):
        per_example_epsilons(np.zeros((3, 4)), np.zeros((4, 4)))
    with pytest.raises(ConfigError):
        per_example_epsilons(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ConfigError):
        per_example_epsilons(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ConfigError):
        max_epsilon(1)
    with pytest.raises(ConfigError):
        bucket_points([-0.1], 4)


# --- buckets -----------------------------------------------------------------------------


def test_bucket_edges_by_number_of_models() -> None:
    assert max_epsilon(2) == 0.0 and bucket_edges(2) == []
    assert max_epsilon(3) == 1.0
    assert bucket_edges(3) == [(0.0, 0.5, 1.0), (0.5, 1.0, 0.5)]
    assert max_epsilon(4) == 2.0
    assert [b[2] for b in bucket_edges(4)] == [1.0, 0.5, 0.25, 0.125]
    assert max_epsilon(512) == 7.0  # the challenge's N
    edges = bucket_edges(512)
    assert len(edges) == 14 and edges[-1] == (6.5, 7.0, 0.5**13)


def test_bucket_points_at_and_around_each_edge() -> None:
    tiny = 1e-12
    values, expected = [], []
    for low, high, points in bucket_edges(4):
        values += [low, low + tiny, high - tiny]
        expected += [points, points, points]
    values += [2.0, 2.0 + tiny, 7.3, EPSILON_CAP]
    expected += [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(bucket_points(values, 4), expected)
    # the same by the reference's loop
    _, f = _ref_forget_score(np.zeros((4, 1)), np.zeros((4, 1)))
    assert f == 1.0
    assert np.all(bucket_points([0.0, 0.49, 5.0], 2) == 0.0)  # N = 2: no bucket at all
    assert forgetting_quality([0.0, 0.5, 1.0, 1.5], 4) == pytest.approx(
        (1 + 0.5 + 0.25 + 0.125) / 4
    )


# --- final score -------------------------------------------------------------------------


def test_final_score_by_hand() -> None:
    score = final_score(
        0.5,
        unlearned_retain=[0.8, 0.9],
        retrained_retain=[1.0, 0.9],
        unlearned_test=[0.6, 0.7],
        retrained_test=[0.5, 0.8],
    )
    assert score == pytest.approx(0.5 * (0.85 / 0.95) * (0.65 / 0.65))
    assert math.isnan(
        final_score(
            1.0,
            unlearned_retain=[1.0],
            retrained_retain=[0.0],
            unlearned_test=[1.0],
            retrained_test=[1.0],
        )
    )
    with pytest.raises(ConfigError):
        final_score(
            1.0,
            unlearned_retain=[1.5],
            retrained_retain=[1],
            unlearned_test=[1],
            retrained_test=[1],
        )


def test_whole_score_on_a_tiny_example() -> None:
    # 4 models, 3 examples: example 0 identical (eps 0, 1 point), example 1 far apart (cap,
    # 0 points), example 2 one model apart in the tail
    u = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    r = u.copy()
    r[:, 1] += 40.0
    r[3, 2] = 3.5
    result = per_example_score(
        u,
        r,
        unlearned_retain=[0.9] * 4,
        retrained_retain=[1.0] * 4,
        unlearned_test=[0.7] * 4,
        retrained_test=[0.8] * 4,
    )
    expected_eps, expected_f = _ref_forget_score(u, r)
    np.testing.assert_allclose(result.epsilons, expected_eps, atol=1e-9)
    assert result.epsilons[0] == 0.0 and result.epsilons[1] == EPSILON_CAP
    assert result.forgetting_quality == pytest.approx(expected_f)
    hand_f = (1.0 + 0.0 + bucket_points([expected_eps[2]], 4)[0]) / 3
    assert result.forgetting_quality == pytest.approx(hand_f)
    assert result.retain_ratio == pytest.approx(0.9) and result.test_ratio == pytest.approx(0.875)
    assert result.score == pytest.approx(hand_f * 0.9 * 0.875)
    as_json = result.to_dict()
    assert as_json["per_example_score"] == result.score and len(as_json["epsilons"]) == 3


# --- statistic ---------------------------------------------------------------------------


def test_logit_scaled_confidence() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-3.0, 5.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    p = torch.softmax(logits.double(), dim=1)[torch.arange(3), labels].numpy()
    np.testing.assert_allclose(logit_scaled_confidence(logits, labels), np.log(p / (1 - p)))
    z = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    y = torch.tensor([[1, 0], [0, 1]])
    expected = [(2.0 + 1.0) / 2, (-0.5 + 3.0) / 2]
    np.testing.assert_allclose(logit_scaled_confidence(z, y, "multilabel"), expected)


# --- plan and seeds ----------------------------------------------------------------------


def test_plan_validates_per_example(tmp_path: Path) -> None:
    for bad in (1, -1, True, 5000):
        with pytest.raises(ConfigError, match="per-example"):
            validate_plan(BenchPlan(dataset="orl-glasses", out=tmp_path, per_example=bad))
    validate_plan(BenchPlan(dataset="orl-glasses", out=tmp_path, per_example=4))


def test_model_seeds_are_deterministic() -> None:
    assert model_seed(7, 0) == 7
    seeds = [model_seed(7, k) for k in range(1, 6)]
    assert seeds == [model_seed(7, k) for k in range(1, 6)]
    assert len(set(seeds) | {7}) == 6
    assert all(0 <= s < 2**32 for s in seeds)


# --- a tiny bench end to end -------------------------------------------------------------


def test_bench_per_example_end_to_end(
    tmp_path: Path, csv_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [
        "bench",
        "--dataset",
        "csv",
        "--data-root",
        str(csv_dataset),
        *FAST_BENCH,
        "--set",
        "finetune.epochs=1",
        "--methods",
        "finetune",
        "--seeds",
        "0",
        "--per-example",
        "2",
        "--quiet",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]

    def bench() -> None:
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err

    bench()
    records = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in records] == [("finetune", 0)]
    record = records[0]
    entry_file = out / record["per_example_file"]
    assert entry_file == out / "seed-0" / "per-example" / "finetune.json"
    entry = json.loads(entry_file.read_text())
    assert entry["n_models"] == 2 and entry["model_seeds"][0] == 0
    n_forget = json.loads((out / "seed-0" / "finetune.result.json").read_text())["split_sizes"][
        "forget"
    ]
    assert len(entry["epsilons"]) == n_forget == len(entry["points"])
    assert all(0.0 <= e <= EPSILON_CAP for e in entry["epsilons"])
    assert entry["buckets"] == [] and entry["forgetting_quality"] == 0.0  # N = 2: no bucket
    assert record["forgetting_quality"] == entry["forgetting_quality"]
    assert record["per_example_score"] == entry["per_example_score"] == 0.0
    assert set(entry["accuracies"]) == {"unlearned", "retrained"}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert [(s["method"], s["seed"]) for s in summary] == [("finetune", 0)]
    assert "epsilons" not in summary[0]
    folder = out / "seed-0" / "per-example"
    models = sorted(p.name for p in folder.glob("*.m*.json"))
    assert models == [
        "finetune.m0.json",
        "finetune.m1.json",
        "reference.m0.json",
        "reference.m1.json",
    ]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    bench()  # a rerun reuses every entry and every model's numbers
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert "per-example finetune finished earlier; reused" in (out / "bench.log").read_text()
    again = json.loads((out / "results.json").read_text())[0]
    assert again["per_example_score"] == record["per_example_score"]

    # a changed entry file is redone, its models' numbers reused
    entry_file.write_text(json.dumps({**entry, "config_sha256": "x"}))
    bench()
    redone = json.loads(entry_file.read_text())
    assert redone["epsilons"] == entry["epsilons"]
    assert (folder / "finetune.m1.json").stat().st_mtime_ns == before["finetune.m1.json"]


def test_report_shows_the_per_example_table_and_epsilon_figure(tmp_path: Path) -> None:
    from dlfd.report import build_report
    from test_report import write_bench_dir

    folder = write_bench_dir(tmp_path / "b")
    results = json.loads((folder / "results.json").read_text())
    for k, record in enumerate(results):
        if record["method"] in ("original", "dlfd"):
            name = f"seed-{record['seed']}/per-example/{record['method']}.json"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            epsilons = [0.1 * (k % 5) + 0.2 * j for j in range(20)]
            (folder / name).write_text(json.dumps({"epsilons": epsilons, "buckets": [0.5, 1.0]}))
            record.update(
                per_example_score=0.3 + 0.01 * k, forgetting_quality=0.5, per_example_file=name
            )
    (folder / "results.json").write_text(json.dumps(results))
    report = build_report(folder)
    md = (folder / "report.md").read_text()
    assert "Per-example epsilon score" in md and "per_example_score" in md
    assert "epsilons" in report.figures and report.figures["epsilons"].stat().st_size > 1000
    outside = dict(results[0], per_example_file="../elsewhere.json")
    (folder / "results.json").write_text(json.dumps([outside, *results[1:]]))
    with pytest.raises(ConfigError, match="leaves the results folder"):
        build_report(folder)
