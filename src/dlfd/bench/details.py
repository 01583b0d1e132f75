"""What a run record keeps besides its metrics, for the report's figures: per-sample losses of
each split and a 2-D projection of forget and unseen features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlfd.metrics import SplitOutputs, per_sample_loss
from dlfd.runtime import derive_seed

#: Per-sample losses kept per split in a run record (a seeded subsample beyond that).
MAX_LOSSES = 2000
#: Points per side (forget, unseen) kept in a record's 2-D feature projection.
MAX_PROJECTION_POINTS = 400
LOSS_SPLITS = ("forget", "unseen", "retain", "test")
PROJECTION_SPLITS = ("forget", "unseen")


def sample_losses(outputs: dict[str, SplitOutputs], task: str, seed: int) -> dict[str, list[float]]:
    """Per-sample losses of each split (a seeded subsample beyond :data:`MAX_LOSSES`), to 5
    significant digits."""
    losses = {}
    for split in (s for s in LOSS_SPLITS if s in outputs):
        values = per_sample_loss(outputs[split].logits, outputs[split].labels, task)
        if len(values) > MAX_LOSSES:
            rng = np.random.default_rng(derive_seed(seed, "losses", split))
            values = values[np.sort(rng.choice(len(values), MAX_LOSSES, replace=False))]
        losses[split] = [float(f"{v:.5g}") for v in values]
    return losses


def projection_2d(features: dict[str, torch.Tensor], seed: int) -> dict[str, Any] | None:
    """Principal-component projection of forget and unseen features onto their two main axes
    (fitted on both together; a seeded subsample of at most :data:`MAX_PROJECTION_POINTS`
    points per side), signs fixed so the same model always gives the same picture."""
    if not all(s in features for s in PROJECTION_SPLITS):
        return None
    sides = {}
    for split in PROJECTION_SPLITS:
        x = features[split].double().numpy()
        if len(x) > MAX_PROJECTION_POINTS:
            rng = np.random.default_rng(derive_seed(seed, "projection", split))
            x = x[np.sort(rng.choice(len(x), MAX_PROJECTION_POINTS, replace=False))]
        sides[split] = x
    both = np.concatenate(list(sides.values()))
    if both.shape[0] < 3 or both.shape[1] < 2:
        return None
    mean = both.mean(axis=0)
    _, singular, vt = np.linalg.svd(both - mean, full_matrices=False)
    axes = vt[:2]
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    total = float((singular**2).sum()) or 1.0
    return {
        "method": "pca",
        "layer": "penultimate",
        "explained_variance": [round(float(s**2) / total, 4) for s in singular[:2]],
        **{split: np.round((x - mean) @ axes.T, 4).tolist() for split, x in sides.items()},
    }
