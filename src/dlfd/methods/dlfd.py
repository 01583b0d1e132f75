"""``dlfd``: Distribution-Level Feature Distancing (Choi & Na, AAAI 2025, arXiv 2409.14747).

One pass over retain. For each retain batch, while the monitored forgetting score is at or
above ``forget_threshold``, K sign-gradient steps move a perturbation of the retain images so
that the entropic OT distance (cosine cost, log-domain Sinkhorn) between the *perturbed*
samples' features and the forget batch's features grows while the perturbed samples stay
correctly classified (classification weight rising linearly from ``w0`` to ``w1`` over the
epoch); the model then takes one optimiser step on the perturbed batch. Below the threshold,
batches are plain retain fine-tuning. The shared selection rule returns the best
validation-accuracy state whose score is <= ``save_threshold``.

``mode="paper"`` (default) is the paper's method with the official code's defects fixed: OT on
the perturbed samples' features; perturbation projected onto valid images in pixel space
(optional L-infinity ``budget``, pixel units); synthesis in eval mode (dropout does not
randomise the sign gradients, BatchNorm never sees the perturbation steps), training in train
mode; forget features computed once per batch; monitoring on seeded subsamples with a balanced
attack.

``mode="official"`` reproduces the official code (github.com/Dasol-Choi/DLFD,
``unlearn/dlfd.py``) where it differs, for comparison only: OT on the *clean* retain outputs
(no gradient, so it never steers the synthesis); the perturbed image clamped to [0, 1] in
normalised space; ``step_size`` in normalised units; forget and clean retain outputs
recomputed at every step; parameter gradients computed during synthesis; batches whose forget
batch is smaller skipped; after every batch a full evaluation (retain, forget and validation
losses, unbalanced attack on whole splits); training in eval mode from the second batch on.

Defaults: the official MUFAC values (SGD lr 0.008, momentum 0.9, weight decay 5e-4,
``ot_weight`` 3, ``w0`` 0, ``w1`` 1, K = 15, thresholds 0.15 / 0.09, epsilon 0.01, 50
Sinkhorn iterations) except the perturbation step: the official 0.4 normalised units (~0.1 in
pixels at ImageNet statistics, ~0.2 at mean/std 0.5) saturates the images in 15 steps; here
``step_size`` is 2/255 pixel units and ``budget`` 16/255 (measurements: docs/dlfd.md).

Beyond the paper (paper mode only; docs/dlfd.md): ``updates`` sets the optimiser steps of the
unlearning phase, cycling over retain (None: one pass); ``switch_z``/``switch_patience`` make
the switch wait until the score is below the threshold by ``switch_z`` standard errors on
``switch_patience`` consecutive readings; ``match`` pulls, while forgetting, the forget
samples' confidences (or features) toward the model's on validation samples, so they end up
looking never seen rather than as far away as possible; ``reinit`` re-initialises the head or
the least retain-salient weights first, DLFD then repairing the model.

Data-parallel (docs/distributed.md): each rank synthesises its share of the retain batch
against the whole global forget batch (OT on the gathered features, CE the rank's share of the
global mean), so each step follows the single-process gradient; the score read on rank 0 is
broadcast, so all ranks switch together. ``mode="official"`` runs on one process.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from dlfd.config import setting
from dlfd.errors import ConfigError
from dlfd.losses import task_loss
from dlfd.methods.base import (
    COUNT,
    LR,
    MOMENTUM,
    WEIGHT,
    WEIGHT_DECAY,
    MethodParams,
    Monitor,
    MonitorReading,
    RunContext,
    UnlearnData,
)
from dlfd.methods.common import (
    clip,
    cycle,
    fisher_diagonal,
    last_blocks,
    reinitialise,
    reinitialise_blocks,
    sgd,
)
from dlfd.methods.nonmember import Match, feature_distance, quantile_gap
from dlfd.methods.registry import register_method
from dlfd.metrics.lira import confidence_margins
from dlfd.models.features import (
    LOGITS,
    forward_with_features,
    penultimate_layer,
    validate_feature_layer,
)
from dlfd.ot import entropic_ot_loss
from dlfd.runtime import Precision
from dlfd.training.loop import optimiser_step

Mode = Literal["paper", "official"]
#: ``reinit``: nothing, the head (last block), or the ``reinit_fraction`` least retain-salient.
Reinit = Literal["none", "head", "saliency"]
#: Settings that only the paper mode has (the official mode reproduces a fixed schedule).
PAPER_ONLY = ("updates", "switch_z", "switch_patience", "match", "reinit")


@dataclass(frozen=True)
class DLFDParams(MethodParams):
    """DLFD's hyperparameters (defaults: module docstring). ``step_size`` and ``budget`` are in
    pixel units (1: the whole range; ``mode=official``: normalised units); ``epsilon``'s range
    reflects a cosine cost in [0, 2]."""

    test_settings: ClassVar[dict[str, Any]] = {"steps": 2}

    mode: Mode = "paper"
    features: str = "auto"
    lr: float = setting(0.008, LR)
    momentum: float = setting(0.9, MOMENTUM)
    weight_decay: float = setting(5e-4, WEIGHT_DECAY)
    ot_weight: float = setting(3.0, WEIGHT)
    w0: float = setting(0.0, WEIGHT)
    w1: float = setting(1.0, WEIGHT)
    steps: int = setting(15, "[1, 10000]")
    step_size: float = setting(2 / 255, "(0, 1]")
    budget: float | None = setting(16 / 255, "(0, 1]")
    epsilon: float = setting(0.01, "(0, 10]")
    sinkhorn_iters: int = setting(50, "[1, 100000]")
    forget_threshold: float = setting(0.15, "[0, 0.5]")
    monitor_every: int = setting(1, COUNT)
    #: optimiser steps of the unlearning phase, cycling over retain (None: one pass, the paper)
    updates: int | None = setting(None, COUNT)
    #: confident switch (:class:`SwitchRule`; 0 and 1: the paper's rule)
    switch_z: float = setting(0.0, "[0, 10]")
    switch_patience: int = setting(1, "[1, 1000]")
    #: pull the forget samples toward non-member (validation) samples while forgetting
    #: (:mod:`dlfd.methods.nonmember`)
    match: Match = "none"
    match_weight: float = setting(1.0, WEIGHT)
    #: re-initialise before the unlearning phase (:func:`_reinitialise`)
    reinit: Reinit = "none"
    reinit_fraction: float = setting(0.1, "(0, 1]")
    amp: bool = False
    channels_last: bool = False

    step_settings: ClassVar[tuple[str, ...] | None] = (
        "mode", "lr", "momentum", "ot_weight", "steps", "step_size", "budget", "epsilon",
        "updates", "match", "match_weight", "reinit",
    )  # fmt: skip

    def validate(self) -> None:
        if not (isinstance(self.features, str) and self.features):
            raise ConfigError(
                f"invalid DLFDParams value features={self.features!r}: features (auto, logits, "
                "penultimate or a layer name)"
            )
        if self.mode == "official":
            changed = [
                name
                for name in PAPER_ONLY
                if getattr(self, name) != getattr(DLFDParams, name, None)
            ]
            if changed:
                raise ConfigError(
                    f"invalid DLFDParams: {', '.join(changed)} belong to mode=paper; "
                    f"mode=official reproduces the official code's one-pass schedule"
                )


def feature_layer(model: nn.Module, requested: str) -> str:
    """The features DLFD compares: ``auto`` is the penultimate layer (the input of the
    classification head: ``forward_features`` where the model has it, else the input of its
    last ``nn.Linear``, recorded as ``NAME:input``), or the logits for a model with neither;
    any other value is checked against the model."""
    if requested == "auto":
        try:
            return penultimate_layer(model)
        except ConfigError:
            return LOGITS
    validate_feature_layer(model, requested)
    return requested


def classification_weight(params: DLFDParams, batch: int, batches: int) -> float:
    """The classification term's weight: linear from w0 (first batch) to w1."""
    return params.w0 + (params.w1 - params.w0) * batch / max(batches - 1, 1)


