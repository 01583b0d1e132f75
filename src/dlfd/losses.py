"""The task loss, chosen once from the task kind so every stage uses the same one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlfd.errors import ConfigError


def task_loss(
    logits: torch.Tensor, labels: torch.Tensor, task: str, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy (``multiclass``) or mean binary cross-entropy over labels (``multilabel``);
    ``reduction="none"``: one loss per sample."""
    if task == "multiclass":
        return F.cross_entropy(logits, labels, reduction=reduction)
    if task == "multilabel":
        per_label = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
        per_sample = per_label.mean(dim=1)
        if reduction == "none":
            return per_sample
        return per_sample.mean() if reduction == "mean" else per_sample.sum()
    raise ConfigError(f"unknown task {task!r}; expected 'multiclass' or 'multilabel'")


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample correctness (float64): 1/0 for multiclass, fraction of labels right for
    multilabel."""
    if task == "multiclass":
        return (logits.argmax(dim=1) == labels).double()
    return ((logits >= 0).float() == labels.float()).double().mean(dim=1)


def distill_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task: str,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(teacher || student) of temperature-softened outputs (multilabel: mean over labels of
    the Bernoulli KL), mean over the batch, times T^2 (Hinton et al.: comparable gradients)."""
    t = float(temperature)
    if task == "multiclass":
        student = F.log_softmax(student_logits / t, dim=1)
        teacher = F.log_softmax(teacher_logits / t, dim=1)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * t * t
    if task == "multilabel":
        s_logits, t_logits = student_logits / t, teacher_logits / t
        p = torch.sigmoid(t_logits)
        kl = p * (F.logsigmoid(t_logits) - F.logsigmoid(s_logits)) + (1 - p) * (
            F.logsigmoid(-t_logits) - F.logsigmoid(-s_logits)
        )
        return kl.mean(dim=1).mean() * t * t
    raise ConfigError(f"unknown task {task!r}; expected 'multiclass' or 'multilabel'")
