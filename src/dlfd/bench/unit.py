"""One benchmark run: a (method, seed) unit, from the seed's shared context to its record.

:func:`prepare_seed` builds what every run of a seed shares; :func:`run_unit` reuses a finished
record (:mod:`dlfd.bench.records`) or computes the run (:func:`compute_unit`: the method from the
original, the result evaluated once) and writes it (:func:`write_unit`: the model, then the
record, both atomically). A unit needs nothing but the plan and the seed, so it can be computed
in another process, or on another machine, and written by the one collecting the results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlfd.bench.details import PROJECTION_SPLITS, projection_2d, sample_losses
from dlfd.bench.plan import BenchPlan
from dlfd.bench.progress import BenchProgress
from dlfd.bench.records import (
    NO_RECORD,
    RUN_FORMAT,
    RunPaths,
    finished_record,
    json_safe,
    run_config,
    summary,
)
from dlfd.bench.references import ROLE_OF_ROW, Reference, place_checkpoint, reference_cache
from dlfd.checkpoint import load_checkpoint, read_meta, sidecar_path, weights_sha256
from dlfd.config import to_dict
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.data.splits import apply_forget_request
from dlfd.errors import CheckpointError, ConfigError, SplitError
from dlfd.evaluation import (
    label_notes,
    label_shift_json,
    problem_label_shift,
    problem_matched_reason,
    split_outputs,
    split_outputs_and_features,
)
from dlfd.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_bytes
from dlfd.methods.base import UnlearnResult
from dlfd.metrics import SplitOutputs, protocol_metrics
from dlfd.recipe import TrainRecipe
from dlfd.runs.method_run import save_unlearned, unlearn_on_scenario
from dlfd.runs.records import data_hashes, run_record
from dlfd.runs.scenario import checkpoint_fit
from dlfd.runtime import resolve_device
from dlfd.scenarios import Scenario, get_scenario
from dlfd.training.runner import config_hash


@dataclass
class SeedContext:
    """What every run of one seed shares, the reference's outputs computed once; ``label_shift``
    is the JSON entry of every record of the seed, ``matched_reason`` None when the
    label-matched attack can run."""

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

    def __post_init__(self) -> None:
        problem, spec = self.scenario.problem, self.scenario.input_spec
        self.loaders = ProblemLoaders(problem, spec, device=batch_device(self.device))
        self.label_shift = label_shift_json(problem_label_shift(self.scenario.problem))
        self.matched_reason = problem_matched_reason(self.scenario.problem)

    @functools.cached_property
    def reference_outputs(self) -> dict[str, SplitOutputs]:
        model, _ = load_checkpoint(self.reference.path, device=self.device)
        return split_outputs(model, self.loaders, device=self.device)


def build_scenario(plan: BenchPlan, seed: int) -> tuple[Scenario, TrainRecipe]:
    """The scenario of ``seed`` and the plan's recipe; with a forget request, the scenario
    forgets the training images it names (:class:`SplitError` when it does not fit)."""
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
    """Apply the plan's forget request to every seed's split before any training; returns the
    forget set's size per split seed ({} without a request). :class:`SplitError` names the
    split seed that does not fit."""
    sizes: dict[int, int] = {}
    for seed in plan.seeds if plan.forget_entries else ():
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


def check_given_checkpoints(plan: BenchPlan) -> None:
    """Check ``--original``/``--reference`` against every split seed's scenario before any
    training (:func:`given_checkpoint` raises, naming the difference)."""
    given = {"original": plan.original, "retrained": plan.reference}
    checked: set[int] = set()
    for seed in plan.seeds if plan.original is not None else ():
        if plan.split_seed_for(seed) in checked:
            continue
        checked.add(plan.split_seed_for(seed))
        scenario, _ = build_scenario(plan, seed)
        for role, path in given.items():
            if path is not None:
                given_checkpoint(path, role, scenario)


def given_checkpoint(path: Path, role: str, scenario: Scenario) -> Reference:
    """A checkpoint given to the bench as its ``role`` model, refused unless it was made for
    this seed's scenario, data, split and forget set."""
    meta = read_meta(path)
    fit = checkpoint_fit(meta, path, scenario)
    flag = "--original" if role == "original" else "--reference"
    if meta.role in ROLE_OF_ROW.values() and meta.role != role:
        raise ConfigError(f"{flag} {path} is the {meta.role} model, not the {role} one")
    differs = [
        what
        for what, bad in (
            ("another scenario", fit.other_scenario),
            ("other data", fit.other_data),
            (f"the split of seed {meta.split_seed} (use --split-seed)", fit.other_split),
            ("another forget set (give its --forget list)", fit.other_forget),
        )
        if bad
    ]
    if differs:
        raise ConfigError(f"{flag} {path} was made for {', '.join(differs)}")
    return Reference(path, meta, trained_now=False)


