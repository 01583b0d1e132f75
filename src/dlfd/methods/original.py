"""``original``: the identity method, so the original model can sit in tables as a row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dlfd.methods.base import MethodParams, RunContext, UnlearnData
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class OriginalParams(MethodParams):
    """No settings; selection is off because there is nothing to select from."""

    test_settings: ClassVar[dict[str, Any]] = {}

    select: bool = False


@register_method("original", OriginalParams)
def run_original(
    model: nn.Module, data: UnlearnData, params: OriginalParams, ctx: RunContext
) -> None:
    """The model before unlearning (reference row), returned unchanged."""
