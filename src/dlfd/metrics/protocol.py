"""The whole evaluation protocol (docs/evaluation-protocol.md, "Metrics") on model outputs.

:func:`protocol_metrics` is pure: it takes each split's logits and labels (already computed by
running the model) and returns the JSON-ready metrics dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dlfd.errors import ConfigError
from dlfd.losses import correct_predictions
from dlfd.metrics.attacks import attacks_for_task
from dlfd.metrics.classification import (
    as_binary_targets,
    as_class_labels,
    as_logits,
    check_task,
    multilabel_accuracy,
    output_kl,
    per_sample_loss,
    top_k_accuracy,
)
from dlfd.metrics.matching import matched_mia_accuracy
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED, mia_accuracy
from dlfd.metrics.scores import forgetting_score, nomus, reference_gaps
from dlfd.metrics.uncertainty import mia_interval, nomus_interval

#: Split names accepted by :func:`protocol_metrics`, in report order.
SPLITS: tuple[str, ...] = ("retain", "forget", "val", "test", "unseen")
REQUIRED_SPLITS: tuple[str, ...] = ("forget", "unseen", "test")

_SPLIT_WHAT = {
    "retain": "retain set (training data the model should keep)",
    "forget": "forget set (training data to unlearn)",
    "val": "validation set (model selection only, never reported)",
    "test": "test set (the reported task accuracy)",
    "unseen": "unseen set (never-trained people; the attack's non-members)",
}

#: The headline columns of every results table (CLI, audit page, reports), in order.
MAIN_METRICS: tuple[str, ...] = (
    "test_acc",
    "retain_acc",
    "forget_acc",
    "unseen_acc",
    "mia_acc",
    "mia_acc_matched",
    "forgetting_score",
    "nomus",
    "nomus_matched",
    "avg_gap",
)

#: One line per metric key of :func:`protocol_metrics`.
_PER_SPLIT = {
    "{s}_acc": "Top-1 accuracy on the {w}; multi-label: mean per-label accuracy at 0.5.",
    "{s}_top2": "Top-2 accuracy on the {w} (multi-class with more than 2 classes).",
    "n_{s}": "Number of samples in the {w}.",
}
METRIC_DESCRIPTIONS: dict[str, str] = {
    **{k.format(s=s): v.format(w=w) for k, v in _PER_SPLIT.items() for s, w in _SPLIT_WHAT.items()},
    "mia_acc": "Loss-based membership-inference attack accuracy, forget vs unseen (0.5 = chance).",
    "forgetting_score": "|mia_acc - 0.5| (0 is perfect forgetting); published tables call it MIA.",
    "nomus": "lam*test_acc + (1-lam)*(1 - 2*forgetting_score); 1 is best.",
    "mia_acc_matched": "The same attack on forget and unseen subsampled to equal counts per "
    "class (label combination), so it cannot read the label; absent when they share no class.",
    "forgetting_score_matched": "|mia_acc_matched - 0.5|.",
    "nomus_matched": "lam*test_acc + (1-lam)*(1 - 2*forgetting_score_matched); 1 is best.",
    "gap_test_acc": "|test_acc - reference test_acc| to the retrained reference.",
    "gap_forget_acc": "|forget_acc - reference forget_acc| to the retrained reference.",
    "gap_retain_acc": "|retain_acc - reference retain_acc| to the retrained reference.",
    "gap_mia_acc": "|mia_acc - reference mia_acc| to the retrained reference.",
    "avg_gap": "Mean of the gap_* values (0 means indistinguishable from the reference).",
    "kl_to_reference_forget": "Mean KL(reference || model) of the output distributions on forget.",
    "kl_to_reference_test": "Mean KL(reference || model) of the output distributions on test.",
}


@dataclass(frozen=True)
class SplitOutputs:
    """A model's outputs on one split: ``logits`` (N, C) and ``labels``. ``labels`` are class
    indices (N,) for multi-class tasks or {0, 1} targets (N, L) for multi-label ones."""

    logits: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.logits.shape[0])


def _check_outputs(outputs: Mapping[str, SplitOutputs], task: str, what: str) -> int:
    """Validate split names, shapes and labels; return the common number of outputs C."""
    if not isinstance(outputs, Mapping):
        raise ConfigError(f"{what} must be a mapping of split name to SplitOutputs")
    unknown = sorted(set(outputs) - set(SPLITS))
    if unknown:
        raise ConfigError(f"{what} has unknown split(s) {unknown}; expected among {list(SPLITS)}")
    missing = [s for s in REQUIRED_SPLITS if s not in outputs]
    if missing:
        raise ConfigError(f"{what} lacks required split(s) {missing}")
    n_out: int | None = None
    for split, out in outputs.items():
        if not isinstance(out, SplitOutputs):
            raise ConfigError(f"{what}[{split!r}] must be SplitOutputs, got {type(out).__name__}")
        x = as_logits(out.logits, f"{what}[{split!r}].logits")
        n, c = x.shape
        if task == "multiclass":
            as_class_labels(out.labels, n, c, f"{what}[{split!r}].labels")
        else:
            as_binary_targets(out.labels, (n, c), f"{what}[{split!r}].labels")
        if n_out is not None and c != n_out:
            raise ConfigError(f"{what}[{split!r}] has {c} outputs per sample, other splits {n_out}")
        n_out = c
    assert n_out is not None
    return n_out


def _own_metrics(
    outputs: Mapping[str, SplitOutputs],
    task: str,
    n_out: int,
    lam: float,
    mia_seed: int,
    *,
    matched: bool = True,
) -> dict[str, float]:
    """Accuracies, attack and scores of one model (no reference); with ``matched`` also the
    label-matched attack's keys, when it can be run."""
    result: dict[str, float] = {}
    for split, out in ((s, outputs[s]) for s in SPLITS if s in outputs):
        if task == "multiclass":
            result[f"{split}_acc"] = top_k_accuracy(out.logits, out.labels, k=1)
            if n_out > 2:
                result[f"{split}_top2"] = top_k_accuracy(out.logits, out.labels, k=2)
        else:
            result[f"{split}_acc"] = multilabel_accuracy(out.logits, out.labels)
    forget_loss = per_sample_loss(outputs["forget"].logits, outputs["forget"].labels, task)
    unseen_loss = per_sample_loss(outputs["unseen"].logits, outputs["unseen"].labels, task)
    result["mia_acc"] = mia_accuracy(forget_loss, unseen_loss, balance_seed=mia_seed)
    result["forgetting_score"] = forgetting_score(result["mia_acc"])
    result["nomus"] = nomus(result["test_acc"], result["forgetting_score"], lam)
    if matched:
        attack = matched_mia_accuracy(
            forget_loss, unseen_loss, outputs["forget"].labels, outputs["unseen"].labels, task
        )
        if attack.accuracy is not None:
            result["mia_acc_matched"] = attack.accuracy
            result["forgetting_score_matched"] = forgetting_score(attack.accuracy)
            result["nomus_matched"] = nomus(
                result["test_acc"], result["forgetting_score_matched"], lam
            )
    result.update({f"n_{s}": float(len(outputs[s])) for s in SPLITS if s in outputs})
    return result


