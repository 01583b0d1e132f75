"""Evaluate checkpoints on a scenario (``dlfd evaluate``): fit checks, metrics, the record."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dlfd import __version__
from dlfd.checkpoint import CheckpointMeta, load_checkpoint
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.errors import CheckpointError
from dlfd.evaluation import (
    evaluate_model,
    label_notes,
    label_shift_json,
    problem_label_shift,
    problem_matched_reason,
)
from dlfd.runs.records import checkpoint_record, data_hashes, run_record
from dlfd.runs.scenario import checkpoint_fit
from dlfd.runtime import Precision
from dlfd.scenarios import Scenario

#: Marks ``dlfd evaluate --json`` files.
EVALUATION_FORMAT = "dlfd-evaluation/1"

Say = Callable[[str], None]


def check_evaluated(
    meta: CheckpointMeta, path: Path, scenario: Scenario, *, strict: bool, warn: Say
) -> None:
    """Refuse a model that cannot be evaluated on ``scenario``; warn about provenance gaps
    (``strict``: a model made for another forget set is refused, as a reference must be)."""
    fit = checkpoint_fit(meta, path, scenario)
    if fit.other_scenario:
        warn(f"{path} was trained on {meta.scenario!r}, evaluating on {scenario.name!r}")
    if fit.other_data:
        warn(f"{path} was trained on different data (files or labels)")
    if fit.other_forget:
        message = f"{path} was made for a different forget set than the one evaluated"
        message += f" (split seed {meta.split_seed})"
        if strict:
            raise CheckpointError(message + "; the gaps to it would be meaningless")
        warn(f"{message}; forget/retain metrics refer to this split")


def evaluate_checkpoints(
    scenario: Scenario,
    models: Sequence[Path],
    reference: Path | None,
    *,
    device: torch.device,
    lam: float,
    attacks: bool,
    warn: Say,
    note: Say,
    precision: Precision = Precision(),
) -> dict[str, Any]:
    """The evaluation record of ``models`` on ``scenario`` (gaps to ``reference`` when given):
    one row of provenance and metrics per model under ``results``."""
    problem = scenario.problem
    shift = label_shift_json(problem_label_shift(problem))
    matched_reason = problem_matched_reason(problem)
    for kind, text in label_notes(shift, matched_reason):
        (warn if kind == "warning" else note)(text)
    ref_model = ref_meta = ref_row = None
    if reference is not None:
        ref_model, ref_meta = load_checkpoint(reference, device=device)
        precision.prepare(ref_model)
        check_evaluated(ref_meta, reference, scenario, strict=True, warn=warn)
        if ref_meta.role != "retrained":
            warn(f"reference {reference} has role {ref_meta.role!r}")
        ref_row = checkpoint_record(reference, ref_meta)
    rows = []
    for path in models:
        model, meta = load_checkpoint(path, device=device)
        check_evaluated(meta, path, scenario, strict=False, warn=warn)
        if ref_meta is not None and ref_meta.input_spec != meta.input_spec:
            raise CheckpointError(f"{path} and the reference {reference} expect different inputs")
        loaders = ProblemLoaders(problem, meta.input_spec, device=batch_device(device))
        metrics = evaluate_model(
            model,
            loaders,
            device=device,
            reference=ref_model,
            lam=lam,
            attacks=attacks,
            precision=precision,
        )
        rows.append({**checkpoint_record(path, meta), "metrics": metrics})
    matched = {} if matched_reason is None else {"matched_attack": {"reason": matched_reason}}
    if not precision.is_default:
        matched["precision"] = precision.to_dict()
    return run_record(
        EVALUATION_FORMAT,
        dlfd_version=__version__,
        dataset=scenario.name,
        scenario_options=dict(scenario.options),
        split_seed=problem.split_seed,
        **data_hashes(problem),
        split_sizes=problem.sizes(),
        **{"lambda": lam},
        reference=ref_row,
        label_shift=shift,
        results=rows,
        **matched,
    )
