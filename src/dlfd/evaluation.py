"""Run models over the splits of a problem (one eval-mode pass per split, no augmentation, no
gradients) and apply the evaluation protocol, whose math lives in :mod:`dlfd.metrics`."""

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
from dlfd.metrics import (
    SplitOutputs,
    protocol_metrics,
)
from dlfd.metrics.matching import LabelShift, label_shift, matched_attack_reason
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED
from dlfd.models.features import forward_with_features
from dlfd.runtime import Precision, contiguous


def _forget_unseen_labels(
    records: ImageRecords, forget: np.ndarray, unseen: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The labels of the ``forget`` and ``unseen`` samples (indices); None if either is empty."""
    forget, unseen = np.asarray(forget, np.int64), np.asarray(unseen, np.int64)
    if forget.size == 0 or unseen.size == 0:
        return None
    labels = np.asarray(records.labels)
    return labels[forget], labels[unseen]


def split_label_shift(
    records: ImageRecords, forget: np.ndarray, unseen: np.ndarray
) -> LabelShift | None:
    """The :class:`~dlfd.metrics.matching.LabelShift` between the labels of the ``forget`` and
    ``unseen`` samples; None when either is empty (there is no attack to mislead)."""
    pair = _forget_unseen_labels(records, forget, unseen)
    return None if pair is None else label_shift(*pair, records.task, records.class_names)


def problem_label_shift(problem: UnlearningProblem) -> LabelShift | None:
    """:func:`split_label_shift` of the problem's forget and unseen sets."""
    return split_label_shift(problem.records, problem.forget, problem.unseen)


def split_matched_reason(
    records: ImageRecords, forget: np.ndarray, unseen: np.ndarray
) -> str | None:
    """Why the label-matched attack (``mia_acc_matched``) cannot be run on the ``forget`` and
    ``unseen`` samples, or None when it can (it depends on their labels only)."""
    pair = _forget_unseen_labels(records, forget, unseen)
    if pair is None:
        return "the forget or the unseen set is empty"
    return matched_attack_reason(*pair, records.task)


def problem_matched_reason(problem: UnlearningProblem) -> str | None:
    """:func:`split_matched_reason` of the problem's forget and unseen sets."""
    return split_matched_reason(problem.records, problem.forget, problem.unseen)


def label_shift_json(shift: LabelShift | None) -> dict[str, Any] | None:
    """The ``label_shift`` entry of a JSON record: the shift's numbers and its ``warning``."""
    if shift is None:
        return None
    return {**shift.to_dict(), "warning": shift.warning()}


def label_notes(shift: dict[str, Any] | None, matched_reason: str | None) -> list[tuple[str, str]]:
    """What to tell the user about the forget and unseen labels before any number, as (kind,
    text): a label shift's ``warning``, the ``note`` of why there is no label-matched attack."""
    notes = []
    if shift is not None and shift["warning"] is not None:
        notes.append(("warning", shift["warning"]))
    if matched_reason is not None:
        what = "no label-matched attack (mia_acc_matched, nomus_matched)"
        notes.append(("note", f"{what}: {matched_reason}"))
    return notes


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
    precision: Precision = Precision(),
) -> tuple[dict[str, SplitOutputs], dict[str, torch.Tensor]]:
    """Logits and labels of every sample of each split, in eval mode (the model's mode is
    restored afterwards), and the ``layer`` features of ``feature_splits`` from the same pass
    (``precision``: under bfloat16 autocast and/or channels-last; outputs are float32)."""
    was_training = model.training
    model.eval()
    precision.prepare(model)
    try:
        outputs: dict[str, SplitOutputs] = {}
        features: dict[str, torch.Tensor] = {}
        pin = device.type == "cuda"
        for split in splits:
            if len(loaders.problem.split(split)) == 0:
                continue
            logits, labels, feats = [], [], []
            for inputs, target in loaders.loader(split, batch_size=batch_size):
                inputs = inputs.to(device, non_blocking=pin)
                with precision.autocast(device):
                    if split in feature_splits:
                        batch_logits, batch_feats = forward_with_features(model, inputs, layer)
                        feats.append(batch_feats.float().cpu())
                    else:
                        batch_logits = model(inputs)
                logits.append(batch_logits.float().cpu())
                labels.append(target)
            outputs[split] = SplitOutputs(torch.cat(logits), torch.cat(labels))
            if feats:
                features[split] = torch.cat(feats)
        return outputs, features
    finally:
        if precision.channels_last:
            contiguous(model)
        model.train(was_training)


def split_outputs(
    model: nn.Module,
    loaders: ProblemLoaders,
    *,
    device: torch.device,
    splits: Sequence[str] = SPLITS,
    batch_size: int = 128,
    precision: Precision = Precision(),
) -> dict[str, SplitOutputs]:
    """Logits and labels of every sample of each split (:func:`split_outputs_and_features`)."""
    kw = {"device": device, "splits": splits, "batch_size": batch_size, "precision": precision}
    return split_outputs_and_features(model, loaders, **kw)[0]


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
    kw = {"device": device, "layer": layer, "batch_size": batch_size}
    _, features = split_outputs_and_features(
        model, loaders, splits=(split,), feature_splits=(split,), **kw
    )
    return features[split]


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
    precision: Precision = Precision(),
) -> dict[str, float]:
    """:func:`~dlfd.metrics.protocol_metrics` of ``model`` (and ``reference``) on ``loaders``,
    plus the seconds it took (``eval_s``)."""
    started = time.perf_counter()
    run = {"device": device, "batch_size": batch_size, "precision": precision}
    outputs = split_outputs(model, loaders, **run)
    ref = None if reference is None else split_outputs(reference, loaders, **run)
    kw = {"reference": ref, "lam": lam, "mia_seed": mia_seed, "attacks": attacks}
    metrics = protocol_metrics(outputs, task=loaders.problem.records.task, **kw)
    metrics["eval_s"] = time.perf_counter() - started
    return metrics
