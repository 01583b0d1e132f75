"""One batch of erasure requests: pending requests -> the next model version, or nothing.

:func:`process_batch` holds the store's lock (one batch at a time), puts back what a run that
died left behind, claims the pending requests, refuses those that do not fit the data (with
the reason), runs the store's method **from the current version** with the **accumulated**
forget set (everything forgotten so far plus this batch), evaluates the result (and audits it
against a model retrained without all of it, when the store says so), writes the version's
folder and publishes it in one ledger transaction. Any failure before that transaction puts
the batch's requests back to pending with the error and publishes nothing; a ``kill -9``
leaves them scheduled, and the next run takes them up again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from dlfd.audit.runner import LoadedModel
from dlfd.bench.records import json_safe
from dlfd.checkpoint import CheckpointMeta, load_checkpoint
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.errors import ConfigError, DlfdError, SplitError
from dlfd.evaluation import evaluate_model
from dlfd.io import atomic_write_json
from dlfd.metrics import SplitOutputs, protocol_metrics
from dlfd.recipe import TrainRecipe
from dlfd.runs.method_run import save_unlearned, unlearn_on_scenario
from dlfd.runtime import derive_seed, resolve_device
from dlfd.scenarios import Scenario
from dlfd.service.schema import Request, Version
from dlfd.service.store import WEIGHTS_NAME, Store
from dlfd.training.loop import ProgressFn

log = logging.getLogger("dlfd.service")

#: The protocol numbers a version keeps in the ledger (the evaluation file has them all).
KEY_METRICS = (
    "forget_acc",
    "retain_acc",
    "test_acc",
    "unseen_acc",
    "val_acc",
    "mia_acc",
    "mia_acc_matched",
    "nomus",
    "avg_gap",
)


class BatchFailed(DlfdError):
    """A batch that failed; its requests are pending again (or failed after many tries)."""


@dataclass
class BatchOutcome:
    """What one :func:`process_batch` call did."""

    version: int | None = None  # the version published (None: nothing published)
    done: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)
    recovered: int = 0  # requests a dead run had left scheduled
    removed: list[str] = field(default_factory=list)  # unpublished folders a dead run left
    message: str = ""


def method_seed(store_seed: int, number: int) -> int:
    """The method's seed for version ``number`` (reproducible, different per version)."""
    return derive_seed(store_seed, f"version-{number}")


def accumulate(forgotten: list[str], requests: list[Request]) -> list[str]:
    """Everything forgotten so far followed by the batch's new entries, without repeats."""
    return list(dict.fromkeys([*forgotten, *(e for r in requests for e in r.entries)]))


def process_batch(
    store: Store,
    *,
    device: str | torch.device = "auto",
    limit: int | None = None,
    older_than: timedelta | None = None,
    progress: ProgressFn | None = None,
    say: Callable[[str], None] = log.info,
) -> BatchOutcome:
    """Process the pending requests (at most ``limit``, received at least ``older_than``
    ago) into the next version. :class:`~dlfd.service.store.Busy` when another run holds the
    store; :class:`BatchFailed` when the batch failed (nothing published)."""
    ledger = store.ledger
    with store.lock():
        outcome = BatchOutcome(recovered=ledger.recover(), removed=store.remove_unpublished())
        if outcome.recovered:
            say(f"{outcome.recovered} request(s) an interrupted run left are pending again")
        batch = ledger.claim(limit=limit, older_than=older_than)
        if not batch:
            outcome.message = "no pending requests"
            return outcome
        say(f"batch of {len(batch)} request(s): {', '.join(str(r.id) for r in batch)}")
        valid = []
        for request in batch:
            try:
                store.check_entries(request.entries)
                valid.append(request)
            except SplitError as exc:
                ledger.refuse(request.id, str(exc))
                outcome.refused[request.id] = str(exc)
                say(f"request {request.id} refused: {exc}")
        if not valid:
            outcome.message = "every request of the batch was refused"
            return outcome
        current = ledger.current()
        assert current is not None  # version 0 exists from the store's creation
        entries = accumulate(current.forget_entries, valid)
        ids = [r.id for r in valid]
        try:
            if set(entries) == set(current.forget_entries):
                ledger.settle(ids, current.number)
                outcome.done = ids
                outcome.message = f"version {current.number} forgets everything asked already"
                return outcome
            made = _make_version(store, current, entries, valid, device, progress, say)
            published = ledger.publish(made[0], done=ids, certificate=made[1])
        except BaseException as exc:
            text = str(exc) if isinstance(exc, DlfdError) else f"{type(exc).__name__}: {exc}"
            ledger.release(ids, text)
            if isinstance(exc, Exception):
                raise BatchFailed(
                    f"the batch failed and published nothing (its requests stay pending): {text}"
                ) from exc
            raise
        outcome.version, outcome.done = published.number, ids
        outcome.message = f"published version {published.number}"
        return outcome


