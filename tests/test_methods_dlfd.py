"""DLFD's mechanics: weight schedule, projection, synthesis, dynamic switch, official mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods import get_method, unlearn
from dlfd.methods.base import RunContext, UnlearnData
from dlfd.methods.dlfd import (
    DLFDParams,
    PixelProjection,
    _synthesise,
    classification_weight,
)
from dlfd.models import create_model
from dlfd.models.features import forward_with_features
from dlfd.ot import entropic_ot_loss

BOUNDS = (torch.full((3, 1, 1), -1.0), torch.full((3, 1, 1), 1.0))  # mean/std 0.5


def _loader(n: int, seed: int, shuffle: bool = True, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", 3)


def _run(val: bool = True, **hparams):
    return unlearn(
        _model(),
        _loader(40, 1),
        _loader(16, 2),
        _loader(16, 3, shuffle=False) if val else None,
        method="dlfd",
        input_bounds=BOUNDS,
        **{"steps": 2, **hparams},
    )


def test_classification_weight_rises_linearly_from_w0_to_w1() -> None:
    params = DLFDParams(w0=0.5, w1=1.0)
    weights = [classification_weight(params, b, 5) for b in range(5)]
    assert weights == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0])
    assert classification_weight(params, 0, 1) == 0.5


def test_projection_keeps_valid_images_within_budget_in_pixel_units() -> None:
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    project = PixelProjection(BOUNDS, budget=16 / 255, step_size=2 / 255, like=x)
    # mean/std 0.5: one pixel unit is 2 input units
    torch.testing.assert_close(project.step, torch.full((3, 1, 1), 4 / 255))
    delta = project.delta(torch.randn_like(x))
    assert delta.abs().max() <= 32 / 255 + 1e-7
    image = project.image(x + 10 * torch.randn_like(x))
    assert image.min() >= -1 and image.max() <= 1


def _context() -> RunContext:
    return RunContext(method="dlfd", params=DLFDParams(), device=torch.device("cpu"), seed=0)


def test_synthesis_increases_the_ot_distance_to_the_forget_features() -> None:
    model = _model().eval()
    x_r, y_r = next(iter(_loader(8, 4, shuffle=False)))
    x_f, _ = next(iter(_loader(8, 5, shuffle=False)))
    params = DLFDParams(
        steps=10, budget=0.2, step_size=0.02, ot_weight=1.0, w0=0.0, w1=0.0, features="logits"
    )
    data = UnlearnData(retain=_loader(8, 4), forget=_loader(8, 5), input_bounds=BOUNDS)
    x_s = _synthesise(model, x_r, y_r, x_f, 0.0, params, data, _context(), use_amp=False)

    def distance(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(
                entropic_ot_loss(
                    forward_with_features(model, x, "logits")[1],
                    forward_with_features(model, x_f, "logits")[1],
                )
            )

    assert distance(x_s) > distance(x_r)
    assert (x_s - x_r).abs().max() <= 0.2 * 2 + 1e-6  # budget in pixel units, 2 per unit
    assert x_s.min() >= -1 and x_s.max() <= 1


def test_classification_term_keeps_synthesised_samples_correct() -> None:
    model = _model().eval()
    x_r, y_r = next(iter(_loader(8, 4, shuffle=False)))
    x_f, _ = next(iter(_loader(8, 5, shuffle=False)))
    data = UnlearnData(retain=_loader(8, 4), forget=_loader(8, 5), input_bounds=BOUNDS)
    params = DLFDParams(steps=10, budget=0.3, step_size=0.03, ot_weight=0.0, features="logits")
    x_s = _synthesise(model, x_r, y_r, x_f, 1.0, params, data, _context(), use_amp=False)
    with torch.no_grad():
        before = task_loss(model(x_r), y_r, "multiclass")
        after = task_loss(model(x_s), y_r, "multiclass")
    assert after < before  # with OT off, the steps only descend the classification loss


def test_forward_passes_per_synthesis_batch_are_k_plus_two() -> None:
    calls: list[int] = []
    model = _model()
    model.fc.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    unlearn(
        model,
        _loader(16, 1, batch_size=8),
        _loader(8, 2),
        None,
        method="dlfd",
        steps=3,
        input_bounds=BOUNDS,
    )
    # per batch (the hook travels with the method's copy): forget features, K steps, update
    assert len(calls) == 2 * (3 + 2)


def test_dynamic_switch_stops_synthesis_once_the_score_is_low() -> None:
    always = _run(forget_threshold=0.0)
    assert always.info["synthesis_batches"] == [1, 2, 3, 4, 5]
    never_again = _run(forget_threshold=0.5)
    assert never_again.info["synthesis_batches"] == [1]
    assert never_again.info["switched_to_finetune_at_batch"] == 1
    assert len(never_again.readings) == 5
    assert [t["synthesis"] for t in never_again.trace] == [True, False, False, False, False]


def test_monitor_every_spaces_readings_and_always_reads_the_last_batch() -> None:
    result = _run(monitor_every=2)
    assert [r["where"] for r in result.readings] == ["batch 2", "batch 4", "batch 5"]


def test_without_validation_it_synthesises_every_batch_and_returns_the_last_state() -> None:
    result = _run(val=False)
    assert result.info["synthesis_batches"] == [1, 2, 3, 4, 5]
    assert result.selected.startswith("last state")
    assert result.readings == []


def test_features_option_changes_the_result_and_bad_layers_are_refused() -> None:
    logits = _run(forget_threshold=0.0, features="logits").model.state_dict()
    penult = _run(forget_threshold=0.0, features="penultimate").model.state_dict()
    named = _run(forget_threshold=0.0, features="features.2").model.state_dict()
    assert not torch.equal(logits["fc.weight"], penult["fc.weight"])
    assert not torch.equal(penult["fc.weight"], named["fc.weight"])
    with pytest.raises(ConfigError, match="no_such_layer"):
        _run(features="no_such_layer")


def test_official_mode_ignores_the_ot_term_and_trains_in_eval_mode_after_batch_one() -> None:
    a = _run(mode="official", forget_threshold=0.0, ot_weight=0.0).model.state_dict()
    b = _run(mode="official", forget_threshold=0.0, ot_weight=50.0).model.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key])  # OT on clean outputs has no gradient
    paper_a = _run(forget_threshold=0.0, ot_weight=0.0).model.state_dict()
    paper_b = _run(forget_threshold=0.0, ot_weight=50.0).model.state_dict()
    assert not torch.equal(paper_a["fc.weight"], paper_b["fc.weight"])

    # BatchNorm statistics move only in batch 1 (train mode); later steps run in eval mode
    def official(retain: DataLoader):
        return unlearn(
            _model(),
            retain,
            _loader(16, 2),
            _loader(16, 3, shuffle=False),
            method="dlfd",
            mode="official",
            steps=1,
            forget_threshold=0.5,
            input_bounds=BOUNDS,
            select=False,
        ).model.state_dict()

    x, y = next(iter(_loader(40, 1, shuffle=False)))
    first_only = official(DataLoader(TensorDataset(x, y), batch_size=8))
    five = official(_loader(40, 1, shuffle=False))
    key = "features.0.1.running_mean"
    torch.testing.assert_close(first_only[key], five[key])
    assert not torch.equal(five[key], _model().state_dict()[key])
    assert not torch.equal(five["fc.weight"], first_only["fc.weight"])


def test_official_mode_skips_batches_with_a_smaller_forget_batch() -> None:
    result = _run(mode="official", val=False)
    # forget has 16 samples in batches of 8: all full, so nothing is skipped
    assert result.info["skipped_batches"] == 0
    short = unlearn(
        _model(),
        _loader(40, 1),
        _loader(12, 2),
        None,
        method="dlfd",
        mode="official",
        steps=1,
        input_bounds=BOUNDS,
    )
    assert short.info["skipped_batches"] >= 1


def test_invalid_settings_are_refused() -> None:
    spec = get_method("dlfd")
    for key, value in {"steps": 0, "mode": "fast", "budget": -1.0, "epsilon": 0.0}.items():
        with pytest.raises(ConfigError, match=key):
            spec.make_params({key: value})


def test_auto_features_are_the_penultimate_layer_of_any_module_or_the_logits() -> None:
    assert _run(val=False, steps=1).info["features"] == "penultimate"
    # a plain module: the input of its last nn.Linear (hidden layer after the ReLU)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5), nn.ReLU(), nn.Linear(5, 3))
    result = unlearn(
        plain, _loader(16, 1), _loader(8, 2), None, method="dlfd", steps=1, input_bounds=BOUNDS
    )
    assert result.info["features"] == "3:input"
    x = torch.randn(4, 3, 16, 16)
    logits, features = forward_with_features(plain, x, "penultimate")
    assert torch.equal(features, plain[2](plain[1](plain[0](x))))
    assert torch.equal(logits, plain(x))
    # no nn.Linear head: the logits
    conv = nn.Sequential(nn.Conv2d(3, 3, 16), nn.Flatten())
    result = unlearn(
        conv, _loader(16, 1), _loader(8, 2), None, method="dlfd", steps=1, input_bounds=BOUNDS
    )
    assert result.info["features"] == "logits"
