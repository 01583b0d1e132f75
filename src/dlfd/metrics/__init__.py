"""Evaluation metrics of the MUFAC/MUCAC unlearning protocol, as pure functions on model outputs.

See docs/evaluation-protocol.md ("Metrics"); :func:`protocol_metrics` computes all of them at once.
"""

from __future__ import annotations

from dlfd.metrics.classification import (
    multilabel_accuracy,
    output_kl,
    per_sample_loss,
    top_k_accuracy,
)
from dlfd.metrics.mia import balance_members, loss_attack_fold_accuracies, mia_accuracy
from dlfd.metrics.protocol import METRIC_DESCRIPTIONS, SplitOutputs, protocol_metrics
from dlfd.metrics.scores import forgetting_score, nomus, reference_gaps

__all__ = [
    "METRIC_DESCRIPTIONS",
    "SplitOutputs",
    "balance_members",
    "forgetting_score",
    "loss_attack_fold_accuracies",
    "mia_accuracy",
    "multilabel_accuracy",
    "nomus",
    "output_kl",
    "per_sample_loss",
    "protocol_metrics",
    "reference_gaps",
    "top_k_accuracy",
]
