"""Run models over the splits of a problem and apply the evaluation protocol.

The metric math lives in :mod:`dlfd.metrics` (pure functions on outputs); this module only
produces those outputs: one eval-mode forward pass per split, no augmentation, no gradients.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dlfd.data.loaders import ProblemLoaders
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.losses import correct_predictions
from dlfd.metrics import (
    SplitOutputs,
    attacks_for_task,
    mia_interval,
    nomus_interval,
    per_sample_loss,
    protocol_metrics,
)
from dlfd.metrics.matching import LabelShift, label_shift, matched_attack_reason
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED
from dlfd.models.features import forward_with_features


def split_label_shift(
    records: ImageRecords, forget: np.ndarray, unseen: np.ndarray
) -> LabelShift | None:
    """The :class:`~dlfd.metrics.matching.LabelShift` between the labels of the ``forget`` and
    ``unseen`` samples of ``records`` (indices), named by ``records.class_names``; None when
    either side is empty (there is no attack to mislead)."""
    forget, unseen = np.asarray(forget, np.int64), np.asarray(unseen, np.int64)
    if forget.size == 0 or unseen.size == 0:
        return None
    labels = np.asarray(records.labels)
    return label_shift(labels[forget], labels[unseen], records.task, records.class_names)


def problem_label_shift(problem: UnlearningProblem) -> LabelShift | None:
    """How far the class mixes of the problem's forget and unseen sets are apart (see
    :func:`split_label_shift`): the same for every model evaluated on ``problem``."""
    return split_label_shift(problem.records, problem.forget, problem.unseen)


def split_matched_reason(
    records: ImageRecords, forget: np.ndarray, unseen: np.ndarray
) -> str | None:
    """Why the label-matched attack (``mia_acc_matched``) cannot be run on the ``forget`` and
    ``unseen`` samples of ``records``, or None when it can (it depends on their labels only)."""
    forget, unseen = np.asarray(forget, np.int64), np.asarray(unseen, np.int64)
    if forget.size == 0 or unseen.size == 0:
        return "the forget or the unseen set is empty"
    labels = np.asarray(records.labels)
    return matched_attack_reason(labels[forget], labels[unseen], records.task)


def problem_matched_reason(problem: UnlearningProblem) -> str | None:
    """:func:`split_matched_reason` of the problem's forget and unseen sets."""
    return split_matched_reason(problem.records, problem.forget, problem.unseen)


def label_shift_json(shift: LabelShift | None) -> dict[str, Any] | None:
    """The ``label_shift`` entry of a JSON record: the shift's numbers and its warning text
    (null below the threshold); null without a shift."""
    if shift is None:
        return None
    return {**shift.to_dict(), "warning": shift.warning()}


@torch.no_grad()
def split_outputs_and_features(
    model: nn.Module,
    loaders: ProblemLoaders,
    *,
    device: torch.device,
    splits: Sequence[str] = SPLITS,
    feature_splits: Sequence[str] = (),
    layer: str | None = "penultimate",
    batch_size: int = 128,
) -> tuple[dict[str, SplitOutputs], dict[str, torch.Tensor]]:
    """Logits and labels of every sample of each split, in split order, in eval mode, and the
    ``layer`` features of the samples of ``feature_splits`` from the same forward pass.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        outputs: dict[str, SplitOutputs] = {}
        features: dict[str, torch.Tensor] = {}
        for split in splits:
            if len(loaders.problem.split(split)) == 0:
                continue
            logits, labels, feats = [], [], []
            for inputs, target in loaders.loader(split, batch_size=batch_size):
                if split in feature_splits:
                    batch_logits, batch_feats = forward_with_features(
                        model, inputs.to(device), layer
                    )
                    feats.append(batch_feats.float().cpu())
                else:
                    batch_logits = model(inputs.to(device))
                logits.append(batch_logits.float().cpu())
                labels.append(target)
            outputs[split] = SplitOutputs(torch.cat(logits), torch.cat(labels))
            if feats:
                features[split] = torch.cat(feats)
        return outputs, features
    finally:
        model.train(was_training)


def split_outputs(
    model: nn.Module,
    loaders: ProblemLoaders,
    *,
    device: torch.device,
    splits: Sequence[str] = SPLITS,
    batch_size: int = 128,
) -> dict[str, SplitOutputs]:
    """Logits and labels of every sample of each split, in split order, in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    outputs, _ = split_outputs_and_features(
        model, loaders, device=device, splits=splits, batch_size=batch_size
    )
    return outputs