def prepare_seed(
    plan: BenchPlan,
    seed: int,
    *,
    progress: BenchProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> SeedContext:
    """Build the seed's scenario and train (or reuse from the cache) its two checkpoints."""
    progress = progress or BenchProgress()
    log = log or (lambda message: None)
    scenario, recipe = build_scenario(plan, seed)
    if plan.forget_entries:
        people = scenario.problem.forget_identities()
        whom = f" of {len(people)} people" if people else ""
        log(
            f"seed {seed}: forget set from {plan.forget or 'the forget request'}: "
            f"{scenario.problem.sizes()['forget']} training images{whom}"
        )
    device = resolve_device(plan.device)
    cache = reference_cache(plan.cache_dir)
    given = {"original": plan.original, "retrain": plan.reference}
    refs: dict[str, Reference] = {}
    for row, role in ROLE_OF_ROW.items():
        if given[row] is not None:
            refs[row] = given_checkpoint(given[row], role, scenario)
            log(f"seed {seed}: {role} model given ({given[row]})")
            continue
        if row == "retrain" and plan.original is not None:  # the given original's architecture
            recipe = dataclasses.replace(recipe, model=refs["original"].meta.arch)
        progress.begin(label := f"seed {seed}: train {role}")
        ref = refs[row] = cache.get(
            scenario, role=role, seed=seed, recipe=recipe, device=device, progress=progress.training
        )
        if not ref.trained_now:
            how = "reused from cache"
        elif ref.resumed_from_epoch:
            how = f"resumed after epoch {ref.resumed_from_epoch} and trained "
            how += f"({ref.training_s:.1f}s in all)"
        else:
            how = f"trained in {ref.training_s:.1f}s"
        log(f"seed {seed}: {role} model {how} ({ref.path.name})")
        progress.end(label)
    ctx = SeedContext(
        plan, seed, scenario, recipe, device, original=refs["original"], reference=refs["retrain"]
    )
    for kind, text in label_notes(ctx.label_shift, ctx.matched_reason):
        log(f"seed {seed}: {kind}: {text}")
    return ctx


@dataclass(frozen=True)
class ComputedUnit:
    """A run computed but not yet written: its record and the files of its model.

    ``weights`` and ``sidecar`` are the unlearned model's checkpoint files as
    :func:`dlfd.runs.method_run.save_unlearned` writes them; ``link`` is the cached checkpoint
    a checkpoint row places at its model path; all None without saved models. Plain data, so a
    run computed in another process (or on another machine) is written by the one collecting
    the results (:func:`write_unit`).
    """

    seed: int
    method: str
    record: dict[str, Any]
    weights: bytes | None = None
    sidecar: str | None = None
    link: Path | None = None


def unit_config(ctx: SeedContext, method: str) -> tuple[dict[str, Any], str]:
    """The configuration of (``method``, the context's seed) and its hash, which keys the run."""
    plan = ctx.plan
    source = {"original": ctx.original, "retrain": ctx.reference}.get(method)
    config = run_config(
        method=method,
        seed=ctx.seed,
        scenario=ctx.scenario,
        recipe=ctx.recipe,
        params={} if source is not None else to_dict(plan.method_params(method)),
        original_config=ctx.original.meta.config_sha256 or ctx.original.meta.weights_sha256,
        reference_config=ctx.reference.meta.config_sha256 or ctx.reference.meta.weights_sha256,
        lam=plan.lam,
        attacks=plan.attacks,
        forget_request_sha256=plan.forget_request_sha256,
    )
    return config, config_hash(config)


def reuse_unit(
    plan: BenchPlan,
    seed: int,
    method: str,
    digest: str,
    label_shift: dict[str, Any] | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any] | None, str]:
    """(the summary of the finished run keyed ``digest``, "finished") or (None, why it runs);
    needs no seed context, so the process writing the records decides it."""
    paths = RunPaths(plan.out, seed, method)
    record, why = finished_record(paths, digest, save_models=plan.save_models)
    if record is None:
        return None, why
    log(f"seed {seed}: {method} finished earlier (config {digest[:12]}); skipped")
    short = summary(record, paths)
    short.setdefault("label_shift", json_safe(label_shift))  # a record from before it
    short.setdefault("forget_request", json_safe(plan.forget_request))
    return short, why


