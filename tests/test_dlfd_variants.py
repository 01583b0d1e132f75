"""DLFD beyond one pass: the update budget, the confident switch, the non-member term and the
re-initialisations (``updates``, ``switch_z``/``switch_patience``, ``match``, ``reinit``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch.utils.data import DataLoader

from dlfd.errors import ConfigError
from dlfd.methods import get_method, unlearn
from dlfd.methods.base import MonitorReading, RunContext, UnlearnData
from dlfd.methods.common import fisher_diagonal
from dlfd.methods.dlfd import DLFDParams, SwitchRule, _reinitialise
from dlfd.methods.nonmember import quantile_gap, quantiles_at
from dlfd.metrics.lira import confidence_margins
from test_methods_dlfd import BOUNDS, _loader, _model


def _run(model: torch.nn.Module | None = None, **hparams):
    return unlearn(
        _model() if model is None else model,
        _loader(40, 1),
        _loader(16, 2),
        _loader(16, 3, shuffle=False),
        method="dlfd",
        input_bounds=BOUNDS,
        **{"steps": 2, **hparams},
    )


def _reading(score: float, samples: int = 64) -> MonitorReading:
    return MonitorReading("b", score, 0.5, 0.5 + score, 0.0, attack_samples=samples)


def test_the_default_is_one_pass_and_updates_equal_to_one_pass_change_nothing() -> None:
    default = _run(forget_threshold=0.0)
    one_pass = _run(forget_threshold=0.0, updates=5)  # 40 retain samples in batches of 8
    assert default.info["batches"] == one_pass.info["batches"] == 5
    for key, value in default.model.state_dict().items():
        torch.testing.assert_close(value, one_pass.model.state_dict()[key], rtol=0, atol=0)


def test_updates_cycle_over_retain_with_synthesis_on_every_step() -> None:
    result = _run(forget_threshold=0.0, updates=12)
    assert result.info["batches"] == 12
    assert result.info["retain_batches_per_pass"] == 5
    assert result.info["synthesis_batches"] == list(range(1, 13))
    assert len(result.readings) == 12
    weights = [t["weight"] for t in result.trace]  # w0 -> w1 over the whole budget
    assert weights[0] == 0.0 and weights[-1] == 1.0


def test_switch_rule_needs_consecutive_confident_readings() -> None:
    rule = SwitchRule(DLFDParams(forget_threshold=0.15, switch_z=1.0, switch_patience=2))
    se = 0.5 / 8  # 64 attack samples
    rule.read(_reading(0.15 - se + 0.001))  # below the threshold, not by a standard error
    assert rule.forgetting
    rule.read(_reading(0.15 - se - 0.001))
    assert rule.forgetting  # one confident reading of two
    rule.read(_reading(0.0))
    assert not rule.forgetting
    rule.read(_reading(0.2))  # a high reading starts synthesis again, as in the paper
    assert rule.forgetting
    paper = SwitchRule(DLFDParams(forget_threshold=0.15))
    paper.read(_reading(0.149))
    assert not paper.forgetting


def test_confident_switch_synthesises_longer_than_the_paper_rule() -> None:
    paper = _run(forget_threshold=0.5)  # every score is below 0.5: stop after batch 1
    assert paper.info["synthesis_batches"] == [1]
    patient = _run(forget_threshold=0.5, switch_patience=3)
    assert patient.info["synthesis_batches"] == [1, 2, 3]
    # 32 attack samples: se = 0.088, z = 10 puts every bound above 0.5
    never = _run(forget_threshold=0.5, switch_z=10.0)
    assert never.info["synthesis_batches"] == [1, 2, 3, 4, 5]


def test_quantile_gap_is_the_wasserstein_distance_of_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.exponential(size=50), rng.exponential(2.0, size=50)
    gap = quantile_gap(torch.tensor(a), torch.tensor(b))
    assert float(gap) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
    c = rng.normal(size=37)
    levels = (np.arange(11) + 0.5) / 11
    expected = np.quantile(c, levels, method="inverted_cdf")
    np.testing.assert_allclose(quantiles_at(torch.tensor(c), 11).numpy(), expected)
    # 25 forget values against 100 targets: W1 between the two empirical distributions
    d, e = rng.exponential(size=25), rng.exponential(2.0, size=100)
    gap = float(quantile_gap(torch.tensor(d), torch.tensor(e)))
    assert gap == pytest.approx(wasserstein_distance(d, e), rel=0.1)


def test_quantile_gap_pulls_forget_values_toward_the_targets_only() -> None:
    forget = torch.tensor([0.01, 0.02, 0.03], requires_grad=True)
    targets = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    quantile_gap(forget, targets).backward()
    assert forget.grad is not None and bool((forget.grad < 0).all())  # descent raises them
    assert targets.grad is None


def _confidence_gap(model: torch.nn.Module) -> float:
    """W1 between the model's eval-mode confidences on forget and on validation."""
    model.eval()
    with torch.no_grad():
        values = [
            torch.cat([confidence_margins(model(x), y, "multiclass") for x, y in loader])
            for loader in (_loader(16, 2, shuffle=False), _loader(16, 3, shuffle=False))
        ]
    return float(quantile_gap(values[0], values[1]))


