"""``mucac``: the MUCAC celebrity attribute benchmark (CelebA-HQ) from the user's copy.

Splits, as the benchmark defines them, by CelebA identity number: test id < 190;
forget 190 <= id < 1250; retain 1250 <= id < 4855; unseen id >= 4855 (whole people in every
split: level ``identity``). Options:

- ``task=multilabel`` (default): (Male, Smiling, Young) as three 0/1 labels; ``task=gender``,
  ``smiling`` or ``young``: that one attribute as a 2-class problem.
- ``val=none`` (default): the benchmark's test set whole, no val split; ``val=carve``: a seeded
  20% of the test identities become ``val`` (model selection only), the rest stay ``test``.
- ``leaks=refuse|drop|drop-near``: what to do with duplicate pictures across splits.

From the benchmark notebooks: the identity thresholds, the three attributes, 128x128 RGB inputs
without normalisation (mean 0, std 1) and a torchvision-style ResNet-18 with a linear head.
Ours (not checked against the notebooks): the val carving, 30 epochs, batch 64, SGD lr 0.01,
momentum 0.9, weight decay 5e-4, cosine schedule, horizontal flips and scale jitter (0.8-1.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlfd.data.mucac import TASKS, mucac_records
from dlfd.data.transforms import AugmentConfig
from dlfd.recipe import TrainRecipe
from dlfd.scenarios.assemble import LEAK_POLICIES, assemble_problem, held_out_val
from dlfd.scenarios.registry import Scenario, make_scenario, register_scenario

#: Published identity thresholds: test < 190 <= forget < 1250 <= retain < 4855 <= unseen.
TEST_BELOW, FORGET_BELOW, RETAIN_BELOW = 190, 1250, 4855
PUBLISHED_SPLITS = ("test", "forget", "retain", "unseen")
RECIPE = TrainRecipe(
    model="resnet18",
    epochs=30,
    batch_size=64,
    lr=0.01,
    augment=AugmentConfig(hflip=0.5, scale=(0.8, 1.2)),
)
OPTIONS = {"task": TASKS, "val": ("none", "carve"), "leaks": LEAK_POLICIES}


def published_split(numbers: np.ndarray) -> dict[str, np.ndarray]:
    """Sample indices of test/forget/retain/unseen from the CelebA identity numbers."""
    part = np.digitize(numbers, (TEST_BELOW, FORGET_BELOW, RETAIN_BELOW))
    return {split: np.flatnonzero(part == k) for k, split in enumerate(PUBLISHED_SPLITS)}


@register_scenario(
    "mucac",
    "MUCAC CelebA-HQ attributes (male/smiling/young), published split (--data-root DIR)",
    needs_data_root="the CelebAMask-HQ folder",
    options=OPTIONS,
)
def mucac(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    data = mucac_records(data_root, task=options["task"])
    assignment = published_split(data.identity_number)
    people = np.asarray(data.records.identities)
    assignment.update(held_out_val(people, assignment.pop("test"), split_seed, options["val"]))
    problem = assemble_problem(
        data.records, assignment, "identity", split_seed, "mucac", options["leaks"]
    )
    what = "male/smiling/young" if options["task"] == "multilabel" else options["task"]
    description = f"MUCAC CelebA-HQ attribute classification ({what})"
    size = image_size or 128
    return make_scenario(problem, description, RECIPE, size, mean=(0.0,) * 3, std=(1.0,) * 3)
