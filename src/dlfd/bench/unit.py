"""One benchmark run: a (method, seed) unit, from the seed's shared context to its record.

:func:`prepare_seed` builds what every run of a seed shares (the scenario, the recipe, the two
trained checkpoints); :func:`run_unit` reuses a finished record (see
:mod:`dlfd.bench.records`) or runs the method from the original, evaluates the result once
(outputs and penultimate features in one pass), writes the model and then the record, both
atomically. A unit needs nothing but the plan and the seed, so it can run in another process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dlfd.bench.details import PROJECTION_SPLITS, projection_2d, sample_losses
from dlfd.bench.plan import CHECKPOINT_ROWS, BenchPlan
from dlfd.bench.progress import BenchProgress, TrainAdapter
from dlfd.bench.records import (
    NO_RECORD,
    RUN_FORMAT,
    RunPaths,
    finished_record,
    json_safe,
    run_config,
    run_config_sha256,
    summary,
    write_record,
)
from dlfd.bench.references import ROLE_OF_ROW, Reference, ensure_reference, place_checkpoint
from dlfd.checkpoint import load_checkpoint, sidecar_path, weights_sha256
from dlfd.config import to_dict
from dlfd.data.loaders import ProblemLoaders
from dlfd.data.splits import apply_forget_request
from dlfd.errors import SplitError
from dlfd.evaluation import (
    label_shift_json,
    metrics_from_outputs,
    problem_label_shift,
    problem_matched_reason,
    split_outputs,
    split_outputs_and_features,
)
from dlfd.methods.base import no_selection_record
from dlfd.methods.scenario_run import save_unlearned, unlearn_on_scenario
from dlfd.metrics import SplitOutputs
from dlfd.runtime import hardware_info, resolve_device, software_versions
from dlfd.scenarios import Scenario, get_scenario
from dlfd.training.recipe import TrainRecipe


@dataclass
class SeedContext:
    """What every run of one seed shares: the scenario, the recipe, the two checkpoints, one
    image cache for evaluation, the reference's outputs (computed once), and the label shift
    between forget and unseen (``label_shift``, the JSON entry every record of the seed gets)
    with the reason the label-matched attack cannot run (``matched_reason``, None when it can)."""

    plan: BenchPlan
    seed: int
    scenario: Scenario
    recipe: TrainRecipe
    device: torch.device
    original: Reference
    reference: Reference
    loaders: ProblemLoaders = field(init=False)
    label_shift: dict[str, Any] | None = field(init=False)
    matched_reason: str | None = field(init=False)
    _reference_outputs: dict[str, SplitOutputs] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.loaders = ProblemLoaders(self.scenario.problem, self.scenario.input_spec)
        self.label_shift = label_shift_json(problem_label_shift(self.scenario.problem))
        self.matched_reason = problem_matched_reason(self.scenario.problem)

    def reference_outputs(self) -> dict[str, SplitOutputs]:
        if self._reference_outputs is None:
            model, _ = load_checkpoint(self.reference.path, device=self.device)
            self._reference_outputs = split_outputs(model, self.loaders, device=self.device)
        return self._reference_outputs


def build_scenario(plan: BenchPlan, seed: int) -> tuple[Scenario, TrainRecipe]:
    """The scenario of ``seed`` (split seed per the plan) and the plan's training recipe.

    With a forget request in the plan, the scenario forgets the training images it names
    (:func:`dlfd.data.splits.apply_forget_request`, as ``dlfd train --forget``); a request
    that names unknown people or images, or people without training images in this split,
    raises :class:`~dlfd.errors.SplitError`.
    """
    scenario = get_scenario(
        plan.dataset,
        split_seed=plan.split_seed_for(seed),
        data_root=plan.data_root,
        image_size=plan.image_size,
        options=dict(plan.options),
    )
    if plan.forget_entries:
        problem = apply_forget_request(scenario.problem, plan.forget_entries)
        scenario = dataclasses.replace(scenario, problem=problem)
    return scenario, plan.train_recipe(scenario.recipe)


def check_forget_request(plan: BenchPlan) -> dict[int, int]:
    """Apply the plan's forget request to the split of every seed before any training;
    returns the forget set's size per split seed ({} without a request).

    A request that does not fit a seed's split is refused with :class:`SplitError` naming
    the split seed (and, when each seed has its own split, ``--split-seed``).
    """
    sizes: dict[int, int] = {}
    if not plan.forget_entries:
        return sizes
    for seed in plan.seeds:
        split_seed = plan.split_seed_for(seed)
        if split_seed in sizes:
            continue
        try:
            scenario, _ = build_scenario(plan, seed)
        except SplitError as exc:
            where = f"forget list {plan.forget}" if plan.forget is not None else "forget request"
            fix = (
                "; --split-seed N gives every seed one split"
                if plan.split_seed is None and len(plan.seeds) > 1
                else ""
            )
            raise SplitError(f"{where}, split seed {split_seed}: {exc}{fix}") from None
        sizes[split_seed] = scenario.problem.sizes()["forget"]
    return sizes


def prepare_seed(
    plan: BenchPlan,
    seed: int,
    *,
    progress: BenchProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> SeedContext:
    """Build the seed's scenario and train (or reuse from the cache) its two checkpoints."""
    progress = progress or BenchProgress()
    scenario, recipe = build_scenario(plan, seed)
    if log is not None and plan.forget_entries:
        people = scenario.problem.forget_identities()
        whom = f" of {len(people)} people" if people else ""
        log(
            f"seed {seed}: forget set from {plan.forget or 'the forget request'}: "
            f"{scenario.problem.sizes()['forget']} training images{whom}"
        )
    device = resolve_device(plan.device)
    refs: dict[str, Reference] = {}
    for row, role in ROLE_OF_ROW.items():
        label = f"seed {seed}: train {role}"
        progress.begin(label)
        ref = ensure_reference(
            scenario,
            role=role,
            seed=seed,
            recipe=recipe,
            device=device,
            cache_dir=plan.cache_dir,
            progress=TrainAdapter(progress),
        )
        refs[row] = ref
        if log is not None:
            if not ref.trained_now:
                how = "reused from cache"
            elif ref.resumed_from_epoch:
                how = (
                    f"resumed after epoch {ref.resumed_from_epoch} and trained "
                    f"({ref.training_s:.1f}s in all)"
                )
            else:
                how = f"trained in {ref.training_s:.1f}s"
            log(f"seed {seed}: {role} model {how} ({ref.path.name})")
        progress.end(label)
    ctx = SeedContext(
        plan, seed, scenario, recipe, device, original=refs["original"], reference=refs["retrain"]
    )
    if log is not None:
        if ctx.label_shift is not None and ctx.label_shift["warning"] is not None:
            log(f"seed {seed}: warning: {ctx.label_shift['warning']}")
        if ctx.matched_reason is not None:
            log(
                f"seed {seed}: note: no label-matched attack (mia_acc_matched, "
                f"nomus_matched): {ctx.matched_reason}"
            )
    return ctx


