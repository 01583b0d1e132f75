"""Per-example likelihood-ratio membership audit (LiRA, Carlini et al. 2022, arXiv 2112.03199).

Reference models are trained WITH the forget set ("in": the original model and shadow originals
with other seeds) or WITHOUT it ("out": the retrained reference and shadow retrains). For every
example, each model's logit-scaled confidence on the true label (:func:`logit_confidence`) is
modelled as a Gaussian per side (:func:`fit_lira`), and the unlearned (target) model's confidence
is scored against both (:func:`lira_scores`). Higher score always means "more like a member".

* **Online** (in models available): ``score = log N(x; mu_in, sd_in) - log N(x; mu_out, sd_out)``,
  the log likelihood ratio; a member is called when ``score > 0`` (likelihood ratio above 1).
* **Offline** (out models only): ``score = -log P(out model's confidence >= x)``
  ``= -norm.logsf(x, mu_out, sd_out)``, the negative log of the one-sided p-value; a member is
  called when ``score > log 2`` (p < 0.5, i.e. ``x`` above the out models' mean).

:func:`lira_compare` scores the same examples under the target and a control model left out of
the fit; the control's member fraction shows the attack's false-call rate at that threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from dlfd.errors import ConfigError
from dlfd.metrics.attacks import roc_summary
from dlfd.metrics.classification import as_class_labels, as_logits, finite_array

#: With fewer models than this on a side, that side's sd is one global value (automatic mode).
MIN_MODELS_PER_EXAMPLE_SD = 4
#: Online member call: log likelihood ratio above 0 (in-likelihood larger than out-likelihood).
ONLINE_THRESHOLD = 0.0
#: Offline member call: one-sided p-value below 0.5, i.e. ``-log p > log 2``.
OFFLINE_THRESHOLD = math.log(2.0)


def confidence_margins(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Differentiable logit-scaled confidence of each sample's true label, in float32 or wider
    (float64 stays float64): multiclass ``z_y - logsumexp(z_j, j != y)`` (= ``log p_y -
    log(1 - p_y)``, finite where ``p_y`` rounds to 1), multilabel the mean over labels of
    ``(2 y - 1) z`` (the same statistic per sigmoid). No validation: see
    :func:`logit_confidence` for checked inputs."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if task == "multiclass":
        index = labels.long().view(-1, 1)
        others = z.scatter(1, index, float("-inf"))
        return z.gather(1, index).squeeze(1) - torch.logsumexp(others, dim=1)
    return ((2.0 * labels.to(z.dtype) - 1.0) * z).mean(dim=1)


def logit_confidence(logits: object, labels: object) -> np.ndarray:
    """``phi = log p_y - log(1 - p_y)`` of softmax outputs, (N,) float64: :func:`confidence_margins`
    on validated ``logits`` (N, C), C >= 2, and integer ``labels`` (N,)."""
    z = as_logits(logits)
    n, n_classes = z.shape
    if n_classes < 2:
        raise ConfigError(f"logit_confidence needs at least 2 classes, got {n_classes}")
    y = as_class_labels(labels, n, n_classes)
    return confidence_margins(z, y, "multiclass").numpy()


@dataclass(frozen=True)
class LiraFit:
    """Per-example Gaussians of the reference models' confidences, arrays of shape (N,).
    ``mu_in``/``sd_in`` are None for the offline variant (no in models, ``n_in == 0``).
    ``global_variance`` is True when at least one side uses a single pooled sd (its sd array is then
    constant)."""

    mu_in: np.ndarray | None
    sd_in: np.ndarray | None
    mu_out: np.ndarray
    sd_out: np.ndarray
    n_in: int
    n_out: int
    global_variance: bool

    @property
    def online(self) -> bool:
        """Whether in models were fitted (online LiRA)."""
        return self.mu_in is not None


def _side(conf: np.ndarray, use_global: bool, min_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and unbiased sd (ddof=1) of one side; if global, one pooled sd, sqrt(sum of
    squared deviations from the per-example means / (N * (K - 1))). A side with a single model has
    no spread to estimate: its sd is ``min_sd``."""
    k = conf.shape[0]
    mu = conf.mean(axis=0)
    if k < 2:
        return mu, np.full_like(mu, min_sd)
    if use_global:
        pooled = math.sqrt(float(((conf - mu) ** 2).sum()) / (conf.shape[1] * (k - 1)))
        sd = np.full_like(mu, pooled)
    else:
        sd = conf.std(axis=0, ddof=1)
    return mu, np.maximum(sd, min_sd)


