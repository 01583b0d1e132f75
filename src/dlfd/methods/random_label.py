"""``random_label``: train on the forget set relabelled at random (wrongly), and on retain.

Paper: Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the "RL" baseline of Fan et al.,
"SalUn" (ICLR 2024). Reference implementation: ``OPTML-Group/Unlearn-Saliency``
``Classification/unlearn/RL.py``, whose loop is followed: each epoch is one pass over the forget
set with fresh random labels, then one pass over the retain set with the true labels, SGD steps
on the task loss throughout; the state is offered for selection at the end of every epoch.

Defaults are that repository's (``arg_parser.py``): 10 epochs, SGD lr 0.01, momentum 0.9,
weight decay 5e-4, constant learning rate (its step decay at epochs 91 and 136 is never reached
in 10 epochs). Batch sizes are the loaders'. Deviations: random labels are drawn uniformly from
the *other* classes, never the true one (``RL.py`` draws from all classes, so about 1/C of the
"forgotten" labels are correct; amnesiac unlearning means wrong labels); for multilabel tasks a
random 0/1 vector with at least one label flipped. Labels are drawn from the run's generator, so
a seed fixes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from dlfd.methods.base import RunContext, SGDParams, UnlearnData
from dlfd.methods.common import Schedule, relabel_epochs
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class RandomLabelParams(SGDParams):
    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1, "lr": 0.01}
    epochs: int = 10
    lr: float = 0.01
    schedule: Schedule = "constant"


@register_method("random_label", RandomLabelParams)
def run_random_label(
    model: nn.Module, data: UnlearnData, params: RandomLabelParams, ctx: RunContext
) -> None:
    """Train on forget with random wrong labels, then on retain, each epoch (amnesiac)."""
    relabel_epochs(model, data, params, ctx, phase="random_label")