def start_unit(
    plan: BenchPlan, seed: int, method: str, why: str, log: Callable[[str], None]
) -> None:
    """Log that a run runs (and why, when an earlier record is redone) and remove its old
    files, so only a finished run ever leaves a record."""
    log(f"seed {seed}: {method} running" + ("" if why == NO_RECORD else f" ({why})"))
    paths = RunPaths(plan.out, seed, method)
    for path in (paths.record, paths.model, sidecar_path(paths.model)):
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
    log = log or (lambda message: None)
    _, digest = unit_config(ctx, method)
    short, why = reuse_unit(ctx.plan, ctx.seed, method, digest, ctx.label_shift, log)
    if short is not None:
        return short, False
    start_unit(ctx.plan, ctx.seed, method, why, log)
    return write_unit(ctx.plan.out, compute_unit(ctx, method, progress=progress), log), True


def compute_unit(
    ctx: SeedContext, method: str, *, progress: BenchProgress | None = None
) -> ComputedUnit:
    """Run ``method`` from the original (or take a checkpoint row's model), evaluate it once
    (outputs and penultimate features in one pass) and build its record; writes nothing."""
    plan, seed, scenario = ctx.plan, ctx.seed, ctx.scenario
    progress = progress or BenchProgress()
    # The original and retrain rows show the seed's checkpoints rather than run a method.
    source = {"original": ctx.original, "retrain": ctx.reference}.get(method)
    config, digest = unit_config(ctx, method)
    paths = RunPaths(plan.out, seed, method)

    details: dict[str, Any] = {}
    if source is None:
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
        details.update(readings=result.readings, trace=result.trace, info=result.info)
    else:
        result = _checkpoint_result(ctx, method, source)
    model = result.model

    progress.advance(0, 0, "evaluating")
    started = time.perf_counter()
    outputs, features = split_outputs_and_features(
        model, ctx.loaders, device=ctx.device, feature_splits=PROJECTION_SPLITS
    )
    metrics = protocol_metrics(
        outputs,
        task=scenario.task,
        reference=ctx.reference_outputs,
        lam=plan.lam,
        attacks=plan.attacks,
    )
    details["losses"] = sample_losses(outputs, scenario.task, seed)
    details["projection"] = projection_2d(features, seed)
    eval_s = time.perf_counter() - started

    files: dict[str, Any] = {}
    if not plan.save_models:
        weights = (
            source.meta.weights_sha256 if source else weights_sha256(model, ctx.original.meta.arch)
        )
    elif source is not None:
        weights, files["link"] = source.meta.weights_sha256, source.path
    else:
        files["weights"], files["sidecar"] = _unlearned_files(ctx, result)
        weights = sha256_bytes(files["weights"])

    record = run_record(
        RUN_FORMAT,
        method=method,
        seed=seed,
        dataset=scenario.name,
        config=config,
        config_sha256=digest,
        metrics=metrics,
        wall_s=result.wall_s,
        train_s=result.train_s,
        monitor_s=result.monitor_s,
        eval_s=eval_s,
        selected=result.selected,
        selection=dict(result.selection),
        split_sizes=scenario.problem.sizes(),
        forget_request=plan.forget_request,
        label_shift=ctx.label_shift,
        model=paths.relative(paths.model) if plan.save_models else None,
        hashes={
            "weights_sha256": weights,
            "original_sha256": ctx.original.meta.weights_sha256,
            "reference_sha256": ctx.reference.meta.weights_sha256,
            **data_hashes(scenario.problem),
            "config_sha256": digest,
        },
        details=details,
    )
    return ComputedUnit(seed, method, json_safe(record), **files)