def fit_lira(
    in_conf: np.ndarray | None,
    out_conf: np.ndarray,
    *,
    global_variance: bool | None = None,
    min_sd: float = 1e-3,
) -> LiraFit:
    """Fit per-example Gaussians to in (K_in, N) and out (K_out, N) model confidences. Rows are
    models, columns examples. ``in_conf`` None (or with 0 rows) gives the offline fit. Standard
    deviations (unbiased, ddof=1) are per example; with ``global_variance=None`` a side with fewer
    than :data:`MIN_MODELS_PER_EXAMPLE_SD` models instead uses one pooled sd over all its deviations
    from the per-example means. True/False forces that choice on both sides. Every sd is floored at
    ``min_sd`` (a single model per side gives exactly ``min_sd``)."""
    if not (isinstance(min_sd, int | float) and math.isfinite(min_sd) and min_sd > 0):
        raise ConfigError(f"min_sd must be a finite number > 0, got {min_sd!r}")
    if global_variance is not None and not isinstance(global_variance, bool):
        raise ConfigError(f"global_variance must be True, False or None, got {global_variance!r}")
    out_arr = finite_array(out_conf, "out_conf", ndim=2)
    k_out, n = out_arr.shape
    if k_out < 1:
        raise ConfigError("out_conf needs at least one model (row), got 0")
    if n < 1:
        raise ConfigError("out_conf needs at least one example (column), got 0")
    in_arr = None if in_conf is None else finite_array(in_conf, "in_conf", ndim=2)
    if in_arr is not None and in_arr.shape[0] == 0:
        in_arr = None
    if in_arr is not None and in_arr.shape[1] != n:
        raise ConfigError(f"in_conf has {in_arr.shape[1]} examples (columns) but out_conf has {n}")

    def pick(k: int) -> bool:
        return k < MIN_MODELS_PER_EXAMPLE_SD if global_variance is None else global_variance

    mu_out, sd_out = _side(out_arr, pick(k_out), min_sd)
    k_in = 0 if in_arr is None else len(in_arr)
    mu_in, sd_in = (None, None) if in_arr is None else _side(in_arr, pick(k_in), min_sd)
    used_global = pick(k_out) or (k_in > 0 and pick(k_in))
    return LiraFit(mu_in, sd_in, mu_out, sd_out, k_in, k_out, used_global)


def lira_scores(target_conf: np.ndarray, fit: LiraFit) -> np.ndarray:
    """Membership scores (N,) of the target's confidences, online or offline as the module
    says; higher = more member-like (offline: always >= 0, ``log 2`` at ``x == mu_out``)."""
    x = finite_array(target_conf, "target_conf")
    if x.shape[0] != fit.mu_out.shape[0]:
        raise ConfigError(
            f"target_conf has {x.shape[0]} examples but the fit has {fit.mu_out.shape[0]}"
        )
    if fit.online:
        return norm.logpdf(x, fit.mu_in, fit.sd_in) - norm.logpdf(x, fit.mu_out, fit.sd_out)
    return -norm.logsf(x, fit.mu_out, fit.sd_out)


def lira_compare(
    target_conf: np.ndarray, control_conf: np.ndarray, fit: LiraFit
) -> dict[str, float]:
    """Score the same examples under a target model and a control model left out of the fit. In the
    audit: the unlearned model and the retrained reference (never in the "out" fit) on the forget
    examples; an unlearned model that forgot them looks no more member-like. ``member_fraction_*``:
    share of scores above the member threshold; ``excess`` = target - control;
    ``auc``/``tpr_at_1pct_fpr`` treat target scores as positives, control scores as negatives (0.5:
    indistinguishable; with n control scores the smallest FPR step is 1/n)."""
    target = lira_scores(target_conf, fit)
    control = lira_scores(control_conf, fit)
    threshold = ONLINE_THRESHOLD if fit.online else OFFLINE_THRESHOLD
    auc, tpr = roc_summary(target, control)
    frac_target = float(np.mean(target > threshold))
    frac_control = float(np.mean(control > threshold))
    return {
        "member_fraction_target": frac_target,
        "member_fraction_control": frac_control,
        "excess": frac_target - frac_control,
        "auc": auc,
        "tpr_at_1pct_fpr": tpr,
        "mean_score_target": float(target.mean()),
        "mean_score_control": float(control.mean()),
    }