@torch.no_grad()
def split_features(
    model: nn.Module,
    loaders: ProblemLoaders,
    split: str,
    *,
    device: torch.device,
    layer: str | None = "penultimate",
    batch_size: int = 128,
) -> torch.Tensor:
    """Features (``layer``) of every sample of ``split``, in eval mode (for plots and audits)."""
    was_training = model.training
    model.eval()
    try:
        chunks = [
            forward_with_features(model, inputs.to(device), layer)[1].float().cpu()
            for inputs, _ in loaders.loader(split, batch_size=batch_size)
        ]
        return torch.cat(chunks)
    finally:
        model.train(was_training)


def attack_metrics(
    outputs: dict[str, SplitOutputs],
    task: str,
    *,
    lam: float = 0.5,
    mia_seed: int = BENCHMARK_SHUFFLE_SEED,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The stronger attacks (AUC, TPR at 1% FPR, accuracy of each) and bootstrap intervals of
    ``mia_acc`` and ``nomus``, as flat JSON keys (``svc_confidence_auc``, ``mia_acc_ci_low``...).

    Entropy and SVC attacks need multi-class outputs; for multi-label only the loss attack's
    AUC and the intervals are added.
    """
    forget = per_sample_loss(outputs["forget"].logits, outputs["forget"].labels, task)
    unseen = per_sample_loss(outputs["unseen"].logits, outputs["unseen"].labels, task)
    correct = correct_predictions(outputs["test"].logits, outputs["test"].labels, task).numpy()
    attacks = attacks_for_task(outputs, task, seed=mia_seed)
    result: dict[str, float] = {}
    for name, attack in attacks.items():
        for key, value in attack.summary().items():
            result[f"{name}_{key}"] = float(value)
    for key, (low, high) in (
        ("mia_acc", mia_interval(forget, unseen, n_boot=n_boot, seed=seed, balance_seed=mia_seed)),
        (
            "nomus",
            nomus_interval(
                correct, forget, unseen, lam=lam, n_boot=n_boot, seed=seed, balance_seed=mia_seed
            ),
        ),
    ):
        result[f"{key}_ci_low"], result[f"{key}_ci_high"] = float(low), float(high)
    return result


def metrics_from_outputs(
    outputs: dict[str, SplitOutputs],
    task: str,
    *,
    reference: dict[str, SplitOutputs] | None = None,
    lam: float = 0.5,
    mia_seed: int = BENCHMARK_SHUFFLE_SEED,
    attacks: bool = False,
) -> dict[str, float]:
    """The protocol's metrics of a model's ``outputs`` (gaps to ``reference`` outputs when
    given); with ``attacks`` also :func:`attack_metrics`."""
    metrics = protocol_metrics(outputs, task=task, reference=reference, lam=lam, mia_seed=mia_seed)
    if attacks:
        metrics.update(attack_metrics(outputs, task, lam=lam, mia_seed=mia_seed))
    return metrics


def evaluate_model(
    model: nn.Module,
    loaders: ProblemLoaders,
    *,
    device: torch.device,
    reference: nn.Module | None = None,
    lam: float = 0.5,
    batch_size: int = 128,
    mia_seed: int = BENCHMARK_SHUFFLE_SEED,
    attacks: bool = False,
) -> dict[str, float]:
    """The protocol's metrics of ``model`` (and gaps to ``reference`` when given); with
    ``attacks`` also :func:`attack_metrics`."""
    started = time.perf_counter()
    outputs = split_outputs(model, loaders, device=device, batch_size=batch_size)
    reference_outputs = None
    if reference is not None:
        reference_outputs = split_outputs(reference, loaders, device=device, batch_size=batch_size)
    metrics = metrics_from_outputs(
        outputs,
        loaders.problem.records.task,
        reference=reference_outputs,
        lam=lam,
        mia_seed=mia_seed,
        attacks=attacks,
    )
    metrics["eval_s"] = time.perf_counter() - started
    return metrics