def _remove_model(paths: RunPaths) -> None:
    for path in (paths.model, sidecar_path(paths.model)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def run_unit(
    ctx: SeedContext,
    method: str,
    *,
    progress: BenchProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Run (or reuse) one (method, seed); returns (its summary for results.json, ran now)."""
    plan, seed, scenario = ctx.plan, ctx.seed, ctx.scenario
    progress = progress or BenchProgress()
    log = log or (lambda message: None)
    checkpoint_row = method in CHECKPOINT_ROWS
    params = {} if checkpoint_row else to_dict(plan.method_params(method))
    config = run_config(
        method=method,
        seed=seed,
        scenario=scenario,
        recipe=ctx.recipe,
        params=params,
        original_config=ctx.original.meta.config_sha256 or "",
        reference_config=ctx.reference.meta.config_sha256 or "",
        lam=plan.lam,
        attacks=plan.attacks,
        forget_request_sha256=plan.forget_request_sha256,
    )
    digest = run_config_sha256(config)
    paths = RunPaths(plan.out, seed, method)
    record, why = finished_record(paths, digest, save_models=plan.save_models)
    if record is not None:
        log(f"seed {seed}: {method} finished earlier (config {digest[:12]}); skipped")
        short = summary(record, paths)
        short.setdefault("label_shift", json_safe(ctx.label_shift))  # a record from before it
        short.setdefault("forget_request", json_safe(plan.forget_request))
        return short, False
    log(f"seed {seed}: {method} running" + ("" if why == NO_RECORD else f" ({why})"))
    with contextlib.suppress(FileNotFoundError):
        paths.record.unlink()
    _remove_model(paths)

    details: dict[str, Any] = {}
    if checkpoint_row:
        source = ctx.original if method == "original" else ctx.reference
        model, _ = load_checkpoint(source.path, device=ctx.device)
        wall_s = 0.0 if method == "original" else source.training_s
        train_s, monitor_s = wall_s, 0.0
        selected = f"the {'original model' if method == 'original' else 'retrained reference'}"
        selection = no_selection_record()
    else:
        original, _ = load_checkpoint(ctx.original.path, device=ctx.device)
        result = unlearn_on_scenario(
            original,
            scenario,
            method,
            seed=seed,
            device=ctx.device,
            hparams=plan.method_overrides(method),
            recipe=ctx.recipe,
            on_progress=progress.advance,
        )
        model = result.model
        wall_s, train_s, monitor_s = result.wall_s, result.train_s, result.monitor_s
        selected = result.selected
        selection = dict(result.selection)
        details.update(readings=result.readings, trace=result.trace, info=result.info)

    progress.advance(0, 0, "evaluating")
    started = time.perf_counter()
    outputs, features = split_outputs_and_features(
        model, ctx.loaders, device=ctx.device, feature_splits=PROJECTION_SPLITS
    )
    metrics = metrics_from_outputs(
        outputs,
        scenario.task,
        reference=ctx.reference_outputs(),
        lam=plan.lam,
        attacks=plan.attacks,
    )
    details["losses"] = sample_losses(outputs, scenario.task, seed)
    details["projection"] = projection_2d(features, seed)
    eval_s = time.perf_counter() - started

    model_file = None
    if plan.save_models:
        if checkpoint_row:
            source = ctx.original if method == "original" else ctx.reference
            weights = place_checkpoint(source.path, paths.model).weights_sha256
        else:
            weights = save_unlearned(
                result, paths.model, ctx.original.meta, source=str(ctx.original.path)
            ).weights_sha256
        model_file = paths.relative(paths.model)
    elif checkpoint_row:
        weights = (ctx.original if method == "original" else ctx.reference).meta.weights_sha256
    else:
        weights = weights_sha256(model, ctx.original.meta.arch)

    record = {
        "format": RUN_FORMAT,
        "method": method,
        "seed": seed,
        "dataset": scenario.name,
        "config": config,
        "config_sha256": digest,
        "metrics": metrics,
        "wall_s": wall_s,
        "train_s": train_s,
        "monitor_s": monitor_s,
        "eval_s": eval_s,
        "selected": selected,
        "selection": selection,
        "split_sizes": scenario.problem.sizes(),
        "forget_request": plan.forget_request,
        "label_shift": ctx.label_shift,
        "model": model_file,
        "hardware": hardware_info(),
        "versions": software_versions(),
        "hashes": {
            "weights_sha256": weights,
            "original_sha256": ctx.original.meta.weights_sha256,
            "reference_sha256": ctx.reference.meta.weights_sha256,
            "forget_sha256": scenario.problem.forget_sha256,
            "data_sha256": scenario.problem.records.fingerprint,
            "config_sha256": digest,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "details": details,
    }
    record = json_safe(record)
    write_record(paths, record)
    log(
        f"seed {seed}: {method} done in {wall_s:.1f}s (+{eval_s:.1f}s evaluation): "
        f"test_acc {metrics['test_acc']:.4f}, forgetting_score "
        f"{metrics['forgetting_score']:.4f}, nomus {metrics['nomus']:.4f}"
    )
    return summary(record, paths), True