def _unlearned_files(ctx: SeedContext, result: UnlearnResult) -> tuple[bytes, str]:
    """The unlearned model's checkpoint files (weights, sidecar text), exactly as
    :func:`save_unlearned` writes them, made in a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="dlfd-unit-") as folder:
        path = Path(folder) / "model.safetensors"
        save_unlearned(result, path, ctx.original.meta, source=str(ctx.original.path))
        return path.read_bytes(), sidecar_path(path).read_text(encoding="utf-8")


def write_unit(
    out: Path, unit: ComputedUnit, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write a computed run into the bench folder ``out``: its model (sidecar, then weights),
    then its record, each atomically; returns its summary for results.json."""
    paths = RunPaths(out, unit.seed, unit.method)
    record = unit.record
    if unit.link is not None:
        placed = place_checkpoint(unit.link, paths.model).weights_sha256
        if placed != record["hashes"]["weights_sha256"]:
            raise CheckpointError(f"{unit.link} changed while seed {unit.seed} was evaluated")
    elif unit.weights is not None and unit.sidecar is not None:
        atomic_write_text(sidecar_path(paths.model), unit.sidecar)
        atomic_write_bytes(paths.model, unit.weights)
    atomic_write_json(paths.record, record)  # last: a record exists only for a finished run
    if log is not None:
        log(_done_line(unit))
    return summary(record, paths)


def _done_line(unit: ComputedUnit) -> str:
    """The log line of a finished run, with its headline numbers (null ones shown as nan)."""

    def shown(value: float | None, digits: int) -> str:
        return f"{float('nan') if value is None else value:.{digits}f}"

    record, metrics = unit.record, unit.record["metrics"]
    return (
        f"seed {unit.seed}: {unit.method} done in {shown(record['wall_s'], 1)}s "
        f"(+{shown(record['eval_s'], 1)}s evaluation): test_acc {shown(metrics['test_acc'], 4)}, "
        f"forgetting_score {shown(metrics['forgetting_score'], 4)}, "
        f"nomus {shown(metrics['nomus'], 4)}"
    )


def _checkpoint_result(ctx: SeedContext, method: str, source: Reference) -> UnlearnResult:
    """A checkpoint row as the result of a run: the cached model itself, nothing selected; its
    time is the reference's training time (the original's counts as 0: every method pays it)."""
    model, _ = load_checkpoint(source.path, device=ctx.device)
    original = source is ctx.original
    wall_s = 0.0 if original else source.training_s
    return UnlearnResult(
        model=model,
        method=method,
        params={},
        seed=ctx.seed,
        device=str(ctx.device),
        selected=f"the {'original model' if original else 'retrained reference'}",
        wall_s=wall_s,
        train_s=wall_s,
        monitor_s=0.0,
        trace=[],
        readings=[],
        info={},
    )
