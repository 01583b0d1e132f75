"""Per-split classification metrics on model outputs (logits), as pure functions.

Inputs are torch tensors (any device; they are copied to the CPU) or numpy arrays. Every
computation runs in float64 so that results are reproducible and comparable with scikit-learn;
outputs are Python floats or numpy float64 arrays.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from dlfd.errors import ConfigError

Task = Literal["multiclass", "multilabel"]
TASKS: tuple[str, ...] = ("multiclass", "multilabel")


def _to_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` as a detached CPU tensor, or raise ConfigError for unconvertible input."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{name} must be a tensor or numpy array, got {type(x).__name__}"
        ) from exc


def finite_array(x: object, name: str, *, ndim: int = 1, non_empty: bool = False) -> np.ndarray:
    """``x`` (array or tensor) as a finite float64 array of ``ndim`` dimensions. The shared input
    check of the attack functions (losses, scores, confidences): anything else raises
    :class:`ConfigError` naming ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers") from exc
    if arr.ndim != ndim or (non_empty and arr.size == 0):
        kind = "non-empty " if non_empty else ""
        raise ConfigError(f"{name} must be a {kind}{ndim}-D array, got shape {arr.shape}")
    n_bad = int((~np.isfinite(arr)).sum())
    if n_bad:
        raise ConfigError(f"{name} contains {n_bad} non-finite value(s) of {arr.size}")
    return arr


def check_task(task: str) -> str:
    """Return ``task`` if it is a known task name; ConfigError otherwise."""
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return task


