"""Membership-inference attacks beyond the benchmark's loss attack, as pure functions.

Members are samples the model was trained on (the forget set after unlearning), non-members
samples it never saw (unseen). Each attack (:func:`loss_attack`, :func:`entropy_attack`, SalUn's
:func:`svc_attack`; all of them: :func:`run_attacks`) returns an :class:`AttackResult`: balanced
accuracy (0.5 = chance), ROC AUC of its membership scores and TPR at 1% FPR (the low-error
regime that matters for privacy, Carlini et al. 2022).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from scipy.special import xlogy
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.svm import SVC

from dlfd.errors import ConfigError
from dlfd.metrics.classification import (
    as_class_labels,
    as_logits,
    check_task,
    finite_array,
    per_sample_loss,
)
from dlfd.metrics.mia import BENCHMARK_SHUFFLE_SEED, loss_attack_fold_accuracies, mia_accuracy

#: Per-sample features of :func:`svc_attack`, in SalUn's order.
SVC_FEATURES: tuple[str, ...] = ("correctness", "confidence", "entropy", "m_entropy", "prob")

#: Splits :func:`run_attacks` needs.
ATTACK_SPLITS: tuple[str, ...] = ("retain", "forget", "test", "unseen")

#: Probabilities are clipped here before a log (Song & Mittal's and SalUn's choice).
_LOG_EPS = 1e-30


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Outcome of one membership-inference attack. ``accuracy`` is balanced (0.5 = chance); ``auc``
    is the ROC AUC of ``member_scores`` against ``nonmember_scores`` (higher score = more likely a
    member; arrays in the order given); ``tpr_at_low_fpr`` is the TPR at FPR <= 1%. ``extra`` holds
    attack-specific numbers. (``eq=False``: the score arrays make field-wise equality ambiguous.)"""

    name: str
    accuracy: float
    auc: float
    tpr_at_low_fpr: float
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The scalar results as JSON-ready floats: accuracy, auc, tpr_at_1pct_fpr, extra."""
        main = {"accuracy": self.accuracy, "auc": self.auc, "tpr_at_1pct_fpr": self.tpr_at_low_fpr}
        return {str(k): float(v) for k, v in {**main, **self.extra}.items()}


def _probs(x: object, name: str = "probs") -> np.ndarray:
    """Validate a non-empty (N, C) matrix of probabilities in [0, 1]; return it as float64."""
    p = as_logits(x, name).numpy()
    n_bad = int(((p < 0.0) | (p > 1.0)).sum())
    if n_bad:
        raise ConfigError(f"{name} has {n_bad} value(s) outside [0, 1] (pass probabilities)")
    return p


def roc_summary(
    member_scores: object, nonmember_scores: object, max_fpr: float = 0.01
) -> tuple[float, float]:
    """ROC AUC of members (label 1) vs non-members, and the largest TPR with FPR <= ``max_fpr``. The
    TPR is read off the exact ROC points (``roc_curve`` without dropping intermediate points), the
    usual LiRA convention. Higher scores must mean "member"."""
    pos = finite_array(member_scores, "member_scores", non_empty=True)
    neg = finite_array(nonmember_scores, "nonmember_scores", non_empty=True)
    if not (0.0 <= float(max_fpr) <= 1.0):
        raise ConfigError(f"max_fpr must be in [0, 1], got {max_fpr!r}")
    y = np.repeat(np.int64([1, 0]), [pos.size, neg.size])
    s = np.concatenate([pos, neg])
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    # fpr[0] == 0 always (the threshold above every score), so the selection is never empty.
    return auc, float(tpr[fpr <= float(max_fpr)].max())


def prediction_entropy(probs: object) -> np.ndarray:
    """Shannon entropy (nats) of each row of ``probs`` (N, C), with 0·log 0 = 0; shape (N,).
    Training samples tend to get confident, low-entropy predictions; the attack exploits that."""
    p = _probs(probs)
    return -xlogy(p, p).sum(axis=1)


def modified_entropy(probs: object, labels: object) -> np.ndarray:
    """Song & Mittal's (2021) modified entropy of each sample; shape (N,).
    ``-(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``, with the arguments of the logs clipped
    at 1e-30. Unlike the entropy it uses the label: it is 0 for a confident correct prediction and
    large for a confident wrong one. This is the paper's per-sample formula; SalUn's code indexes
    ``[:, labels]`` (whole columns), which mixes other samples' labels (and its copy in
    Unlearn-Saliency also takes ``log p`` where ``log(1 - p)`` is meant)."""
    p = _probs(probs)
    y = as_class_labels(labels, *p.shape).numpy()
    rows = np.arange(p.shape[0])
    p_y = p[rows, y]
    own = -(1.0 - p_y) * np.log(np.maximum(p_y, _LOG_EPS))
    others = -p * np.log(np.maximum(1.0 - p, _LOG_EPS))
    others[rows, y] = 0.0
    return own + others.sum(axis=1)


def _result(
    name: str, accuracy: float, members: np.ndarray, nonmembers: np.ndarray, **extra: float
) -> AttackResult:
    """Assemble an :class:`AttackResult`, adding AUC and TPR at 1% FPR."""
    extras = {k: float(v) for k, v in extra.items()}
    return AttackResult(
        name, float(accuracy), *roc_summary(members, nonmembers), members, nonmembers, extras
    )


def loss_attack(
    member_losses: object, nonmember_losses: object, *, seed: int = BENCHMARK_SHUFFLE_SEED
) -> AttackResult:
    """The benchmark's loss attack (:func:`~dlfd.metrics.mia.mia_accuracy`) with AUC and TPR.
    ``seed`` balances the two sides as in the benchmark; the scores are ``-loss`` of every sample
    (low loss suggests a member)."""
    members = finite_array(member_losses, "member_losses", non_empty=True)
    nonmembers = finite_array(nonmember_losses, "nonmember_losses", non_empty=True)
    acc = mia_accuracy(members, nonmembers, balance_seed=seed)
    return _result("loss", acc, -members, -nonmembers)


def entropy_attack(
    member_probs: object, nonmember_probs: object, *, seed: int = BENCHMARK_SHUFFLE_SEED
) -> AttackResult:
    """The loss attack's recipe (balanced, cross-validated logistic regression) on the entropy.
    Needs no labels. Scores are ``-entropy`` (confident predictions suggest a member)."""
    members = prediction_entropy(_probs(member_probs, "member_probs"))
    nonmembers = prediction_entropy(_probs(nonmember_probs, "nonmember_probs"))
    folds = loss_attack_fold_accuracies(members, nonmembers, balance_seed=seed)
    return _result("entropy", folds.mean(), -members, -nonmembers)


def _svc_features(probs: np.ndarray, labels: np.ndarray, feature: str) -> np.ndarray:
    """The (N, k) feature matrix of :func:`svc_attack` for one set."""
    if feature == "correctness":
        f = (probs.argmax(axis=1) == labels).astype(np.float64)
    elif feature == "confidence":
        f = probs[np.arange(probs.shape[0]), labels]
    elif feature == "entropy":
        f = prediction_entropy(probs)
    elif feature == "m_entropy":
        f = modified_entropy(probs, labels)
    else:  # "prob"
        return probs
    return f.reshape(-1, 1)


def _svc_set(pair: object, name: str, feature: str) -> np.ndarray:
    """Validate one ``(probs, labels)`` pair and return its features."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ConfigError(f"{name} must be a (probs, labels) pair")
    p = _probs(pair[0], f"{name} probs")
    y = as_class_labels(pair[1], *p.shape, f"{name} labels").numpy()
    return _svc_features(p, y, feature)


