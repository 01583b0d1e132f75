"""Tests of dlfd.models: the registry, the built-in classifiers and feature extraction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlfd.errors import ConfigError
from dlfd.models import (
    create_model,
    extract_features,
    forward_with_features,
    list_models,
    penultimate_layer,
    register_model,
    validate_feature_layer,
)
from dlfd.models import registry as registry_module

MODEL_NAMES = list(list_models())
RESNETS = [name for name in MODEL_NAMES if name.startswith("resnet")]
NUM_CLASSES = 5


def _model(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES, **kwargs)


def _torchvision_resnet18_keys() -> set[str]:
    """torchvision resnet18's state_dict keys, written out independently of dlfd's code."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{p}" for p in bn), "fc.weight", "fc.bias"}
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            keys |= {f"{prefix}.conv1.weight", f"{prefix}.conv2.weight"}
            keys |= {f"{prefix}.bn{i}.{p}" for i in (1, 2) for p in bn}
            if layer > 1 and block == 0:
                keys.add(f"{prefix}.downsample.0.weight")
                keys |= {f"{prefix}.downsample.1.{p}" for p in bn}
    return keys


# --- registry ---------------------------------------------------------------------------------


def test_builtin_models_are_registered_and_sorted() -> None:
    models = list_models()
    assert {"resnet18", "resnet18_mlp", "small_cnn"} <= set(models)
    assert list(models) == sorted(models)
    assert all(isinstance(desc, str) and desc for desc in models.values())


def test_unknown_model_lists_available_names() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet99'") as info:
        create_model("resnet99", 10)
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes(num_classes: object) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("small_cnn", num_classes)


def test_unknown_kwarg_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*widht.*in_channels"):
        create_model("small_cnn", 10, widht=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("small_cnn", {"in_channels": 0}, "in_channels"),
        ("resnet18", {"in_channels": "3"}, "in_channels"),
        ("resnet18_mlp", {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_option_values(name: str, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_model(name, 10, **kwargs)


def test_register_custom_model_and_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module.MODELS, "_entries", dict(registry_module.MODELS._entries))

    @register_model("tiny_linear", "a test model")
    def tiny_linear(num_classes: int, *, in_channels: int = 3) -> nn.Module:
        model = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 4, num_classes))
        model.num_classes, model.feature_dim = num_classes, in_channels * 4
        return model

    model = create_model("tiny_linear", 4)
    assert model.arch == "tiny_linear" and model.num_classes == 4
    assert list_models()["tiny_linear"] == "a test model"
    with pytest.raises(ConfigError, match="already registered"):
        register_model("tiny_linear", "again")(tiny_linear)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("small_cnn", "again")(tiny_linear)


# --- every registered model -------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_attributes(name: str) -> None:
    model = _model(name)
    assert model.arch == name
    assert model.num_classes == NUM_CLASSES
    assert isinstance(model.feature_dim, int) and model.feature_dim > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shapes_and_split_forward(name: str) -> None:
    model = _model(name).eval()
    sizes = [(32, 32), (64, 64)] + ([(112, 92)] if name in RESNETS else [])
    with torch.no_grad():
        for height, width in sizes:
            x = torch.randn(2, 3, height, width)
            features = model.forward_features(x)
            logits = model(x)
            assert features.shape == (2, model.feature_dim)
            assert logits.shape == (2, NUM_CLASSES)
            torch.testing.assert_close(model.forward_head(features), logits)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_in_channels(name: str) -> None:
    model = _model(name, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_sgd_step_trains(name: str) -> None:
    model = _model(name)
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for key, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
    optimizer.step()
    optimizer.zero_grad()
    new_loss = nn.functional.cross_entropy(model(x), y)

    assert torch.isfinite(loss) and torch.isfinite(new_loss)
    assert new_loss.item() != loss.item()
    changed = [k for k, p in model.named_parameters() if not torch.equal(p, before[k])]
    assert len(changed) > len(before) // 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_init(name: str) -> None:
    first, second = _model(name).state_dict(), _model(name).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    other = create_model(name, NUM_CLASSES).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_penultimate_features_match_forward_features(name: str) -> None:
    model = _model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, features = forward_with_features(model, x)
        torch.testing.assert_close(features, model.forward_features(x))
        torch.testing.assert_close(logits, model(x))


# --- ResNet-18 specifics ----------------------------------------------------------------------


def test_resnet18_matches_torchvision_layout() -> None:
    model = create_model("resnet18", 1000)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    state = model.state_dict()
    assert set(state) == _torchvision_resnet18_keys()
    for key in ("layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "fc.weight"):
        assert key in state
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["fc.weight"].shape == (1000, 512)
    assert model.feature_dim == 512


def test_resnet18_init_like_torchvision() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", 10)
    assert torch.equal(model.bn1.weight, torch.ones(64))
    assert torch.equal(model.layer3[1].bn2.bias, torch.zeros(256))
    std = model.layer4[0].conv1.weight.std().item()
    expected = (2.0 / (512 * 3 * 3)) ** 0.5  # kaiming normal, fan_out, relu gain
    assert abs(std - expected) / expected < 0.05


def test_resnet18_mlp_head_and_trunk() -> None:
    model = create_model("resnet18_mlp", 7)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 128), (128, 7)]
    dropouts = [m for m in model.head if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropouts] == [0.5, 0.5]
    assert sum(isinstance(m, nn.ReLU) for m in model.head) == 2
    # The trunk is a ResNet-18 without fc: torchvision weights (less fc) load strictly.
    trunk_keys = _torchvision_resnet18_keys() - {"fc.weight", "fc.bias"}
    assert set(model.trunk.state_dict()) == trunk_keys
    source = create_model("resnet18", 1000).state_dict()
    model.trunk.load_state_dict({k: v for k, v in source.items() if not k.startswith("fc.")})
    torch.testing.assert_close(model.trunk.conv1.weight, source["conv1.weight"])


# --- feature extraction on user models --------------------------------------------------------


def _user_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def test_named_layer_on_user_model_matches_manual_and_has_gradients() -> None:
    model = _user_model()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    logits, features = forward_with_features(model, x, layer="4")
    assert features.shape == (2, 8)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(features, model[:5](x))
    features.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not m._forward_hooks for m in model.modules())


