"""Scenarios over the user's own data: a CSV manifest (``csv``) or an ImageFolder (``imagefolder``).

Splits come from the manifest's ``split`` column when present; otherwise whole identities are
split (when every row has one and there are at least 10 people) or images are split at random,
with seed ``split_seed``: forget 10%, retain 50%, val 10%, test 15%, unseen 15%.
Option ``level=identity|mixed|instance`` (``-O level=instance``) overrides that choice; with a
split column, ``mixed`` lets a person's images be in both forget and retain (held-out splits
still other people) and ``instance`` allows any sharing. Option ``leaks=refuse|drop|drop-near``
(both ``csv`` and ``imagefolder``) drops leaked samples instead of refusing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dlfd.data.manifest import imagefolder_records, read_manifest
from dlfd.data.problem import SPLITS, UnlearningProblem
from dlfd.data.records import ImageRecords
from dlfd.data.splits import identity_split, instance_split
from dlfd.data.transforms import AugmentConfig
from dlfd.errors import ConfigError
from dlfd.recipe import TrainRecipe
from dlfd.scenarios.assemble import LEAK_POLICIES, assemble_problem, build_with_leak_policy
from dlfd.scenarios.registry import Scenario, make_scenario, register_scenario

DEFAULT_FRACTIONS = {"forget": 0.1, "retain": 0.5, "val": 0.1, "test": 0.15, "unseen": 0.15}
DEFAULT_SIZE = 64
_RECIPE = TrainRecipe(augment=AugmentConfig(hflip=0.5, crop_padding=4))
LEVELS = ("auto", "identity", "mixed", "instance")


def _default_split(
    records: ImageRecords, seed: int, name: str, leaks: str, level: str = "auto"
) -> UnlearningProblem:
    """Whole people when every split gets at least one (or ``level=identity``), else images;
    leaked samples handled by the ``leaks`` policy."""
    people = len(records.unique_identities())
    enough = records.has_identities and people * min(DEFAULT_FRACTIONS.values()) >= 1
    split = (
        identity_split if level == "identity" or (level == "auto" and enough) else instance_split
    )
    return build_with_leak_policy(
        lambda: split(records, DEFAULT_FRACTIONS, seed=seed, name=name), seed, name, leaks
    )


def _scenario(problem: UnlearningProblem, image_size: int | None) -> Scenario:
    description = f"user data from {problem.records.root}"
    return make_scenario(problem, description, _RECIPE, image_size or DEFAULT_SIZE)


@register_scenario(
    "csv",
    "your images listed in a CSV manifest (--data-root manifest.csv)",
    needs_data_root="the manifest CSV file",
    options={"level": LEVELS, "leaks": LEAK_POLICIES},
)
def csv_scenario(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    level, leaks = options["level"], options["leaks"]
    if data_root is None or data_root.is_dir():  # (None only when called directly)
        raise ConfigError("dataset 'csv' needs --data-root pointing to the manifest CSV file")
    manifest = read_manifest(data_root)
    records = manifest.records
    if manifest.splits is None:
        if level == "mixed":
            raise ConfigError("level=mixed needs a split column in the manifest")
        return _scenario(_default_split(records, split_seed, "csv", leaks, level), image_size)
    column = np.asarray(manifest.splits)
    arrays = {split: np.flatnonzero(column == split) for split in SPLITS}
    if level == "auto":
        level = "identity" if records.has_identities else "instance"
    problem = assemble_problem(records, arrays, level, split_seed, "csv", leaks)
    return _scenario(problem, image_size)


@register_scenario(
    "imagefolder",
    "your images in class folders (--data-root DIR)",
    needs_data_root="the class folders",
    options={"leaks": LEAK_POLICIES},
)
def imagefolder_scenario(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    records = imagefolder_records(data_root)
    problem = _default_split(records, split_seed, "imagefolder", options["leaks"])
    return _scenario(problem, image_size)
