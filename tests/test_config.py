"""``--set`` overrides: typed conversion, nesting and clear errors."""

from __future__ import annotations

import pytest

from dlfd.config import apply_overrides, parse_overrides, to_dict
from dlfd.errors import ConfigError
from dlfd.training.recipe import TrainRecipe


def test_parse_overrides_splits_on_first_equals() -> None:
    assert parse_overrides(["lr=0.1", "model = small_cnn", "x=a=b"]) == {
        "lr": "0.1",
        "model": "small_cnn",
        "x": "a=b",
    }


@pytest.mark.parametrize("item", ["lr", "=3", ""])
def test_parse_overrides_rejects_malformed(item: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides([item])


def test_apply_overrides_converts_each_field_type() -> None:
    recipe = apply_overrides(
        TrainRecipe(),
        {
            "epochs": "3",
            "lr": "0.05",
            "schedule": "constant",
            "augment.hflip": "0",
            "augment.scale": "0.9,1.1",
        },
    )
    assert recipe.epochs == 3 and isinstance(recipe.epochs, int)
    assert recipe.lr == pytest.approx(0.05)
    assert recipe.schedule == "constant"
    assert recipe.augment.hflip == 0.0
    assert recipe.augment.scale == (0.9, 1.1)
    assert TrainRecipe().epochs != 3  # the original is untouched


def test_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'epoch'.*epochs"):
        apply_overrides(TrainRecipe(), {"epoch": "3"})
    with pytest.raises(ConfigError, match=r"augment\.flip"):
        apply_overrides(TrainRecipe(), {"augment.flip": "0"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", "three", "epochs must be int"),
        ("schedule", "step", "schedule must be one of"),
        ("epochs", "0", "epochs"),
        ("lr", "-1", "lr"),
        ("augment.hflip", "2", "hflip"),
        ("augment.scale", "1", "2 comma-separated"),
        ("lr.x", "1", "no sub-settings"),
    ],
)
def test_invalid_values_raise_config_error(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(TrainRecipe(), {key: value})


def test_to_dict_is_json_ready() -> None:
    data = to_dict(TrainRecipe())
    assert data["augment"]["scale"] == [1.0, 1.0]
    assert data["model"] == "resnet18_mlp"