def test_conv_layer_is_flattened_and_not_changed_by_inplace_relu() -> None:
    model = _user_model()
    x = torch.randn(2, 3, 8, 8)
    features = extract_features(model, x, layer="0")
    assert features.shape == (2, 4 * 8 * 8)
    torch.testing.assert_close(features, model[0](x).flatten(1))  # pre-ReLU values kept
    assert (features < 0).any()


def test_resnet_bn1_layer_captured_before_inplace_relu() -> None:
    model = create_model("resnet18", 3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = extract_features(model, x, layer="bn1")
        torch.testing.assert_close(features, model.bn1(model.conv1(x)).flatten(1))


def test_hook_removed_on_exception() -> None:
    model = _user_model()
    with pytest.raises(RuntimeError):
        forward_with_features(model, torch.randn(2, 5, 8, 8), layer="4")  # wrong channel count
    assert all(not m._forward_hooks for m in model.modules())


def test_logits_layer_returns_logits() -> None:
    model = _user_model()
    x = torch.randn(2, 3, 8, 8)
    logits, features = forward_with_features(model, x, layer="logits")
    assert features is logits or torch.equal(features, logits)
    torch.testing.assert_close(logits, model(x))


def test_unknown_layer_is_config_error() -> None:
    model = _user_model()
    with pytest.raises(ConfigError, match=r"unknown feature layer 'fc'.*valid layers include"):
        forward_with_features(model, torch.randn(1, 3, 8, 8), layer="fc")
    with pytest.raises(ConfigError, match=r"did you mean 'layer4\.1\.bn2'"):
        validate_feature_layer(create_model("resnet18", 2), "layer4.1.bn3")
    with pytest.raises(ConfigError):
        validate_feature_layer(model, "")


@pytest.mark.parametrize("layer", ["penultimate", None])
def test_penultimate_of_a_plain_module_is_the_input_of_its_last_linear(layer: str | None) -> None:
    model = _user_model()
    x = torch.randn(2, 3, 8, 8)
    assert penultimate_layer(model) == "6:input"
    logits, features = forward_with_features(model, x, layer=layer)
    assert torch.equal(logits, model(x))
    assert torch.equal(features, model[:6](x))  # after the ReLU, what the head reads


def test_penultimate_without_forward_features_or_linear_is_config_error() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 8), nn.Flatten())
    with pytest.raises(ConfigError, match="name a layer"):
        forward_with_features(model, torch.randn(1, 3, 8, 8), layer="penultimate")


def test_layer_used_twice_is_config_error() -> None:
    model = create_model("resnet18", 2).eval()
    validate_feature_layer(model, "layer1.0.relu")  # exists, but runs twice per forward
    with pytest.raises(ConfigError, match="ran 2 times"), torch.no_grad():
        extract_features(model, torch.randn(1, 3, 32, 32), layer="layer1.0.relu")
    assert all(not m._forward_hooks for m in model.modules())
