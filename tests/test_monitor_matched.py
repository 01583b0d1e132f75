"""The methods' monitor can score forgetting with the label-matched attack."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfd.errors import ConfigError
from dlfd.methods import get_method
from dlfd.methods.base import Monitor


class LabelOnly(nn.Module):
    """Logits that depend only on the first pixel, which encodes the class: class 1 photos are
    easy (low loss), class 0 photos hard — never membership."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, 0, 0, 0]
        noise = x[:, 0, 0, 1] * 0.05
        return torch.stack([-(cls * 3) + noise, cls * 3 - 1 + noise], dim=1)


def _loader(labels: list[int], seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(len(labels), 1, 4, 4, generator=gen)
    y = torch.tensor(labels)
    x[:, 0, 0, 0] = y.float()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def test_matched_monitor_reads_membership_not_the_label() -> None:
    forget = _loader([1] * 40, 0)  # the forgotten people all wear glasses
    val = _loader([1] * 20 + [0] * 40, 1)  # most validation people do not
    common = {"task": "multiclass", "device": torch.device("cpu"), "samples": 256, "seed": 0}
    published = Monitor(forget, val, **common).read(LabelOnly(), "state")
    matched = Monitor(forget, val, matched=True, **common).read(LabelOnly(), "state")
    assert published.mia_acc > 0.8  # the label alone separates the sides
    assert abs(matched.mia_acc - 0.5) < 0.2
    assert matched.val_acc == published.val_acc  # accuracy still over the whole subsample


def test_matched_monitor_refuses_sides_without_enough_common_classes() -> None:
    common = {"task": "multiclass", "device": torch.device("cpu"), "samples": 256, "seed": 0}
    with pytest.raises(ConfigError, match="monitor_attack=matched"):
        Monitor(_loader([1] * 40, 0), _loader([0] * 40, 1), matched=True, **common)


def test_monitor_attack_is_a_shared_setting_with_two_choices() -> None:
    for key in ("finetune", "dlfd", "scrub"):
        assert get_method(key).make_params({"monitor_attack": "matched"}).monitor_attack == (
            "matched"
        )
    with pytest.raises(ConfigError, match="monitor_attack"):
        get_method("finetune").make_params({"monitor_attack": "strongest"})
