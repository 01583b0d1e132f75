"""Evaluation metrics of the MUFAC/MUCAC unlearning protocol, as pure functions on model outputs.

See docs/evaluation-protocol.md ("Metrics"); :func:`protocol_metrics` computes all of them at once.
"""

from __future__ import annotations

from dlfd.metrics.attacks import (
    SVC_FEATURES,
    AttackResult,
    attacks_for_task,
    entropy_attack,
    loss_attack,
    modified_entropy,
    prediction_entropy,
    roc_summary,
    run_attacks,
    svc_attack,
)
from dlfd.metrics.classification import (
    multilabel_accuracy,
    output_js,
    output_kl,
    per_sample_loss,
    top_k_accuracy,
)
from dlfd.metrics.matching import (
    LABEL_SHIFT_TV,
    LabelShift,
    MatchedAttack,
    label_shift,
    matched_attack_reason,
    matched_indices,
    matched_mia_accuracy,
)
from dlfd.metrics.mia import balance_members, loss_attack_fold_accuracies, mia_accuracy
from dlfd.metrics.protocol import METRIC_DESCRIPTIONS, SplitOutputs, protocol_metrics
from dlfd.metrics.scores import forgetting_score, nomus, reference_gaps
from dlfd.metrics.uncertainty import bootstrap_interval, mean_std, mia_interval, nomus_interval

__all__ = [
    "LABEL_SHIFT_TV",
    "METRIC_DESCRIPTIONS",
    "SVC_FEATURES",
    "AttackResult",
    "LabelShift",
    "MatchedAttack",
    "SplitOutputs",
    "attacks_for_task",
    "balance_members",
    "bootstrap_interval",
    "entropy_attack",
    "forgetting_score",
    "label_shift",
    "loss_attack",
    "loss_attack_fold_accuracies",
    "matched_attack_reason",
    "matched_indices",
    "matched_mia_accuracy",
    "mean_std",
    "mia_accuracy",
    "mia_interval",
    "modified_entropy",
    "multilabel_accuracy",
    "nomus",
    "nomus_interval",
    "output_js",
    "output_kl",
    "per_sample_loss",
    "prediction_entropy",
    "protocol_metrics",
    "reference_gaps",
    "roc_summary",
    "run_attacks",
    "svc_attack",
    "top_k_accuracy",
]