def svc_attack(
    shadow_in: tuple[object, object],
    shadow_out: tuple[object, object],
    target_in: tuple[object, object],
    target_out: tuple[object, object],
    *,
    feature: str,
) -> AttackResult:
    """SalUn's SVC membership attack on one per-sample ``feature`` (see :data:`SVC_FEATURES`). Each
    argument is a ``(probs (N, C), labels (N,))`` pair. An RBF ``SVC(C=3, gamma="auto")`` learns
    member (``shadow_in``, SalUn: a retain subset the size of the test set) vs non-member
    (``shadow_out``, SalUn: the test set) and is applied to ``target_in`` (forget) and
    ``target_out`` (unseen). ``extra["member_rate_in"]`` is the fraction of ``target_in`` predicted
    member (SalUn reports its "MIA-efficacy", which is 1 minus this), ``extra["member_rate_out"]``
    the same for ``target_out``. The accuracy is balanced:
    ``(member_rate_in + 1 - member_rate_out) / 2``. Scores are the SVC's decision values."""
    if feature not in SVC_FEATURES:
        raise ConfigError(f"feature must be one of {', '.join(SVC_FEATURES)}, got {feature!r}")
    names = ("shadow_in", "shadow_out", "target_in", "target_out")
    pairs = (shadow_in, shadow_out, target_in, target_out)
    sets = {name: _svc_set(pair, name, feature) for name, pair in zip(names, pairs, strict=True)}
    widths = {name: x.shape[1] for name, x in sets.items()}
    if len(set(widths.values())) != 1:
        raise ConfigError(f"all sets need the same number of classes, got {widths}")
    x_shadow = np.concatenate([sets["shadow_in"], sets["shadow_out"]])
    y_shadow = np.repeat(np.int64([1, 0]), [len(sets["shadow_in"]), len(sets["shadow_out"])])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x_shadow, y_shadow)
    rate_in = float(clf.predict(sets["target_in"]).mean())
    rate_out = float(clf.predict(sets["target_out"]).mean())
    # classes_ is [0, 1], so positive decision values mean "member".
    members = np.asarray(clf.decision_function(sets["target_in"]), dtype=np.float64)
    nonmembers = np.asarray(clf.decision_function(sets["target_out"]), dtype=np.float64)
    accuracy = 0.5 * (rate_in + 1.0 - rate_out)
    extra = {"member_rate_in": rate_in, "member_rate_out": rate_out}
    return _result(f"svc_{feature}", accuracy, members, nonmembers, **extra)