class PixelProjection:
    """Keeps ``x_r + delta`` a valid image (per-channel ``bounds`` in model-input space) and
    ``delta`` within the L-infinity budget; pixel-unit step and budget become per-channel
    amounts (one pixel range in input units is 1/std)."""

    def __init__(
        self,
        bounds: tuple[torch.Tensor, torch.Tensor] | None,
        budget: float | None,
        step_size: float,
        like: torch.Tensor,
    ) -> None:
        one = torch.ones(1, device=like.device, dtype=like.dtype)
        self.bounds = None if bounds is None else (bounds[0].to(one), bounds[1].to(one))
        scale = one if self.bounds is None else self.bounds[1] - self.bounds[0]  # 1 pixel range
        self.step = step_size * scale
        self.radius = None if budget is None else budget * scale

    def delta(self, delta: torch.Tensor) -> torch.Tensor:
        return delta if self.radius is None else clip(delta, (-self.radius, self.radius))

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return clip(x, self.bounds)


@register_method("dlfd", DLFDParams, uses_monitor=True)
def run_dlfd(model: nn.Module, data: UnlearnData, params: DLFDParams, ctx: RunContext) -> dict:
    """DLFD: synthesise retain samples far (OT) from forget features, fine-tune on them."""
    official = params.mode == "official"
    if official:
        ctx.single_process_only("mode=official reproduces a single-process reference code")
    if not official and data.input_bounds is None:
        warnings.warn(
            "DLFD runs without input_bounds: step_size and budget then apply in the model's "
            "input units (not pixels) and synthesised images are not kept valid; pass "
            "input_bounds=(low, high) per channel, e.g. ((0 - mean) / std, (1 - mean) / std)",
            UserWarning,
            stacklevel=2,
        )
    if (features := feature_layer(model, params.features)) != params.features:
        params = dataclasses.replace(params, features=features)
    use_amp = params.amp and ctx.device.type == "cuda"
    channels_last = params.channels_last and ctx.device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if official and ctx.monitor is not None:  # the official attack: whole splits, unbalanced
        ctx.monitor = Monitor(
            data.forget, data.val, task=data.task, device=ctx.device, samples=None,
            seed=0, balance=False,
        )  # fmt: skip
    # the non-member targets come from the model as given, before any re-initialisation
    matcher = NonmemberMatch(model, params, data, ctx) if params.match != "none" else None
    reinitialised = _reinitialise(model, params, data, ctx) if params.reinit != "none" else None
    optimizer = sgd(model.parameters(), params.lr, params.momentum, params.weight_decay)
    net = ctx.parallel(model)  # training steps; synthesis and monitoring use the plain model
    forget_batches = cycle(data.forget)
    retain_batches = cycle(data.retain, "retain")
    batches = len(data.retain) if params.updates is None else params.updates
    switch = SwitchRule(params)
    train_mode = True
    synthesis_s = step_s = 0.0
    synthesis_batches: list[int] = []
    skipped = 0
    switched_at: int | None = None

    for b in range(batches):
        x_r, y_r = next(retain_batches)
        x_f, y_f = next(forget_batches)
        x_r, y_r, x_f = x_r.to(ctx.device), y_r.to(ctx.device), x_f.to(ctx.device)
        if channels_last:
            x_r, x_f = (x.contiguous(memory_format=torch.channels_last) for x in (x_r, x_f))
        if official and x_f.shape[0] != x_r.shape[0]:
            skipped += 1  # the official loop `continue`s here: no step, no evaluation
            continue
        forgetting = switch.forgetting
        weight = classification_weight(params, b, batches)
        started = time.perf_counter()
        x_train = x_r
        if forgetting:
            x_train = _synthesise(model, x_r, y_r, x_f, weight, params, data, ctx, use_amp)
            synthesis_batches.append(b + 1)
        synthesis_s += time.perf_counter() - started

        started = time.perf_counter()
        model.train(train_mode)
        with _autocast(ctx.device, use_amp):
            loss = task_loss(net(x_train), y_r, data.task)
        match_value = None
        if matcher is not None and forgetting:
            match_term = matcher.term(model, x_f, y_f.to(ctx.device), use_amp)
            match_value = float(match_term.item())
            loss = loss + params.match_weight * match_term
            model.train(train_mode)
        where = f"batch {b + 1} ({'synthesis' if forgetting else 'retain'})"
        optimiser_step(model, optimizer, loss, where, ctx.diverged)
        step_s += time.perf_counter() - started

        record: dict[str, object] = {"batch": b + 1, "synthesis": forgetting,
                                     "loss": float(loss.item()), "weight": weight}  # fmt: skip
        if match_value is not None:
            record["match"] = match_value
        if ctx.monitor is not None and ((b + 1) % params.monitor_every == 0 or b + 1 == batches):
            if official:
                _official_extra_evaluation(model, data, ctx)
            reading = ctx.checkpoint(model, f"batch {b + 1}")
            assert reading is not None
            record.update(forgetting_score=reading.forgetting_score, val_acc=reading.val_acc)
            if official:
                train_mode = False  # its evaluation leaves the model in eval mode
            switch.read(reading)
            if forgetting and not switch.forgetting and switched_at is None:
                switched_at = b + 1
        ctx.log(**record)
        ctx.progress(b + 1, batches, "synthesis" if switch.forgetting else "fine-tune")

    return {
        "mode": params.mode,
        "features": params.features,
        "batches": batches,
        "retain_batches_per_pass": len(data.retain),
        "synthesis_batches": synthesis_batches,
        "switched_to_finetune_at_batch": switched_at,
        "skipped_batches": skipped,
        "synthesis_s": synthesis_s,
        "step_s": step_s,
        "amp": use_amp,
        "monitored": ctx.monitor is not None,
        "reinitialised": reinitialised,
    }


