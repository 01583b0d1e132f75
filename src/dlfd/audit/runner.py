"""Run the full audit of one unlearned model against the original and the retrained reference.

Everything is computed from one eval-mode pass of each model over the splits: the protocol's
metrics and gaps, several membership attacks (loss, entropy, SalUn's SVC attacks) with AUC and
TPR at 1% FPR, bootstrap intervals, per-person and per-image evidence, divergences to the
reference, and optionally a per-example reference-based attack (LiRA) that needs shadow models
trained with and without the forget set (``shadows`` per side; each is one full training run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlfd import __version__
from dlfd.audit.evidence import loss_exposure, most_exposed, per_person
from dlfd.checkpoint import CheckpointMeta, load_checkpoint
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import ConfigError
from dlfd.evaluation import split_outputs
from dlfd.losses import correct_predictions
from dlfd.metrics import (
    SplitOutputs,
    attacks_for_task,
    mia_interval,
    nomus_interval,
    output_js,
    output_kl,
    per_sample_loss,
    protocol_metrics,
)
from dlfd.metrics.attacks import AttackResult
from dlfd.metrics.lira import fit_lira, lira_compare, logit_confidence
from dlfd.metrics.uncertainty import bootstrap_interval
from dlfd.runtime import hardware_info, software_versions
from dlfd.scenarios import Scenario
from dlfd.training import TrainRecipe, train_checkpoint
from dlfd.training.runner import config_hash, training_config

CERTIFICATE_FORMAT = "dlfd-certificate/1"
MODELS = ("original", "unlearned", "reference")


@dataclass(frozen=True)
class AuditSettings:
    """What the audit computes and the rule of its verdicts.

    ``tolerance``: an attack passes when its accuracy on the unlearned model is at most its
    accuracy on the retrained reference plus this (see :func:`attack_verdict`; LiRA: when the
    share of forget images it flags as members exceeds the reference's share by at most this).
    """

    tolerance: float = 0.05
    n_boot: int = 200
    confidence_level: float = 0.95
    shadows: int = 0
    top_k: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")
        if self.shadows < 0 or self.top_k < 0 or self.n_boot < 10:
            raise ConfigError(f"invalid audit settings {self}")
        if not 0 < self.confidence_level < 1:
            raise ConfigError(f"confidence level must be in (0, 1), got {self.confidence_level}")


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    model: nn.Module
    meta: CheckpointMeta


def _summary(overall: str, failed: list[str], unsure: list[str], tolerance: float) -> str:
    """One line a person can read."""
    if overall == "pass":
        return (
            f"PASS: no attack finds the forget set more member-like on the unlearned model "
            f"than on the retrained reference (by more than {tolerance:g})"
        )
    if overall == "fail":
        return (
            f"FAIL: {', '.join(failed)} still find the forget set more member-like than on "
            f"the retrained reference (by more than {tolerance:g}, beyond the interval)"
        )
    return (
        f"INCONCLUSIVE: {', '.join(unsure)} are above the reference by more than "
        f"{tolerance:g} but within the bootstrap interval; more forget/unseen samples or "
        "seeds are needed to decide"
    )


def check_shadow_settings(settings: AuditSettings, task: str, shadow_dir: Path | None) -> None:
    """Refuse an impossible LiRA request before any work is done."""
    if settings.shadows == 0:
        return
    if task != "multiclass":
        raise ConfigError("the LiRA audit is defined for multi-class outputs; use --shadows 0")
    if settings.shadows < 2:
        raise ConfigError(
            "LiRA needs at least 2 shadow models per side (--shadows 2): the "
            "retrained reference is kept out of the fit as the control"
        )
    if shadow_dir is None:
        raise ConfigError("shadow models need a folder (shadow_dir)")


def train_shadows(
    scenario: Scenario,
    original: CheckpointMeta,
    count: int,
    shadow_dir: Path,
    device: torch.device,
) -> dict[str, list[Path]]:
    """``count`` shadow originals (trained on train) and retrains (retain only), with the
    original's recipe and new seeds. File names carry the training configuration's hash, so
    one folder can cache shadows of several scenarios; finished ones are reused."""
    recipe = TrainRecipe.from_dict(original.recipe) if original.recipe else scenario.recipe
    base = (original.train_seed or 0) + 1000
    paths: dict[str, list[Path]] = {"original": [], "retrained": []}
    for role in paths:
        for k in range(count):
            seed = base + k
            digest = config_hash(training_config(scenario, role, seed, recipe))[:12]
            out = shadow_dir / f"{role}-seed{seed}-{digest}.safetensors"
            train_checkpoint(
                scenario,
                role=role,
                out=out,
                seed=seed,  # type: ignore[arg-type]
                device=device,
                recipe=recipe,
            )
            paths[role].append(out)
    return paths


def _lira(
    loaders: ProblemLoaders,
    outputs: dict[str, dict[str, SplitOutputs]],
    shadow_paths: dict[str, list[Path]],
    device: torch.device,
) -> dict[str, Any]:
    """Per-example likelihood-ratio attack on the forget examples: in = original + shadow
    originals, out = shadow retrains; the unlearned model (target) is compared with the
    retrained reference (control), which is kept out of the fit."""

    def confidence(model_outputs: dict[str, SplitOutputs]) -> np.ndarray:
        return logit_confidence(model_outputs["forget"].logits, model_outputs["forget"].labels)

    conf: dict[str, list[np.ndarray]] = {"in": [confidence(outputs["original"])], "out": []}
    for side, role in (("in", "original"), ("out", "retrained")):
        for path in shadow_paths[role]:
            model, _ = load_checkpoint(path, device=device)
            conf[side].append(
                confidence(split_outputs(model, loaders, device=device, splits=("forget",)))
            )
    fit = fit_lira(np.stack(conf["in"]), np.stack(conf["out"]))
    result = lira_compare(confidence(outputs["unlearned"]), confidence(outputs["reference"]), fit)
    return {**result, "n_in": len(conf["in"]), "n_out": len(conf["out"])}


def _attack_interval(
    name: str, result: AttackResult, settings: AuditSettings
) -> tuple[float, float]:
    """Bootstrap interval of an attack's accuracy on the unlearned model (forget and unseen
    resampled independently). Entropy (like loss): the benchmark's cross-validated logistic
    regression is refitted per round; SVC: its fixed predictions are resampled."""
    kw = {"n_boot": settings.n_boot, "level": settings.confidence_level, "seed": settings.seed}
    if name in ("loss", "entropy"):
        # both attacks score = -feature; the interval refits the attack on the feature itself
        return mia_interval(-result.member_scores, -result.nonmember_scores, **kw)
    flagged_in = (result.member_scores > 0).astype(np.float64)
    flagged_out = (result.nonmember_scores > 0).astype(np.float64)
    return bootstrap_interval(
        lambda a, b: (a.mean() + 1.0 - b.mean()) / 2.0, flagged_in, flagged_out, **kw
    )


def attack_verdict(
    accuracy: float, interval: tuple[float, float], reference: float, tolerance: float
) -> str:
    """One-sided: only remembering *more* than the retrained model counts against unlearning.

    pass: accuracy <= reference + tolerance; fail: even the interval's low end is above it;
    inconclusive: the point is above but the interval reaches it (too few samples to tell).
    """
    limit = reference + tolerance
    if accuracy <= limit:
        return "pass"
    return "fail" if interval[0] > limit else "inconclusive"


def run_audit(
    scenario: Scenario,
    models: dict[str, LoadedModel],
    *,
    device: torch.device,
    settings: AuditSettings,
    shadow_dir: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], dict[str, dict[str, SplitOutputs]]]:
    """The certificate (JSON-ready dict) and the raw outputs (for the plots)."""
    missing = set(MODELS) - set(models)
    if missing:
        raise ConfigError(f"the audit needs the {', '.join(sorted(missing))} model(s)")
    check_shadow_settings(settings, scenario.task, shadow_dir)
    specs = {name: m.meta.input_spec for name, m in models.items()}
    if len(set(specs.values())) != 1:
        raise ConfigError(f"the three models expect different inputs: {specs}")
    started = time.perf_counter()
    task = scenario.task
    problem = scenario.problem
    loaders = ProblemLoaders(problem, specs["unlearned"])
    log("running the three models over every split")
    outputs = {name: split_outputs(m.model, loaders, device=device) for name, m in models.items()}

    protocol = {
        name: protocol_metrics(outputs[name], task=task, reference=outputs["reference"])
        for name in MODELS
    }
    losses = {
        name: {s: per_sample_loss(o.logits, o.labels, task) for s, o in outputs[name].items()}
        for name in MODELS
    }
    log(f"bootstrap intervals ({settings.n_boot} rounds per model)")
    kw = {"n_boot": settings.n_boot, "level": settings.confidence_level, "seed": settings.seed}
    intervals = {}
    for name in MODELS:
        forget, unseen = losses[name]["forget"], losses[name]["unseen"]
        test = outputs[name]["test"]
        correct = correct_predictions(test.logits, test.labels, task).numpy()
        intervals[name] = {
            "mia_acc": list(mia_interval(forget, unseen, **kw)),
            "nomus": list(nomus_interval(correct, forget, unseen, **kw)),
        }
    log("membership attacks: loss, entropy, SVC (multi-class); loss only (multi-label)")
    per_model = {name: attacks_for_task(outputs[name], task) for name in MODELS}
    attacks: dict[str, dict[str, Any]] = {}
    for attack, result in per_model["unlearned"].items():
        summaries = {name: per_model[name][attack].summary() for name in MODELS}
        # the loss attack is the protocol's mia_acc, whose interval is already computed
        interval = (
            tuple(intervals["unlearned"]["mia_acc"])
            if attack == "loss"
            else _attack_interval(attack, result, settings)
        )
        reference = summaries["reference"]["accuracy"]
        attacks[attack] = {
            **summaries,
            "unlearned_interval": list(interval),
            "excess_over_reference": summaries["unlearned"]["accuracy"] - reference,
            "verdict": attack_verdict(
                summaries["unlearned"]["accuracy"], interval, reference, settings.tolerance
            ),
        }
    lira = None
    if settings.shadows > 0:
        assert shadow_dir is not None  # checked above
        log(f"LiRA: training/reusing {settings.shadows} shadow model(s) per side in {shadow_dir}")
        shadow_paths = train_shadows(
            scenario, models["original"].meta, settings.shadows, shadow_dir, device
        )
        lira = _lira(loaders, outputs, shadow_paths, device)
        lira["verdict"] = "pass" if lira["excess"] <= settings.tolerance else "fail"

    forget_idx = problem.forget
    keys = [problem.records.paths[i] for i in forget_idx]
    people = [problem.records.identities[i] for i in forget_idx]
    scores = {
        name: loss_exposure(losses[name]["forget"], losses[name]["unseen"]) for name in MODELS
    }
    divergence = {
        f"{kind}_{split}": measure(
            outputs["reference"][split].logits, outputs["unlearned"][split].logits, task
        )
        for kind, measure in (("kl", output_kl), ("js", output_js))
        for split in ("forget", "test")
    }
    divergence["avg_gap"] = protocol["unlearned"].get("avg_gap", float("nan"))
    verdicts = {name: a["verdict"] for name, a in attacks.items()}
    if lira:
        verdicts["lira"] = lira["verdict"]
    failed = [name for name, v in verdicts.items() if v == "fail"]
    unsure = [name for name, v in verdicts.items() if v == "inconclusive"]
    overall = "fail" if failed else "inconclusive" if unsure else "pass"
    certificate = {
        "format": CERTIFICATE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dlfd_version": __version__,
        "versions": software_versions(),
        "hardware": hardware_info(),
        "scenario": {
            "name": scenario.name,
            "options": dict(scenario.options),
            "split_seed": problem.split_seed,
            "level": problem.level,
            "forget_sha256": problem.forget_sha256,
            "data_sha256": problem.records.fingerprint,
            "sizes": problem.sizes(),
            "forgotten_people": problem.forget_identities(),
        },
        "models": {
            name: {
                "path": str(m.path),
                "role": m.meta.role,
                "weights_sha256": m.meta.weights_sha256,
                "forget_sha256": m.meta.forget_sha256,
            }
            for name, m in models.items()
        },
        "settings": asdict(settings),
        "protocol": protocol,
        "intervals": intervals,
        "attacks": attacks,
        "lira": lira,
        "divergence_to_reference": divergence,
        "people": [asdict(p) for p in per_person(people, scores, keys)],
        "most_exposed": most_exposed(keys, people, scores["unlearned"], settings.top_k),
        "verdict": overall,
        "summary": _summary(overall, failed, unsure, settings.tolerance),
        "audit_s": time.perf_counter() - started,
    }
    return certificate, outputs


def load_models(paths: dict[str, Path], device: torch.device) -> dict[str, LoadedModel]:
    """Load the three checkpoints (never unpickling) on ``device``."""
    return {
        name: LoadedModel(path, *load_checkpoint(path, device=device))
        for name, path in paths.items()
    }