def protocol_metrics(
    outputs: Mapping[str, SplitOutputs],
    *,
    task: str,
    reference: Mapping[str, SplitOutputs] | None = None,
    lam: float = 0.5,
    mia_seed: int = BENCHMARK_SHUFFLE_SEED,
    attacks: bool = False,
) -> dict[str, float]:
    """All protocol metrics of one model, as plain floats (keys in :data:`METRIC_DESCRIPTIONS`).

    With ``attacks`` also the stronger attacks (AUC, TPR at 1% FPR, accuracy of each: entropy
    and SVC need multi-class outputs) and bootstrap intervals (200 rounds) of ``mia_acc`` and
    ``nomus``, as flat keys (``svc_confidence_auc``, ``mia_acc_ci_low``...).
    ``outputs`` maps split names (retain, forget, val, test, unseen; forget, unseen and test
    required) to the model's outputs. ``mia_seed`` seeds the balancing of the attack's forget and
    unseen losses. With ``reference`` (a retrained model's outputs on the same splits and samples)
    the reference's metrics are computed the same way and the gap_* values, ``avg_gap`` and
    ``kl_to_reference_{forget,test}`` (KL(reference || model)) are added. ``mia_acc_matched``,
    ``forgetting_score_matched`` and ``nomus_matched`` repeat the attack on forget and unseen
    subsampled to the same class mix (:func:`~dlfd.metrics.matching.matched_mia_accuracy`); they are
    absent (never NaN) when that attack cannot be run
    (:func:`~dlfd.metrics.matching.matched_attack_reason` says why). The published ``mia_acc``,
    ``nomus`` and ``avg_gap`` keep their exact definition."""
    check_task(task)
    n_out = _check_outputs(outputs, task, "outputs")
    result = _own_metrics(outputs, task, n_out, lam, mia_seed)
    if reference is not None:
        _check_reference(outputs, reference, task)
        ref_metrics = _own_metrics(reference, task, n_out, lam, mia_seed, matched=False)
        result.update(reference_gaps(result, ref_metrics))
        for split in ("forget", "test"):
            result[f"kl_to_reference_{split}"] = output_kl(
                reference[split].logits, outputs[split].logits, task
            )
    if attacks:
        result.update(_attack_metrics(outputs, task, lam, mia_seed))
    return result


def _check_reference(
    outputs: Mapping[str, SplitOutputs], reference: Mapping[str, SplitOutputs], task: str
) -> None:
    """Refuse reference outputs that are not of the same samples as the model's."""
    _check_outputs(reference, task, "reference")
    if set(reference) != set(outputs):
        raise ConfigError(
            f"reference splits {sorted(reference)} differ from the model's {sorted(outputs)}"
        )
    for split, out in outputs.items():
        ref = reference[split]
        if tuple(ref.logits.shape) != tuple(out.logits.shape):
            raise ConfigError(
                f"reference[{split!r}].logits has shape {tuple(ref.logits.shape)}, the model's "
                f"{tuple(out.logits.shape)}"
            )
        ref_labels, labels = (torch.as_tensor(x.labels).cpu().to(torch.float64) for x in (ref, out))
        if not torch.equal(ref_labels, labels):
            raise ConfigError(
                f"reference[{split!r}].labels differ from the model's (same samples?)"
            )


def _attack_metrics(
    outputs: Mapping[str, SplitOutputs], task: str, lam: float, mia_seed: int
) -> dict[str, float]:
    """The stronger attacks' summaries and the bootstrap intervals, as flat keys."""
    f, u, t = outputs["forget"], outputs["unseen"], outputs["test"]
    forget, unseen = (per_sample_loss(o.logits, o.labels, task) for o in (f, u))
    correct = correct_predictions(t.logits, t.labels, task).numpy()
    metrics = {
        f"{name}_{key}": float(value)
        for name, attack in attacks_for_task(outputs, task, seed=mia_seed).items()
        for key, value in attack.summary().items()
    }
    kw = {"n_boot": 200, "seed": 0, "balance_seed": mia_seed}
    intervals = {
        "mia_acc": mia_interval(forget, unseen, **kw),
        "nomus": nomus_interval(correct, forget, unseen, lam=lam, **kw),
    }
    for key, (low, high) in intervals.items():
        metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = float(low), float(high)
    return metrics