class SwitchRule:
    """When to stop synthesising: the paper stops after one reading below ``forget_threshold``;
    the confident rule asks for ``score + switch_z * se < forget_threshold`` on
    ``switch_patience`` consecutive readings, ``se = 0.5 / sqrt(n)`` being the binomial standard
    error of an attack accuracy near 0.5 on ``n`` samples. A reading above the threshold starts
    the synthesis again, as in the paper."""

    def __init__(self, params: DLFDParams) -> None:
        self.threshold = params.forget_threshold
        self.z = params.switch_z
        self.patience = params.switch_patience
        self.below = 0
        #: synthesise now? (yes before the first reading)
        self.forgetting = True

    def read(self, reading: MonitorReading) -> None:
        se = 0.5 / math.sqrt(reading.attack_samples) if reading.attack_samples > 0 else 0.0
        if reading.forgetting_score + self.z * se < self.threshold:
            self.below += 1
        else:
            self.below = 0
        self.forgetting = self.below < self.patience


class NonmemberMatch:
    """The ``match`` term: the forget batch's eval-mode confidences (or features) against those
    the model had on up to ``TARGET_SAMPLES`` validation samples when unlearning began (before
    any re-initialisation): a fixed target the term cannot chase."""

    TARGET_SAMPLES = 1024

    def __init__(
        self, model: nn.Module, params: DLFDParams, data: UnlearnData, ctx: RunContext
    ) -> None:
        if data.val is None:
            raise ConfigError(
                f"match={params.match} needs non-member samples: give a validation loader"
            )
        ctx.single_process_only(f"match={params.match} is not data-parallel yet")
        self.params = params
        self.task = data.task
        self.features = features = params.features
        self.device = ctx.device
        was_training = model.training
        model.eval()
        targets, seen = [], 0
        with torch.no_grad():
            for x_v, y_v in data.val:
                x_v, y_v = x_v.to(self.device), y_v.to(self.device)
                logits, feats = forward_with_features(model, x_v, features)
                targets.append(
                    feats.float() if params.match == "features"
                    else confidence_margins(logits, y_v, self.task)
                )  # fmt: skip
                seen += x_v.shape[0]
                if seen >= self.TARGET_SAMPLES:
                    break
        model.train(was_training)
        if not targets:
            raise ConfigError(f"match={params.match}: the validation loader yields no batches")
        self.target = torch.cat(targets)[: self.TARGET_SAMPLES]

    def term(
        self, model: nn.Module, x_f: torch.Tensor, y_f: torch.Tensor, use_amp: bool
    ) -> torch.Tensor:
        model.eval()
        with _autocast(self.device, use_amp):
            logits, forget_features = forward_with_features(model, x_f, self.features)
        if self.params.match == "features":
            return feature_distance(
                forget_features, self.target, self.params.epsilon, self.params.sinkhorn_iters
            )
        # the forget labels are the ones the model was trained on
        return quantile_gap(confidence_margins(logits, y_f, self.task), self.target)