def _split_pair(value: object, split: str) -> tuple[object, object]:
    """``(logits, labels)`` from a pair or from an object with ``logits`` and ``labels``."""
    if hasattr(value, "logits") and hasattr(value, "labels"):
        return value.logits, value.labels
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    raise ConfigError(f"outputs[{split!r}] must be a (logits, labels) pair")


def run_attacks(
    outputs: Mapping[str, object],
    *,
    task: str = "multiclass",
    seed: int = BENCHMARK_SHUFFLE_SEED,
    shadow_seed: int = 0,
) -> dict[str, AttackResult]:
    """Loss, entropy and SalUn's SVC attacks (all five features) of one model, by name. ``outputs``
    maps retain, forget, test and unseen to ``(logits (N, C), labels (N,))`` (or
    :class:`~dlfd.metrics.protocol.SplitOutputs`). Members are forget, non-members unseen; the SVC's
    shadow sets are a ``shadow_seed``-seeded retain subset of ``len(test)`` samples (all of retain
    if smaller) vs test, as in SalUn. ``seed`` balances the loss and entropy attacks. Multi-class
    only."""
    check_task(task)
    multilabel_msg = (
        "the SVC and entropy attacks are defined for multi-class outputs; for multi-label "
        "tasks only the loss attack applies (use loss_attack on per_sample_loss)"
    )
    if task != "multiclass":
        raise ConfigError(multilabel_msg)
    if not isinstance(outputs, Mapping):
        raise ConfigError("outputs must be a mapping of split name to (logits, labels)")
    missing = [s for s in ATTACK_SPLITS if s not in outputs]
    if missing:
        raise ConfigError(f"outputs lacks split(s) {missing}; run_attacks needs {ATTACK_SPLITS}")
    data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for split in ATTACK_SPLITS:
        logits, labels = _split_pair(outputs[split], split)
        if np.ndim(labels) == 2:
            raise ConfigError(f"outputs[{split!r}] has 2-D labels: {multilabel_msg}")
        x = as_logits(logits, f"outputs[{split!r}].logits")
        y = as_class_labels(labels, *x.shape, f"outputs[{split!r}].labels")
        data[split] = (F.softmax(x, dim=1).numpy(), y.numpy(), per_sample_loss(x, y, "multiclass"))
    widths = {s: d[0].shape[1] for s, d in data.items()}
    if len(set(widths.values())) != 1:
        raise ConfigError(f"all splits need the same number of classes, got {widths}")

    retain_p, retain_y, _ = data["retain"]
    n_shadow = min(len(data["test"][0]), len(retain_p))
    pick = np.sort(np.random.default_rng(shadow_seed).choice(len(retain_p), n_shadow, False))
    shadow_in = (retain_p[pick], retain_y[pick])
    shadow_out, target_in, target_out = (data[s][:2] for s in ("test", "forget", "unseen"))

    results = [
        loss_attack(data["forget"][2], data["unseen"][2], seed=seed),
        entropy_attack(data["forget"][0], data["unseen"][0], seed=seed),
        *(
            svc_attack(shadow_in, shadow_out, target_in, target_out, feature=f)
            for f in SVC_FEATURES
        ),
    ]
    return {r.name: r for r in results}


def attacks_for_task(
    outputs: Mapping[str, object], task: str, *, seed: int = BENCHMARK_SHUFFLE_SEED
) -> dict[str, AttackResult]:
    """Every attack defined for ``task``: :func:`run_attacks` for multi-class outputs; for
    multi-label outputs only the loss attack (on the mean BCE over labels)."""
    check_task(task)
    if task == "multiclass":
        return run_attacks(outputs, seed=seed)
    forget, unseen = (
        per_sample_loss(*_split_pair(outputs[s], s), task) for s in ("forget", "unseen")
    )
    return {"loss": loss_attack(forget, unseen, seed=seed)}
