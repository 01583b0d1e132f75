"""``mufac``: the MUFAC age benchmark (8 age classes, 128x128) from the user's copy.

Splits, as the benchmark defines them: train = custom_train (families F0001-F0299);
test = custom_val, unseen = custom_test. Options:

- ``forget=published`` (default): the first 1,500 train rows are forgotten, the other 8,525
  retained (a person may have photos on both sides: level ``mixed``); ``forget=identity``:
  whole persons (family + role), drawn with the split seed until at least 1,500 photos.
- ``val=none`` (default): test and unseen exactly as the benchmark defines them, no val split;
  ``val=carve``: the protocol's validation split of people never trained on (model selection
  only): a seeded 20% of the test families become ``val``, the rest stay ``test``.
- ``leaks=refuse|drop|drop-near``: the public release has duplicate faces across splits.

Inputs: 128x128 RGB, ImageNet normalisation (as the DLFD code); recipe: ResNet-18 + MLP head,
100 epochs, SGD lr 0.01, momentum 0.9, weight decay 5e-4, cosine, batch 32 (the paper's).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlfd.data.mufac import PUBLISHED_FORGET_ROWS, mufac_records
from dlfd.data.transforms import AugmentConfig
from dlfd.errors import DataError
from dlfd.recipe import TrainRecipe
from dlfd.scenarios.assemble import LEAK_POLICIES, assemble_problem, held_out_val
from dlfd.scenarios.registry import Scenario, make_scenario, register_scenario

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPE = TrainRecipe(
    model="resnet18_mlp",
    epochs=100,
    batch_size=32,
    lr=0.01,
    momentum=0.9,
    weight_decay=5e-4,
    augment=AugmentConfig(hflip=0.5, degrees=10.0, scale=(0.8, 1.2)),
)
OPTIONS = {"forget": ("published", "identity"), "val": ("none", "carve"), "leaks": LEAK_POLICIES}


def forget_whole_people(
    identities: tuple[str, ...], train: np.ndarray, seed: int, target: int
) -> np.ndarray:
    """Whole persons of ``train``, in seeded order, until at least ``target`` images."""
    people = sorted({identities[i] for i in train})
    order = np.random.default_rng(seed).permutation(len(people))
    by_person: dict[str, list[int]] = {}
    for i in train:
        by_person.setdefault(identities[i], []).append(int(i))
    chosen: list[int] = []
    for k in order:
        if len(chosen) >= target:
            break
        chosen.extend(by_person[people[k]])
    return np.asarray(sorted(chosen), np.int64)


@register_scenario(
    "mufac",
    "MUFAC facial age (8 classes), published split (--data-root DIR)",
    needs_data_root="the unzipped MUFAC folder",
    options=OPTIONS,
)
def mufac(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    data = mufac_records(data_root)
    train = np.flatnonzero(data.part == "train")
    if len(train) <= PUBLISHED_FORGET_ROWS:
        raise DataError(
            f"MUFAC train has only {len(train)} rows; the published forget set "
            f"alone is {PUBLISHED_FORGET_ROWS}"
        )
    if options["forget"] == "published":
        forget, level = train[:PUBLISHED_FORGET_ROWS], "mixed"
    else:
        identities = data.records.identities
        forget = forget_whole_people(identities, train, split_seed, PUBLISHED_FORGET_ROWS)
        level = "identity"
    assignment = {
        "forget": forget,
        "retain": np.setdiff1d(train, forget),
        **held_out_val(data.family, np.flatnonzero(data.part == "val"), split_seed, options["val"]),
        "unseen": np.flatnonzero(data.part == "test"),
    }
    problem = assemble_problem(
        data.records, assignment, level, split_seed, "mufac", options["leaks"]
    )
    description = "MUFAC facial age classification (8 classes)"
    size = image_size or 128
    return make_scenario(problem, description, RECIPE, size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
