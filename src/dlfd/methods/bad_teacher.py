"""``bad_teacher``: distil from the original on retain and from a random network on forget.

Paper: Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting?
Unlearning in Deep Networks using an Incompetent Teacher", AAAI 2023. Reference
implementation: ``vikram2000b/bad-teaching-unlearning`` (``unlearn.py``: ``UnlearnerLoss``,
``blindspot_unlearner``). The student starts as the original; the competent teacher is a frozen
copy of it, the incompetent teacher a randomly initialised copy (eval mode, so its BatchNorm
uses fresh running statistics, like the reference's untrained ResNet). Each batch mixes retain
and forget samples; the loss is the KL divergence at temperature ``T`` from each sample's
teacher (good on retain, bad on forget) to the student: bounded below by zero.

Defaults follow the reference's experiment (``CIFARSuper20_Rocket_Unlearn.ipynb``): Adam, lr
1e-4, no weight decay, 1 epoch, KL temperature 1, a random 30% of the retain set.

Deviations:

* Not the DLFD repository's ``unlearn/badT.py``, whose loss on retain only,
  CE + KL(good) - KL(bad), is unbounded below and diverges (a train loss of -2.7e7 in its age
  notebook); its settings (Adam lr 0.001, weight decay 5e-4, T = 4, 2 epochs) can be passed.
* The reference shuffles the union of the forget set and a 30% retain subset into batches of
  256. Here each step concatenates the next retain batch with the next forget batch, and an
  epoch is ``max(ceil(retain_fraction * len(retain)), len(forget))`` steps (both loaders cycled
  across epochs), so forget samples are about half of each batch, not |F| / (|F| + 0.3 |R|).
* The KL is :func:`dlfd.losses.distill_kl` (batch mean, times T^2, so multilabel works); the
  reference's ``F.kl_div`` averages over batch x classes with no T^2, a constant factor that
  Adam largely absorbs.
* The incompetent teacher is re-initialised on CPU under a seed derived from the run seed
  (bit-identical across devices) with each module's ``reset_parameters`` then
  ``init_weights()``; parameters of modules without ``reset_parameters`` keep the original's
  values (counted in ``info``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import distill_kl
from dlfd.methods.base import (
    TEMPERATURE,
    WEIGHT_DECAY,
    RunContext,
    TrainParams,
    UnlearnData,
    frozen_copy,
)
from dlfd.methods.common import adam, cycle, reinitialise, run_epochs, unresettable_parameters
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class BadTeacherParams(TrainParams):
    test_settings: ClassVar[dict[str, Any]] = {"epochs": 1}
    epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = setting(0.0, WEIGHT_DECAY)
    temperature: float = setting(1.0, TEMPERATURE)
    #: Share of the retain loader's batches distilled from the good teacher per epoch.
    retain_fraction: float = setting(0.3, "(0, 1]")


def incompetent_teacher(model: nn.Module, ctx: RunContext) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` re-initialised on CPU under a seed derived from the
    run seed (the global generators untouched), then moved to ``ctx.device``."""
    teacher = frozen_copy(model).to("cpu")
    seed = ctx.generator("incompetent teacher").initial_seed()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = reinitialise(teacher)
    if reset == 0:
        raise ConfigError(
            "bad_teacher needs a randomly initialised teacher, but the model has no module "
            "with reset_parameters()"
        )
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.to(ctx.device).eval()


def bad_teacher_loss(
    student_logits: torch.Tensor,
    good_logits: torch.Tensor,
    bad_logits: torch.Tensor,
    is_forget: torch.Tensor,
    task: str,
    temperature: float,
) -> torch.Tensor:
    """KL from each sample's teacher (bad where ``is_forget``, else good) to the student."""
    teacher_logits = torch.where(is_forget.unsqueeze(1), bad_logits, good_logits)
    return distill_kl(student_logits, teacher_logits, task, temperature)


@register_method("bad_teacher", BadTeacherParams)
def run_bad_teacher(
    model: nn.Module, data: UnlearnData, params: BadTeacherParams, ctx: RunContext
) -> dict[str, int]:
    """Distil from the original on retain and from a random network on forget."""
    if len(data.retain) == 0:
        raise ConfigError("the retain loader yields no batches")
    good = frozen_copy(model)
    bad = incompetent_teacher(model, ctx)
    optimizer = adam(model.parameters(), params.lr, params.weight_decay)
    steps = max(math.ceil(params.retain_fraction * len(data.retain)), len(data.forget))
    retain_batches, forget_batches = cycle(data.retain, "retain"), cycle(data.forget)

    def mixed_batches(_epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):
            (retain_x, _), (forget_x, _) = next(retain_batches), next(forget_batches)
            is_forget = torch.cat([torch.zeros(retain_x.shape[0], dtype=torch.bool),
                                   torch.ones(forget_x.shape[0], dtype=torch.bool)])  # fmt: skip
            yield torch.cat([retain_x, forget_x]), is_forget

    def distil(net: nn.Module, inputs: torch.Tensor, is_forget: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            good_logits, bad_logits = good(inputs), bad(inputs)
        return bad_teacher_loss(
            net(inputs), good_logits, bad_logits, is_forget, data.task, params.temperature
        )

    run_epochs(model, mixed_batches, optimizer, ctx, epochs=params.epochs, loss_fn=distil,
               lr=params.lr, phase="distil", batches=steps, unit="step")  # fmt: skip
    return {
        "steps_per_epoch": steps,
        "teacher_parameters_not_reset": len(unresettable_parameters(bad)),
    }
