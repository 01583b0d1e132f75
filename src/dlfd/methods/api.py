"""``dlfd.unlearn``: run any registered method on any classifier ``nn.Module``."""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dlfd.config import to_dict
from dlfd.data.batches import pair_batches
from dlfd.errors import ConfigError
from dlfd.methods.base import (
    Monitor,
    ProgressFn,
    RunContext,
    Selector,
    Task,
    UnlearnData,
    UnlearnResult,
    no_selection_record,
)
from dlfd.methods.registry import get_method
from dlfd.recipe import TrainRecipe
from dlfd.runtime import Precision, contiguous, derive_seed, resolve_device, seed_everything

if TYPE_CHECKING:
    from dlfd.distributed import DistributedContext


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def unlearn(
    model: nn.Module,
    retain_loader: DataLoader,
    forget_loader: DataLoader,
    val_loader: DataLoader | None = None,
    method: str = "dlfd",
    *,
    task: Task = "multiclass",
    device: str | torch.device | None = None,
    seed: int = 0,
    input_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
    recipe: TrainRecipe | None = None,
    on_progress: ProgressFn | None = None,
    dist: DistributedContext | None = None,
    batch_keys: tuple[str, str] | None = None,
    precision: Precision = Precision(),
    **hparams: Any,
) -> UnlearnResult:
    """Unlearn ``forget_loader``'s samples from ``model`` with ``method``; ``model`` is untouched.

    Loaders yield ``(inputs, labels, ...)`` batches (long class indices, or float 0/1 vectors
    for ``task="multilabel"``; items after the first two are ignored) or dict batches
    (``batch_keys=(input_key, label_key)``, else common names such as ``image``/``label``).
    ``hparams`` override the method's defaults (``dlfd methods`` lists them); values may be
    strings, as from the command line. With ``val_loader`` (people never trained on and never
    reported on) the shared selection rule applies; see
    :class:`dlfd.methods.base.MethodParams` (``selection``: ``forget_and_val`` or
    ``val_only``); ``result.selection`` records the rule, the number of states it examined and
    whether it read the forget set. ``device=None`` uses the model's device.
    Same seed, same inputs -> the same model, bit for bit on CPU.

    ``dist``: a data-parallel run (see :mod:`dlfd.distributed`): every rank calls this with
    its own shard loaders (:meth:`dlfd.data.loaders.ProblemLoaders.loader`'s ``shard``: rank r
    holds positions r, r + W, ... of each global batch) and runs on ``dist.device``; rank 0
    monitors and broadcasts its readings; every rank returns the same weights. Methods that
    cannot run data-parallel refuse with a ConfigError.

    ``precision``: bfloat16 autocast and/or channels-last for the whole run (recorded in
    ``result.info["precision"]`` when not the default float32).
    """
    spec = get_method(method)
    if task not in spec.tasks:
        raise ConfigError(
            f"method {method!r} supports {' and '.join(spec.tasks)} tasks, not {task!r}"
        )
    params = spec.make_params(hparams)
    if dist is not None:
        target = dist.device
    else:
        target = resolve_device(device) if device is not None else _model_device(model)
    started = time.perf_counter()

    working = precision.prepare(copy.deepcopy(model).to(target).requires_grad_(True))
    if dist is not None:
        dist.broadcast_module(working)  # every rank starts from rank 0's weights
    retain_loader, forget_loader, val_loader = (
        pair_batches(loader, batch_keys) for loader in (retain_loader, forget_loader, val_loader)
    )
    data = UnlearnData(retain_loader, forget_loader, val_loader, task, input_bounds, recipe)
    monitor = selector = None
    if val_loader is not None and (params.select or spec.uses_monitor):
        # the forgetting score is computed only when the selection rule or the method uses it
        read_forget = spec.uses_monitor or params.selection == "forget_and_val"
        monitor = Monitor(
            forget_loader,
            val_loader,
            task=task,
            device=target,
            samples=params.monitor_samples,
            seed=derive_seed(seed, "monitor"),
            dist=dist,
            read_forget=read_forget,
            matched=params.monitor_attack == "matched",
        )
        if params.select:
            selector = Selector(params.save_threshold, params.selection)
    ctx = RunContext(method, params, target, seed, monitor, selector, on_progress, dist=dist)
    seed_everything(derive_seed(seed, method))
    with precision.autocast(target):
        info = spec.fn(working, data, params, ctx) or {}
    if not precision.is_default:
        info = {**info, "precision": precision.to_dict()}
    ctx.check_model(working, where="the end of the run")  # methods without steps (ssd) too
    if selector is not None:
        selected = selector.restore(working)
    elif val_loader is None:
        selected = "last state: no validation loader, so no selection"
    else:
        selected = "last state: selection disabled (select=false)"
    if dist is not None:
        dist.sync_buffers(working)  # BatchNorm statistics ran per rank: keep rank 0's
    contiguous(working).eval().requires_grad_(True)  # a method's freezing never leaks
    wall = time.perf_counter() - started
    selection = selector.record() if selector is not None else no_selection_record()
    # the method's own algorithm reads the forgetting score (DLFD's switch): not the selection
    selection["method_reads_forget"] = spec.uses_monitor and monitor is not None
    return UnlearnResult(
        model=working,
        method=method,
        params=to_dict(params),
        seed=seed,
        device=str(target),
        selected=selected,
        wall_s=wall,
        train_s=wall - ctx.monitor_s,
        monitor_s=ctx.monitor_s,
        trace=ctx.trace,
        readings=[
            {
                "where": r.where,
                # None: not computed (selection=val_only, forget set not read)
                "forgetting_score": _number_or_none(r.forgetting_score),
                "val_acc": r.val_acc,
                "mia_acc": _number_or_none(r.mia_acc),
            }
            for r in ctx.readings
        ],
        info=info,
        world_size=1 if dist is None else dist.world_size,
        selection=selection,
    )


def _number_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value