def _reinitialise(
    model: nn.Module, params: DLFDParams, data: UnlearnData, ctx: RunContext
) -> dict[str, object]:
    """``reinit=head``: the model's last block is freshly initialised (seed derived from the run
    seed). ``reinit=saliency``: the ``reinit_fraction`` of weight elements (2+ dimensions) with
    the smallest retain-set Fisher saliency take fresh values; weights the retain set barely
    uses are where forget-specific memory can hide. Returns what was reset."""
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator("reinit")))
    if params.reinit == "head":
        blocks = last_blocks(model, 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            reinitialise_blocks(blocks, "dlfd reinit=head")
        ((name, block),) = blocks
        elements = sum(p.numel() for p in block.parameters())
        return {"what": "head", "block": name, "elements": elements}
    ctx.single_process_only("reinit=saliency reads per-process retain gradients")
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reinitialise(fresh)
    fresh_state = fresh.state_dict()
    saliency = fisher_diagonal(model, data.retain, data.task, ctx.device)
    weights = {n: v for n, v in saliency.items() if v.dim() >= 2}
    if not weights:
        raise ConfigError("reinit=saliency found no weight tensors (2 or more dimensions)")
    flat = torch.cat([v.flatten() for v in weights.values()]).float().cpu()
    count = max(1, int(params.reinit_fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, count, largest=False).indices] = True  # exactly `count`, ties cut
    parameters = dict(model.named_parameters())
    masks = chosen.split([value.numel() for value in weights.values()])
    with torch.no_grad():
        for (name, value), mask in zip(weights.items(), masks, strict=True):
            mask = mask.view_as(value).to(value.device)
            parameters[name].copy_(torch.where(mask, fresh_state[name], parameters[name]))
    return {"what": "saliency", "fraction": count / flat.numel(), "elements": count}


def _autocast(device: torch.device, use_amp: bool) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast with ``amp``; otherwise no context, so a run-wide one still applies."""
    return Precision(amp=use_amp).autocast(device)


def _synthesise(
    model: nn.Module,
    x_r: torch.Tensor,
    y_r: torch.Tensor,
    x_f: torch.Tensor,
    weight: float,
    params: DLFDParams,
    data: UnlearnData,
    ctx: RunContext,
    use_amp: bool,
) -> torch.Tensor:
    """Paper form: K sign-gradient steps on delta maximising OT(phi(x_r+delta), phi(x_f)) -
    weight * CE(f(x_r+delta), y_r), in eval mode; returns the projected perturbed batch.
    ``mode="official"``: the official code's synthesis, defects included (module docstring)."""
    if params.mode == "official":
        noise = torch.zeros_like(x_r, requires_grad=True)
        for step in range(params.steps):
            perturbed = (x_r + noise).clamp(0, 1)
            with _autocast(ctx.device, use_amp):
                perturbed_logits = model(perturbed)
                forget_logits = model(x_f)
                clean_logits = model(x_r)
                ot = entropic_ot_loss(
                    clean_logits, forget_logits, params.epsilon, params.sinkhorn_iters
                )
                ce = task_loss(perturbed_logits, y_r, data.task)
                objective = params.ot_weight * ot - weight * ce
            ctx.check_loss(objective, where=f"synthesis step {step + 1}")
            model.zero_grad(set_to_none=True)
            objective.backward()
            with torch.no_grad():
                noise += params.step_size * noise.grad.sign()
            noise.grad = None
        model.zero_grad(set_to_none=True)
        return (x_r + noise).clamp(0, 1).detach()
    model.eval()
    project = PixelProjection(data.input_bounds, params.budget, params.step_size, x_r)
    with torch.no_grad(), _autocast(ctx.device, use_amp):
        _, forget_features = forward_with_features(model, x_f, params.features)
        forget_features = ctx.gather(forget_features)
    delta = torch.zeros_like(x_r, requires_grad=True)
    for step in range(params.steps):
        with _autocast(ctx.device, use_amp):
            logits, features = forward_with_features(
                model, project.image(x_r + delta), params.features
            )
            features = ctx.gather(features)
            ot = entropic_ot_loss(features, forget_features, params.epsilon, params.sinkhorn_iters)
            ce = task_loss(logits, y_r, data.task)
            if features.shape[0] != x_r.shape[0]:
                ce = ce * (x_r.shape[0] / features.shape[0])  # this rank's share of the mean
            objective = params.ot_weight * ot - weight * ce
        ctx.check_loss(objective, where=f"synthesis step {step + 1}")
        (grad,) = torch.autograd.grad(objective, delta)
        with torch.no_grad():
            delta = project.delta(delta + project.step * grad.sign())
        delta.requires_grad_(True)
    return project.image(x_r + delta).detach()


@torch.no_grad()
def _official_extra_evaluation(model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
    """The official per-batch evaluation's work beyond our monitor (full retain and validation
    passes), kept only so the benchmark measures the official schedule's real cost."""
    started = time.perf_counter()
    model.eval()
    for loader in (data.retain, data.val):
        for x, y in loader or ():
            task_loss(model(x.to(ctx.device)), y.to(ctx.device), data.task, reduction="none")
    ctx.monitor_s += time.perf_counter() - started


__all__ = ["DLFDParams", "PixelProjection", "classification_weight", "run_dlfd"]
