"""``bad_teacher``: distil from the original on retain and from a random network on forget.

Paper: Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting?
Unlearning in Deep Networks using an Incompetent Teacher", AAAI 2023. Reference
implementation: ``vikram2000b/bad-teaching-unlearning`` (``unlearn.py``: ``UnlearnerLoss``,
``blindspot_unlearner``). The student (the model) starts as the original; the competent teacher
is a frozen copy of the original and the incompetent teacher a randomly initialised copy (eval
mode, so its BatchNorm uses the fresh running statistics, like the reference's untrained
ResNet). Every batch mixes retain and forget samples with a per-sample flag, and the loss is
the KL divergence from the flagged sample's teacher to the student at temperature ``T``:
KL(good || student) on retain samples, KL(bad || student) on forget samples. It is a sum of
KL terms, hence bounded below by zero.

Defaults follow the reference's experiment (``CIFARSuper20_Rocket_Unlearn.ipynb``): Adam, lr
1e-4, no weight decay, 1 epoch, KL temperature 1, a random 30% of the retain set.

Deviations:

* Not the DLFD repository's ``unlearn/badT.py``, whose loss on retain only,
  CE + KL(good) - KL(bad), is unbounded below and diverges (a train loss of -2.7e7 in its age
  notebook; it never reads the forget loader). Its settings (Adam lr 0.001, weight decay 5e-4,
  T = 4, 2 epochs) were tuned for that loss; pass them as overrides to approximate its budget.
* The reference shuffles the union of the forget set and a 30% retain subset into batches of
  256. Here the method sees loaders, not datasets (whose collate functions apply the input
  transform), so each step concatenates the next retain batch with the next forget batch, and
  an epoch is ``max(ceil(retain_fraction * len(retain)), len(forget))`` steps: every forget
  sample and at least ``retain_fraction`` of the retain batches are seen once per epoch (both
  loaders are cycled, so later epochs continue where the last one stopped). Forget samples
  therefore make up about half of each batch instead of |F| / (|F| + 0.3 |R|).
* The KL is :func:`dlfd.losses.distill_kl` (batch mean, times T^2, so multilabel works); the
  reference's ``F.kl_div`` default averages over batch x classes with no T^2, a constant factor
  that Adam largely absorbs.
* The incompetent teacher is the model's architecture re-initialised with each module's
  ``reset_parameters`` on CPU under a seed derived from the run seed (bit-identical across
  devices); a model's custom initialisation scheme is not repeated, and parameters owned by a
  module without ``reset_parameters`` keep the original's values (their count is in the
  result's ``info``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import distill_kl
from dlfd.methods.base import (
    EPOCHS,
    LR,
    TEMPERATURE,
    WEIGHT_DECAY,
    MethodParams,
    RunContext,
    UnlearnData,
    frozen_copy,
)
from dlfd.methods.common import adam, cycle, reinitialise, unresettable_parameters
from dlfd.methods.registry import register_method


@dataclass(frozen=True)
class BadTeacherParams(MethodParams):
    """Ranges: ``epochs`` [1, 10000], ``lr`` (Adam) (0, 10], ``weight_decay`` [0, 1],
    ``temperature`` (0, 100], ``retain_fraction`` (0, 1]."""

    epochs: int = setting(1, EPOCHS)
    lr: float = setting(1e-4, LR)
    weight_decay: float = setting(0.0, WEIGHT_DECAY)
    temperature: float = setting(1.0, TEMPERATURE)
    #: Share of the retain loader's batches distilled from the good teacher per epoch.
    retain_fraction: float = setting(0.3, "(0, 1]")


def incompetent_teacher(model: nn.Module, ctx: RunContext) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` with every resettable module re-initialised.

    The re-initialisation runs on CPU under a seed derived from the run seed, leaving the
    global generators untouched, then the teacher moves to ``ctx.device``.
    """
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


@register_method(
    "bad_teacher",
    "distil from the original on retain and from a random network on forget",
    BadTeacherParams,
)
def run_bad_teacher(
    model: nn.Module, data: UnlearnData, params: BadTeacherParams, ctx: RunContext
) -> dict[str, int]:
    if len(data.retain) == 0:
        raise ConfigError("the retain loader yields no batches")
    good = frozen_copy(model)
    bad = incompetent_teacher(model, ctx)
    optimizer = adam(model.parameters(), params.lr, params.weight_decay)
    steps = max(math.ceil(params.retain_fraction * len(data.retain)), len(data.forget))
    retain_batches, forget_batches = cycle(data.retain, "retain"), cycle(data.forget)
    student = ctx.parallel(model)
    for epoch in range(params.epochs):
        model.train()
        loss_sum, seen = 0.0, 0
        for step in range(steps):
            retain_x, _ = next(retain_batches)
            forget_x, _ = next(forget_batches)
            inputs = torch.cat([retain_x, forget_x]).to(ctx.device)
            is_forget = torch.cat(
                [
                    torch.zeros(retain_x.shape[0], dtype=torch.bool),
                    torch.ones(forget_x.shape[0], dtype=torch.bool),
                ]
            ).to(ctx.device)
            with torch.no_grad():
                good_logits, bad_logits = good(inputs), bad(inputs)
            loss = bad_teacher_loss(
                student(inputs), good_logits, bad_logits, is_forget, data.task, params.temperature
            )
            where = f"epoch {epoch + 1}, step {step + 1}"
            ctx.check_loss(loss, where=where)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ctx.check_model(model, where=where)
            loss_sum += loss.item() * inputs.shape[0]
            seen += inputs.shape[0]
            ctx.progress(epoch * steps + step + 1, params.epochs * steps, "distil")
        ctx.log(phase="distil", epoch=epoch + 1, loss=loss_sum / max(seen, 1))
        ctx.checkpoint(model, f"distil epoch {epoch + 1}")
    return {
        "steps_per_epoch": steps,
        "teacher_parameters_not_reset": len(unresettable_parameters(bad)),
    }