def _memorised() -> torch.nn.Module:
    """A small CNN that has memorised retain and forget (so forget confidences are high)."""
    model = _model()
    data = torch.utils.data.ConcatDataset([_loader(40, 1).dataset, _loader(16, 2).dataset])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        for x, y in DataLoader(data, batch_size=28, shuffle=False):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def test_confidence_matching_brings_forget_to_the_validation_confidences() -> None:
    original = _memorised()
    start = _confidence_gap(original)
    common = dict(forget_threshold=0.0, updates=20, lr=0.01, select=False)
    plain = _run(original, **common).model
    matched = _run(original, match="confidence", **common).model
    assert _confidence_gap(matched) < 0.5 * start
    assert _confidence_gap(matched) < _confidence_gap(plain)


def test_feature_matching_changes_the_model_and_reports_the_term() -> None:
    plain = _run(forget_threshold=0.0, select=False).model.state_dict()
    result = _run(forget_threshold=0.0, select=False, match="features")
    assert all("match" in t for t in result.trace)
    assert not torch.equal(plain["fc.weight"], result.model.state_dict()["fc.weight"])


def test_match_needs_validation_and_paper_mode() -> None:
    with pytest.raises(ConfigError, match="validation"):
        unlearn(
            _model(), _loader(16, 1), _loader(8, 2), None, method="dlfd", match="confidence",
            input_bounds=BOUNDS,
        )  # fmt: skip
    spec = get_method("dlfd")
    for key, value in {"updates": 10, "match": "confidence", "reinit": "head"}.items():
        with pytest.raises(ConfigError, match=key):
            spec.make_params({"mode": "official", key: value})
    for key, value in {"match": "labels", "reinit": "all", "updates": 0, "switch_z": -1.0}.items():
        with pytest.raises(ConfigError, match=key):
            spec.make_params({key: value})


def _context(params: DLFDParams) -> RunContext:
    return RunContext(method="dlfd", params=params, device=torch.device("cpu"), seed=0)


def test_head_reinit_resets_the_last_block_only() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = DLFDParams(reinit="head")
    data = UnlearnData(retain=_loader(16, 1), forget=_loader(8, 2))
    info = _reinitialise(model, params, data, _context(params))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(f"{info['block']}.") for k in changed)
    assert "fc.weight" in changed
    again = _model()
    _reinitialise(again, params, data, _context(params))  # seeded: the same fresh values
    torch.testing.assert_close(again.state_dict()["fc.weight"], after["fc.weight"])


def test_saliency_reinit_resets_the_least_salient_weights() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    params = DLFDParams(reinit="saliency", reinit_fraction=0.2)
    data = UnlearnData(retain=_loader(16, 1, shuffle=False), forget=_loader(8, 2))
    saliency = fisher_diagonal(model, data.retain, "multiclass", torch.device("cpu"))
    info = _reinitialise(model, params, data, _context(params))
    weights = [k for k, v in before.items() if v.dim() >= 2]
    changed = torch.cat(
        [(before[k] != dict(model.named_parameters())[k]).flatten() for k in weights]
    )
    scores = torch.cat([saliency[k].flatten() for k in weights])
    assert info["fraction"] == pytest.approx(0.2, abs=0.01)
    assert int(changed.sum()) <= info["elements"]
    assert int(changed.sum()) > 0.9 * info["elements"]  # fresh values rarely equal the old
    assert scores[changed].max() <= scores[~changed].min() + 1e-12  # the smallest ones
    biases = [k for k, v in before.items() if v.dim() < 2]
    for key in biases:
        assert torch.equal(before[key], dict(model.named_parameters())[key])


def test_monitor_readings_count_the_attack_samples() -> None:
    from dlfd.methods.base import Monitor

    def monitor(**kwargs) -> Monitor:
        return Monitor(
            _loader(24, 2), _loader(16, 3), task="multiclass", device=torch.device("cpu"),
            samples=256, seed=0, **kwargs,
        )  # fmt: skip

    model = _model()
    assert monitor().read(model, "b").attack_samples == 32  # balanced: 16 + 16
    assert monitor(balance=False).read(model, "b").attack_samples == 40
    assert np.isnan(monitor(read_forget=False).read(model, "b").mia_acc)
    assert monitor(read_forget=False).read(model, "b").attack_samples == 0


def test_running_without_input_bounds_warns_once_with_the_fix() -> None:
    with pytest.warns(UserWarning, match="input_bounds"):
        unlearn(_model(), _loader(16, 1), _loader(8, 2), None, method="dlfd", steps=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unlearn(
            _model(), _loader(16, 1), _loader(8, 2), None, method="dlfd", steps=1,
            input_bounds=BOUNDS,
        )  # fmt: skip
