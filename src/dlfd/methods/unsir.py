"""``unsir``: learn error-maximising noise for the forget labels, impair on it, repair on retain.

Paper: Tarun, Chundawat, Mandal and Kankanhalli, "Fast Yet Effective Machine Unlearning"
(UNSIR), IEEE TNNLS 2023. Reference implementations: the DLFD repository's ``unlearn/unsir.py``
and its age notebook (the version the DLFD paper compared against), and
``vikram2000b/bad-teaching-unlearning`` (``UNSIR_noise_train``, ``UNSIR_create_noisy_loader``).

1. Noise: per forget batch, noise of the batch's shape (seeded N(0, 1)) is optimised with Adam
   to minimise -loss(f(noise), y_forget) + noise_l2 * mean_i ||noise_i||^2 against the original.
2. Impair: ``impair_epochs`` of the task loss on the noise (forget labels), each noise batch
   concatenated with the next retain batch.
3. Repair: ``repair_epochs`` of the task loss on the retain set.

Defaults follow the DLFD comparison (``unlearn/unsir.py`` with the notebook's arguments): noise
Adam lr 0.1, 8 steps, L2 weight 0.1; impair and repair with Adam lr 0.001 (fresh optimiser each
stage, no weight decay), 1 impair epoch and 2 repair epochs.

Deviations:

* The noise is generated in eval mode, so BatchNorm statistics never see it (the DLFD code runs
  it in train mode, a defect).
* Impair trains on noise and retain samples, as the paper does; the DLFD code impairs on noise
  alone (``impair_retain=false``).
* One noise sample per forget sample, learned for that sample's label (DLFD learns noise for
  the first forget batch only and pairs noise ``i mod B`` with forget label ``i``; the paper,
  forgetting whole classes, learns noise per class label).
* The noise is projected onto ``data.input_bounds`` after every step when given; the
  references leave it unbounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import COUNT, EPOCHS, LR, WEIGHT, MethodParams, RunContext, UnlearnData
from dlfd.methods.common import adam, clip, cycle, run_epochs, task_loss_fn
from dlfd.methods.registry import register_method

Bounds = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class UnsirParams(MethodParams):
    """``noise_lr`` is Adam's on the noise, in input units; ``impair_lr``/``repair_lr`` Adam's."""

    test_settings: ClassVar[dict[str, Any]] = {"noise_steps": 2}

    noise_steps: int = setting(8, COUNT)
    noise_lr: float = setting(0.1, LR)
    noise_l2: float = setting(0.1, WEIGHT)
    impair_epochs: int = setting(1, EPOCHS)
    impair_lr: float = setting(0.001, LR)
    #: Concatenate each noise batch with a retain batch in the impair step (the paper).
    impair_retain: bool = True
    repair_epochs: int = setting(2, EPOCHS)
    repair_lr: float = setting(0.001, LR)


def error_maximising_noise(
    model: nn.Module,
    init: torch.Tensor,
    labels: torch.Tensor,
    task: str,
    *,
    steps: int,
    lr: float,
    l2: float,
    bounds: Bounds | None = None,
    ctx: RunContext | None = None,
) -> torch.Tensor:
    """Noise from ``init`` maximising the model's loss on ``labels`` minus an L2 penalty after
    ``steps`` Adam steps, projected onto ``bounds``. Eval mode, gradients on the noise only: no
    parameter, ``.grad`` or BatchNorm statistic changes."""
    was_training = model.training
    model.eval()
    noise = clip(init.detach().clone(), bounds).requires_grad_(True)
    optimizer = torch.optim.Adam([noise], lr=lr)
    try:
        for step in range(steps):
            penalty = noise.pow(2).flatten(1).sum(dim=1).mean()
            loss = -task_loss(model(noise), labels, task) + l2 * penalty
            if ctx is not None:
                ctx.check_loss(loss, where=f"noise step {step + 1}")
            (noise.grad,) = torch.autograd.grad(loss, [noise])
            optimizer.step()
            with torch.no_grad():
                noise.copy_(clip(noise, bounds))
            if ctx is not None:
                ctx.check_tensor(noise, what="the noise", where=f"noise step {step + 1}")
    finally:
        model.train(was_training)
    return noise.detach()


@register_method("unsir", UnsirParams)
def run_unsir(
    model: nn.Module, data: UnlearnData, params: UnsirParams, ctx: RunContext
) -> dict[str, int]:
    """Learn error-maximising noise for forget labels, impair on it, repair on retain."""
    bounds = data.input_bounds and tuple(b.to(ctx.device) for b in data.input_bounds)
    noise_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = len(data.forget)
    for index, (inputs, labels) in enumerate(data.forget):
        init = torch.randn(inputs.shape, generator=ctx.generator("noise", index, per_rank=True))
        noise = error_maximising_noise(
            model, init.to(ctx.device), labels.to(ctx.device), data.task, steps=params.noise_steps,
            lr=params.noise_lr, l2=params.noise_l2, bounds=bounds, ctx=ctx,
        )  # fmt: skip
        noise_batches.append((noise.cpu(), labels))
        ctx.progress(index + 1, total, "noise")
    if not noise_batches:
        raise ConfigError("the forget loader yields no batches")

    retain_batches = cycle(data.retain, "retain") if params.impair_retain else None

    def impair_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(noise_batches), generator=ctx.generator("impair order", epoch))
        for index in order.tolist():
            inputs, labels = noise_batches[index]
            if retain_batches is not None:
                retain_x, retain_y = next(retain_batches)
                inputs, labels = torch.cat([inputs, retain_x]), torch.cat([labels, retain_y])
            yield inputs, labels

    plain = task_loss_fn(data.task)
    for phase, batches, epochs, lr in (
        ("impair", impair_batches, params.impair_epochs, params.impair_lr),
        ("repair", data.retain, params.repair_epochs, params.repair_lr),
    ):
        count = len(noise_batches) if phase == "impair" else None
        optimizer = adam(model.parameters(), lr)
        run_epochs(model, batches, optimizer, ctx, epochs=epochs, loss_fn=plain, lr=lr,
                   phase=phase, batches=count)  # fmt: skip
    return {"noise_samples": sum(labels.shape[0] for _, labels in noise_batches)}
