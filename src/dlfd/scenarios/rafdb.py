"""``rafdb``: RAF-DB basic emotion (7 classes, no identities) as DLFD uses it.

Splits (level ``instance``: images, not people, are assigned). DLFD's procedure on the train
folder (in ImageFolder order, N images): ``r = random.Random(42)``, shuffle ``range(N)``;
val = the first ``int(0.1 * N)``; of the rest, retain = the first ``int(0.7 * len(rest))``,
forget = the others. The protocol needs test and unseen to be disjoint, so the test folder is
halved, stratified by class, into ``test`` and ``unseen`` (seeded the same way). Options:

- ``split=published`` (default): seed 42 whatever the split seed (DLFD's split);
  ``split=seeded``: the same procedure with the split seed.
- ``leaks=refuse|drop|drop-near``: what to do with duplicate pictures across splits.

From DLFD: the train/val/retain/forget procedure and its seed, 128x128 grayscale inputs
replicated to 3 channels with mean/std 0.5, the ResNet-18 + MLP head. Ours (not checked against
DLFD's RAF-DB code): the test/unseen halving, 100 epochs, batch 64, SGD lr 0.01, momentum 0.9,
weight decay 5e-4, cosine schedule, flips and rotations up to 20 degrees.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlfd.data.rafdb import rafdb_records
from dlfd.data.transforms import AugmentConfig
from dlfd.recipe import TrainRecipe
from dlfd.scenarios.assemble import LEAK_POLICIES, assemble_problem
from dlfd.scenarios.registry import Scenario, make_scenario, register_scenario

PUBLISHED_SEED = 42
VAL_FRACTION = 0.1
RETAIN_FRACTION = 0.7
RECIPE = TrainRecipe(
    model="resnet18_mlp",
    epochs=100,
    batch_size=64,
    lr=0.01,
    augment=AugmentConfig(hflip=0.5, degrees=20.0),
)
OPTIONS = {"split": ("published", "seeded"), "leaks": LEAK_POLICIES}


def dlfd_train_split(n_train: int, seed: int) -> dict[str, np.ndarray]:
    """DLFD's val/retain/forget positions within a train folder of ``n_train`` images."""
    indices = list(range(n_train))
    random.Random(seed).shuffle(indices)
    n_val = int(VAL_FRACTION * n_train)
    rest = indices[n_val:]
    n_retain = int(RETAIN_FRACTION * len(rest))
    return {
        "val": np.asarray(indices[:n_val], np.int64),
        "retain": np.asarray(rest[:n_retain], np.int64),
        "forget": np.asarray(rest[n_retain:], np.int64),
    }


def halve_by_class(
    candidates: np.ndarray, labels: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``candidates`` into two halves, class by class, in seeded order; a class with an odd
    count gives its extra image alternately to the first and the second half."""
    rng = random.Random(seed)
    first: list[int] = []
    second: list[int] = []
    extra_to_first = True
    for label in sorted(set(labels[candidates].tolist())):
        members = [int(i) for i in candidates if labels[i] == label]
        rng.shuffle(members)
        k = len(members) // 2
        if len(members) % 2:
            k += extra_to_first
            extra_to_first = not extra_to_first
        first += members[:k]
        second += members[k:]
    return np.asarray(sorted(first), np.int64), np.asarray(sorted(second), np.int64)


@register_scenario(
    "rafdb",
    "RAF-DB basic emotion (7 classes), DLFD's split (--data-root DIR)",
    needs_data_root="the RAF-DB DATASET folder",
    options=OPTIONS,
)
def rafdb(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    data = rafdb_records(data_root)
    seed = PUBLISHED_SEED if options["split"] == "published" else split_seed
    train = np.flatnonzero(data.part == "train")
    # train rows come first, so positions in the train folder are sample indices
    assignment = {k: train[v] for k, v in dlfd_train_split(len(train), seed).items()}
    test, unseen = halve_by_class(np.flatnonzero(data.part == "test"), data.records.labels, seed)
    assignment.update(test=test, unseen=unseen)
    # split_seed: the seed actually used (42 for the published split)
    problem = assemble_problem(
        data.records, assignment, "instance", seed, "rafdb", options["leaks"]
    )
    description = "RAF-DB basic emotion recognition (7 classes)"
    return make_scenario(problem, description, RECIPE, image_size or 128, grayscale=True)
