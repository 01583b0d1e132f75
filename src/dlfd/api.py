"""Evaluation and audit of any ``nn.Module`` on the user's own DataLoaders.

The CLI evaluates and audits checkpoints on dlfd's scenarios; here the same protocol runs on
plain PyTorch loaders, one per split: ``forget`` (the samples to forget), ``unseen`` (samples of
the same distribution the model never trained on: the attack's non-members), ``test`` and
``retain`` (``val`` optional). Batches may be tuples or dicts (see :mod:`dlfd.data.batches`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dlfd.audit.runner import MODELS, AuditSettings, assess_outputs
from dlfd.data.batches import pair_batches
from dlfd.errors import ConfigError
from dlfd.metrics.protocol import SplitOutputs, protocol_metrics
from dlfd.runtime import resolve_device
from dlfd.training.loop import ProgressFn

#: Splits every evaluation needs, and those it also reads when given.
REQUIRED_SPLITS = ("forget", "unseen", "test")
OPTIONAL_SPLITS = ("retain", "val")


def input_bounds(mean: Iterable[float], std: Iterable[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(low, high)`` of valid images in a model's normalised input space (a
    black and a white pixel: ``(0 - mean) / std`` and ``(1 - mean) / std``, shaped (C, 1, 1)),
    for ``dlfd.unlearn(..., input_bounds=...)`` when inputs are ``Normalize(mean, std)``-ed."""
    m = torch.as_tensor(list(mean), dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.as_tensor(list(std), dtype=torch.float32).reshape(-1, 1, 1)
    if m.shape != s.shape or not bool((s > 0).all()):
        raise ConfigError("mean and std need one value per channel, std > 0")
    return (0 - m) / s, (1 - m) / s


def _check_splits(loaders: Mapping[str, Any]) -> dict[str, Any]:
    missing = [split for split in REQUIRED_SPLITS if loaders.get(split) is None]
    unknown = sorted(set(loaders) - set(REQUIRED_SPLITS) - set(OPTIONAL_SPLITS))
    if missing or unknown:
        raise ConfigError(
            f"loaders must map {', '.join(REQUIRED_SPLITS)} (and optionally "
            f"{', '.join(OPTIONAL_SPLITS)}) to DataLoaders; "
            + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}")
        )
    return {split: loader for split, loader in loaders.items() if loader is not None}


@torch.no_grad()
def model_outputs(
    models: Mapping[str, nn.Module],
    loaders: Mapping[str, Any],
    *,
    device: str | torch.device | None = None,
    batch_keys: tuple[str, str] | None = None,
) -> dict[str, dict[str, SplitOutputs]]:
    """``outputs[model][split]``: logits and labels of every sample, in eval mode (modes are
    restored afterwards). Every model runs on the same batch, so the models' outputs stay
    paired sample by sample even when a loader shuffles."""
    params, cpu = next(iter(models.values())).parameters(), torch.device("cpu")
    target = resolve_device(device) if device is not None else next((p.device for p in params), cpu)
    modes = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    try:
        outputs: dict[str, dict[str, SplitOutputs]] = {name: {} for name in models}
        for split, loader in _check_splits(loaders).items():
            logits: dict[str, list[torch.Tensor]] = {name: [] for name in models}
            labels = []
            for inputs, batch_labels in pair_batches(loader, batch_keys):
                inputs = inputs.to(target)
                for name, model in models.items():
                    logits[name].append(model(inputs).float().cpu())
                labels.append(batch_labels.cpu())
            if not labels:
                raise ConfigError(f"the {split} loader yields no batches")
            for name in models:
                outputs[name][split] = SplitOutputs(torch.cat(logits[name]), torch.cat(labels))
        return outputs
    finally:
        for name, model in models.items():
            model.train(modes[name])


@dataclass(frozen=True)
class Evaluation:
    """The protocol's metrics of one model (and gaps to a reference when one was given), and
    the number of samples per split they were computed on."""

    task: str
    metrics: dict[str, float]
    sizes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model: nn.Module,
    loaders: Mapping[str, Any],
    *,
    task: str = "multiclass",
    reference: nn.Module | None = None,
    device: str | torch.device | None = None,
    batch_keys: tuple[str, str] | None = None,
    attacks: bool = False,
) -> Evaluation:
    """Evaluate ``model`` with the MUFAC/MUCAC protocol on the ``loaders`` (see the module's
    docstring); with ``reference`` (a model retrained without the forget set) the gaps to it;
    with ``attacks`` the stronger attacks too (AUC, TPR at 1% FPR)."""
    models = {"model": model} if reference is None else {"model": model, "reference": reference}
    outputs = model_outputs(models, loaders, device=device, batch_keys=batch_keys)
    metrics = protocol_metrics(
        outputs["model"], task=task, reference=outputs.get("reference"), attacks=attacks
    )
    return Evaluation(task, metrics, {split: len(o) for split, o in outputs["model"].items()})


@dataclass(frozen=True)
class Audit:
    """The audit's ``verdict`` (pass, inconclusive or fail), its ``summary`` sentence, and
    ``report``: every number behind them, the same sections as the CLI's certificate.json."""

    verdict: str
    summary: str
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "summary": self.summary, **self.report}


def audit_models(
    original: nn.Module,
    unlearned: nn.Module,
    reference: nn.Module,
    loaders: Mapping[str, Any],
    *,
    task: str = "multiclass",
    settings: AuditSettings | None = None,
    device: str | torch.device | None = None,
    batch_keys: tuple[str, str] | None = None,
    class_names: list[str] | None = None,
    on_progress: ProgressFn | None = None,
) -> Audit:
    """Audit ``unlearned`` against ``original`` and ``reference`` (retrained without the forget
    set) on the ``loaders`` (``retain`` is required here: the utility verdict compares it) —
    the ``dlfd audit`` verdict rules, without LiRA shadows or per-person evidence (those need
    a dlfd scenario). ``on_progress(done, total, phase)`` follows the bootstrap."""
    if loaders.get("retain") is None:
        raise ConfigError("the audit needs a retain loader (its utility verdict compares it)")
    settings = settings or AuditSettings()
    if settings.shadows:
        raise ConfigError("LiRA shadows need a dlfd scenario (dlfd audit --shadows N)")
    models = dict(zip(MODELS, (original, unlearned, reference), strict=True))
    outputs = model_outputs(models, loaders, device=device, batch_keys=batch_keys)
    found = assess_outputs(outputs, task, settings, class_names=class_names, progress=on_progress)
    found.pop("losses")
    verdict, summary = found.pop("verdict"), found.pop("summary")
    return Audit(verdict, summary, {"settings": asdict(settings), **found})
