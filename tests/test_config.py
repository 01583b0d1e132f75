"""``--set`` overrides: typed conversion, nesting and clear errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import pytest

from dlfd.config import (
    apply_overrides,
    check_bounds,
    invalid_examples,
    parse_overrides,
    setting,
    to_dict,
)
from dlfd.errors import ConfigError
from dlfd.recipe import TrainRecipe


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


@dataclass(frozen=True)
class _Demo:
    count: int = setting(1, "[1, 10]")
    rate: float | None = setting(None, "(0, 1]")
    kind: Literal["a", "b"] = "a"
    flag: bool = False

    def __post_init__(self) -> None:
        check_bounds(self)


def test_invalid_examples_are_derived_from_the_declarations() -> None:
    examples = invalid_examples(_Demo)
    assert {"count": 0} in examples and {"count": 11} in examples and {"rate": 0.0} in examples
    assert [e for e in examples if "rate" in e][1]["rate"] > 1.0
    assert {e.get("kind") for e in examples} - {None} and {"flag": "maybe"} in examples
    for example in examples:
        ((name, value),) = example.items()
        with pytest.raises(ConfigError, match=rf"^{name} must be .*, got {re.escape(repr(value))}"):
            _Demo(**example)
    _Demo(count=10, rate=None, kind="b", flag=True)