def as_logits(logits: object, name: str = "logits") -> torch.Tensor:
    """Validate a non-empty, finite (N, C) score matrix and return it as float64."""
    t = _to_tensor(logits, name)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ConfigError(f"{name} must have shape (N, C) with N, C >= 1, got {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise ConfigError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(torch.float64)
    n_bad = int((~torch.isfinite(t)).sum())
    if n_bad:
        raise ConfigError(f"{name} contains {n_bad} non-finite value(s)")
    return t


def as_class_labels(labels: object, n: int, n_classes: int, name: str = "labels") -> torch.Tensor:
    """Validate integer class labels of shape (n,) in [0, n_classes) and return them as int64."""
    t = _to_tensor(labels, name)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ConfigError(f"{name} must be integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ConfigError(
            f"{name} must have shape ({n},) to match the logits, got {tuple(t.shape)}"
        )
    t = t.to(torch.int64)
    n_bad = int(((t < 0) | (t >= n_classes)).sum())
    if n_bad:
        raise ConfigError(
            f"{name} has {n_bad} value(s) outside [0, {n_classes}) (the logits have "
            f"{n_classes} classes)"
        )
    return t


def as_binary_targets(
    targets: object, shape: tuple[int, ...], name: str = "targets", *, soft: bool = False
) -> torch.Tensor:
    """Validate multi-label targets of ``shape`` with values in {0, 1} (or [0, 1] if ``soft``)."""
    t = _to_tensor(targets, name)
    if tuple(t.shape) != tuple(shape):
        raise ConfigError(
            f"{name} must have shape {tuple(shape)} to match the logits, got {tuple(t.shape)}"
        )
    t = t.to(torch.float64)
    n_bad = int((~((t >= 0) & (t <= 1)) if soft else ~((t == 0) | (t == 1))).sum())
    if n_bad:
        what = "in [0, 1]" if soft else "0 or 1"
        raise ConfigError(f"{name} has {n_bad} value(s) that are not {what}")
    return t


def top_k_accuracy(logits: object, labels: object, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` highest logits. Ties: the top-k set is
    exactly the indices returned by ``torch.topk``; a label whose logit ties with the k-th largest
    may or may not be selected (torch's choice), so with ties the result can differ from
    scikit-learn's ``top_k_accuracy_score``. Real-valued network outputs practically never tie."""
    x = as_logits(logits)
    n, c = x.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if k > c:
        raise ConfigError(f"k={k} exceeds the number of classes ({c})")
    y = as_class_labels(labels, n, c)
    top = torch.topk(x, int(k), dim=1).indices
    hits = (top == y.unsqueeze(1)).any(dim=1)
    return float(hits.to(torch.float64).mean())


def multilabel_accuracy(logits: object, targets: object, threshold: float = 0.5) -> float:
    """Mean over labels of the per-label accuracy of ``sigmoid(logit) >= threshold``. Every label is
    scored on the same N samples, so this equals the element-wise accuracy."""
    x = as_logits(logits)
    if not (0.0 <= float(threshold) <= 1.0):
        raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
    y = as_binary_targets(targets, tuple(x.shape))
    pred = (torch.sigmoid(x) >= float(threshold)).to(torch.float64)
    per_label = (pred == y).to(torch.float64).mean(dim=0)
    return float(per_label.mean())


def per_sample_loss(logits: object, labels: object, task: str) -> np.ndarray:
    """Per-sample loss (N,) in float64: the membership-inference attack's input. ``multiclass``:
    cross-entropy ``-log_softmax(logits)[label]``. ``multilabel``: mean over labels of binary
    cross-entropy with logits, written with ``logsigmoid`` so large logits stay finite."""
    check_task(task)
    x = as_logits(logits)
    if task == "multiclass":
        y = as_class_labels(labels, x.shape[0], x.shape[1])
        loss = -F.log_softmax(x, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    else:
        y = as_binary_targets(labels, tuple(x.shape), "labels", soft=True)
        loss = -(y * F.logsigmoid(x) + (1.0 - y) * F.logsigmoid(-x)).mean(dim=1)
    return loss.numpy().astype(np.float64, copy=False)


def _log_dists(logits_p: object, logits_q: object, task: str) -> tuple[torch.Tensor, ...]:
    """Two models' log-probabilities on the same samples, shaped (N, K, outcomes): (N, 1, C)
    softmax distributions (multiclass) or (N, L, 2) Bernoulli(sigmoid) ones, outcomes (1, 0)
    (multilabel). From ``log_softmax`` / ``logsigmoid``, so large logits stay finite."""
    check_task(task)
    a = as_logits(logits_p, "logits_p")
    b = as_logits(logits_q, "logits_q")
    if a.shape != b.shape:
        raise ConfigError(
            f"logits_p and logits_q must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if task == "multiclass":
        return F.log_softmax(a, dim=1).unsqueeze(1), F.log_softmax(b, dim=1).unsqueeze(1)
    return tuple(torch.stack([F.logsigmoid(x), F.logsigmoid(-x)], dim=2) for x in (a, b))


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per sample and distribution, (N, K)."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=2)


def output_kl(logits_p: object, logits_q: object, task: str) -> float:
    """Mean over samples of KL(p || q) between the two models' output distributions. ``multiclass``:
    KL between the softmax distributions. ``multilabel``: mean over labels of the KL between the
    Bernoulli(sigmoid) distributions."""
    per_sample = _kl(*_log_dists(logits_p, logits_q, task)).mean(dim=1)
    # KL is non-negative; clip float rounding (e.g. -1e-17 for identical inputs).
    return float(per_sample.clamp_min(0.0).mean())


def output_js(logits_p: object, logits_q: object, task: str) -> float:
    """Mean over samples of the Jensen-Shannon divergence between two models' outputs. Natural log,
    so each value lies in [0, ln 2]; unlike KL it is symmetric and bounded, which makes it a stable
    distance to a reference model. Per sample as :func:`output_kl` (mean over labels for
    multilabel); the mixture is computed in log space (``logaddexp``)."""
    log_p, log_q = _log_dists(logits_p, logits_q, task)
    ln2 = float(np.log(2.0))
    log_m = torch.logaddexp(log_p, log_q) - ln2
    per_sample = (0.5 * (_kl(log_p, log_m) + _kl(log_q, log_m))).mean(dim=1)
    # Clip float rounding to the divergence's range [0, ln 2].
    return float(per_sample.clamp(0.0, ln2).mean())
