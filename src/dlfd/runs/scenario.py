"""Scenarios of checkpoints: the one a checkpoint records, and whether a checkpoint fits one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from dlfd.checkpoint import CheckpointMeta, read_meta
from dlfd.config import parse_overrides
from dlfd.data.splits import apply_forget_request, read_forget_list
from dlfd.errors import CheckpointError, ConfigError, DataError, SplitError
from dlfd.scenarios import Scenario, get_scenario


def load_scenario(
    dataset: str,
    *,
    split_seed: int,
    data_root: Path | None,
    image_size: int | None,
    forget: Path | None = None,
    options: list[str] | None = None,
    forget_entries: list[str] | None = None,
) -> Scenario:
    """Build the scenario; a forget request (``forget`` file or ``forget_entries``) replaces
    its forget set."""
    scenario = get_scenario(
        dataset,
        split_seed=split_seed,
        data_root=data_root,
        image_size=image_size,
        options=parse_overrides(options or []),
    )
    entries = read_forget_list(forget) if forget is not None else forget_entries
    if entries == scenario.problem.forget_keys:
        return scenario  # the recorded forget set is the scenario's own
    if entries:
        problem = apply_forget_request(scenario.problem, entries)
        scenario = dataclasses.replace(scenario, problem=problem)
    return scenario


class ScenarioRequest(NamedTuple):
    """What the user asked of a checkpoint's scenario; None: the value the checkpoint records
    (``--dataset``, ``--split-seed``, ``--data-root``, ``--forget``, ``--option``)."""

    dataset: str | None = None
    split_seed: int | None = None
    data_root: Path | None = None
    forget: Path | None = None
    option: list[str] | None = None

    def load(self, image_size: int | None = None) -> Scenario:
        """The scenario as requested (``dataset`` and ``split_seed`` given), not a checkpoint's."""
        assert self.dataset is not None and self.split_seed is not None
        return load_scenario(
            self.dataset,
            split_seed=self.split_seed,
            data_root=self.data_root,
            image_size=image_size,
            forget=self.forget,
            options=self.option,
        )


def scenario_for_checkpoint(path: Path, request: ScenarioRequest = ScenarioRequest()) -> Scenario:
    """The scenario a checkpoint was made for, as recorded in its sidecar (name, options, split
    seed, data folder, forget set), with any of them overridden by the user's ``request``."""
    dataset, split_seed, data_root, forget, option = request
    meta = read_meta(path)
    name = dataset or meta.scenario
    if name is None:
        raise ConfigError(f"{path} does not record its scenario; pass --dataset")
    same_scenario = name == meta.scenario
    use_recorded_forget = same_scenario and forget is None and split_seed in (None, meta.split_seed)
    size = meta.input_spec.size
    recorded_root = Path(meta.data_root) if same_scenario and meta.data_root else None
    recorded_options = [f"{k}={v}" for k, v in meta.scenario_options.items()]
    try:
        return load_scenario(
            name,
            split_seed=split_seed if split_seed is not None else (meta.split_seed or 0),
            data_root=data_root or recorded_root,
            image_size=size[0] if size[0] == size[1] else None,
            forget=forget,
            options=option if option is not None or not same_scenario else recorded_options,
            forget_entries=list(meta.forget_keys or []) if use_recorded_forget else None,
        )
    except DataError as exc:
        if data_root is not None or recorded_root is None or isinstance(exc, SplitError):
            raise
        raise DataError(
            f"{exc} (the data folder {recorded_root} is the one {path} records; "
            "--data-root overrides it)"
        ) from None


@dataclasses.dataclass(frozen=True)
class Fit:
    """How the recorded provenance of a checkpoint that fits a scenario differs from it (a
    field the checkpoint does not record never differs); each command decides what that means."""

    other_scenario: bool  # made for a scenario of another name
    other_data: bool  # trained on other files or labels
    other_split: bool  # trained on the split of another seed
    other_forget: bool  # made for another forget set


def checkpoint_fit(meta: CheckpointMeta, path: Path, scenario: Scenario) -> Fit:
    """Refuse a checkpoint whose outputs do not fit the scenario (class count, task); say how
    the rest of its provenance differs from it."""
    if meta.num_classes != scenario.num_classes:
        raise CheckpointError(
            f"{path} predicts {meta.num_classes} classes but {scenario.name} "
            f"has {scenario.num_classes}"
        )
    if meta.task != scenario.task:
        raise CheckpointError(
            f"{path} is a {meta.task} model but {scenario.name} is {scenario.task}"
        )
    problem = scenario.problem
    return Fit(
        other_scenario=meta.scenario not in (None, scenario.name),
        other_data=meta.data_sha256 not in (None, problem.records.fingerprint),
        other_split=meta.split_seed not in (None, problem.split_seed),
        other_forget=meta.forget_sha256 not in (None, problem.forget_sha256),
    )