def _make_version(
    store: Store,
    current: Version,
    entries: list[str],
    requests: list[Request],
    device: str | torch.device,
    progress: ProgressFn | None,
    say: Callable[[str], None],
) -> tuple[Version, dict[str, Any] | None]:
    """Unlearn ``entries`` from the current version, evaluate (and audit), and write the new
    version's folder; returns its ledger row (not yet published) and its certificate."""
    config = store.config
    number = current.number + 1
    torch_device = resolve_device(device)
    scenario = store.scenario(entries)
    original_meta = store.original_meta()
    recipe = TrainRecipe.from_dict(original_meta.recipe) if original_meta.recipe else None
    model, meta = load_checkpoint(store.weights(current.number), device=torch_device)
    problem = scenario.problem
    say(
        f"version {number}: {config.method} from version {current.number}, forgetting "
        f"{len(entries)} entries ({len(problem.forget)} images) in total"
    )
    seed = method_seed(config.seed, number)
    result = unlearn_on_scenario(
        model,
        scenario,
        config.method,
        seed=seed,
        device=torch_device,
        hparams=dict(config.settings),
        recipe=recipe,
        on_progress=progress,
    )
    staging = store.new_version_dir(number, requests[0].batch or "batch")
    final = staging.with_name(staging.name.lstrip("."))
    if staging.exists():
        shutil.rmtree(staging)
    weights = staging / WEIGHTS_NAME
    source = f"version {current.number}"
    saved = save_unlearned(result, weights, _forgetting(meta, scenario), source=source)
    certificate = None
    if config.audit:
        unlearned = LoadedModel(weights, result.model, saved)
        certificate, outputs = _audit(
            store, scenario, unlearned, recipe, torch_device, say, progress
        )
        _paths_in_store(certificate, store.root, {weights: final / WEIGHTS_NAME})
        atomic_write_json(staging / "certificate.json", certificate)
        # the audit ran every model over every split once: the evaluation reads those outputs
        metrics = protocol_metrics(
            outputs["unlearned"], task=scenario.task, reference=outputs["reference"], attacks=True
        )
    else:
        metrics = evaluate_model(
            result.model,
            ProblemLoaders(problem, saved.input_spec, device=batch_device(torch_device)),
            device=torch_device,
            attacks=True,
        )
    atomic_write_json(
        staging / "evaluation.json",
        {"version": number, "forget_sha256": problem.forget_sha256, "metrics": metrics},
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    version = Version(
        number=number,
        parent=current.number,
        weights=str((final / WEIGHTS_NAME).relative_to(store.root)),
        weights_sha256=saved.weights_sha256,
        forget_entries=entries,
        forget_images=len(problem.forget),
        forget_sha256=problem.forget_sha256,
        method=config.method,
        settings=dict(config.settings),
        seed=seed,
        metrics=json_safe({k: metrics[k] for k in KEY_METRICS if k in metrics}),
        verdict=None if certificate is None else certificate.get("verdict"),
        wall_s=result.wall_s,
    )
    return version, certificate


def _paths_in_store(certificate: dict[str, Any], root: Path, moved: dict[Path, Path]) -> None:
    """The certificate's model paths relative to the store (as published: ``moved`` maps the
    folder being written to the published one), so it names no server path nor a folder
    that no longer exists."""
    for record in certificate.get("models", {}).values():
        path = Path(record["path"])
        path = moved.get(path, path)
        if path.is_relative_to(root):
            record["path"] = path.relative_to(root).as_posix()


def _forgetting(meta: CheckpointMeta, scenario: Scenario) -> CheckpointMeta:
    """The current version's provenance with the accumulated forget set."""
    problem = scenario.problem
    return replace(
        meta, forget_sha256=problem.forget_sha256, forget_keys=tuple(problem.forget_keys)
    )


def _audit(
    store: Store,
    scenario: Scenario,
    unlearned: LoadedModel,
    recipe: TrainRecipe | None,
    device: torch.device,
    say: Callable[[str], None],
    progress: ProgressFn | None,
) -> tuple[dict[str, Any], dict[str, dict[str, SplitOutputs]]]:
    """The audit of the new version against the original and a model retrained without the
    accumulated forget set (trained once per forget set, cached in the store): the
    certificate and every model's outputs on every split."""
    from dlfd.audit.runner import AuditSettings, run_audit
    from dlfd.bench.references import reference_cache

    if recipe is None:
        raise ConfigError(
            "the original records no training recipe, so no reference can be retrained for "
            "the audit; create the store with --no-audit"
        )
    started = time.perf_counter()
    say("audit: training (or reusing) the retrained reference")

    def stage(name: str) -> ProgressFn | None:
        if progress is None:
            return None
        return lambda done, total, phase: progress(done, total, f"{name}: {phase}".rstrip(": "))

    trained = reference_cache(store.root).get(
        scenario,
        role="retrained",
        seed=store.config.seed,
        recipe=recipe,
        device=device,
        progress=stage("reference"),
    )
    models = {"unlearned": unlearned}
    for name, path in (("original", store.weights(0)), ("reference", trained.path)):
        models[name] = LoadedModel(path, *load_checkpoint(path, device=device))
    certificate, outputs = run_audit(
        scenario,
        models,
        device=device,
        settings=AuditSettings(seed=store.config.seed),
        progress=stage("audit"),
    )
    say(f"audit: {certificate['verdict']} ({time.perf_counter() - started:.0f}s)")
    return certificate, outputs
