"""Pulling the forget samples toward never-trained samples (DLFD's ``match`` setting).

A retrained model treats the forget samples like any photo it never saw: membership attacks
cannot tell them from held-out ones. These terms move the *forget* samples' outputs toward the
distribution of the model's outputs on non-member (validation) samples, and stop there —
unlike pushing them as far away as possible, which over-forgets:

* :func:`quantile_gap` of :func:`dlfd.metrics.lira.confidence_margins`: the 1-D Wasserstein-1
  distance between the forget samples' logit-scaled confidences ``log p_y - log(1 - p_y)`` and
  the non-members' (quantile against quantile). The task loss is a decreasing function of this
  confidence, so when the two distributions agree the loss attack sees the same losses on both
  sides: the term drives it toward chance, and no further. Unlike the loss itself, whose
  gradient vanishes on the confidently memorised samples this term must move, the confidence
  has a gradient of order one everywhere.
* :func:`feature_distance`: the entropic OT distance (cosine cost, as DLFD's own term) between
  the forget samples' features and the non-members' features.

The non-member side is a target, never trained on: it is computed without gradient.
"""

from __future__ import annotations

from typing import Literal

import torch

from dlfd.ot import entropic_ot_loss

#: DLFD's ``match`` choices: no term, the confidence distributions, the feature distributions.
Match = Literal["none", "confidence", "features"]


def quantiles_at(values: torch.Tensor, count: int) -> torch.Tensor:
    """The empirical quantile function of ``values`` at ``count`` mid-point levels
    ``(i + 0.5) / count`` (no interpolation), so batches of different sizes can be compared
    rank by rank; with ``count == len(values)`` it is ``values`` sorted."""
    ordered = torch.sort(values).values
    levels = (torch.arange(count, device=values.device, dtype=torch.float64) + 0.5) / count
    index = torch.floor(levels * ordered.shape[0]).long().clamp(max=ordered.shape[0] - 1)
    return ordered[index]


def quantile_gap(forget_values: torch.Tensor, nonmember_values: torch.Tensor) -> torch.Tensor:
    """Wasserstein-1 distance between the empirical distributions of the forget values and the
    non-member values (the latter detached): mean over ranks of |sorted forget value - the
    non-members' quantile at the same rank|."""
    ordered = torch.sort(forget_values).values
    target = quantiles_at(nonmember_values.detach().to(ordered.dtype), ordered.shape[0])
    return (ordered - target).abs().mean()


def feature_distance(
    forget_features: torch.Tensor, nonmember_features: torch.Tensor, epsilon: float, iterations: int
) -> torch.Tensor:
    """Entropic OT distance (cosine cost) from the forget features to the non-member features
    (the latter detached)."""
    return entropic_ot_loss(forget_features, nonmember_features.detach(), epsilon, iterations)


__all__ = ["feature_distance", "quantile_gap", "quantiles_at"]
