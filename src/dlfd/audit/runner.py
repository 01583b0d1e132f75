"""Run the full audit of one unlearned model against the original and the retrained reference.

Everything is computed from one eval-mode pass of each model over the splits: the protocol's
metrics and gaps, several membership attacks (loss, entropy, SalUn's SVC attacks) with AUC and
TPR at 1% FPR, bootstrap intervals, per-person and per-image evidence, divergences to the
reference, and optionally a per-example reference-based attack (LiRA) that needs shadow models
trained with and without the forget set (``shadows`` per side; each is one full training run).

The attacks that decide the verdicts run on the *label-matched* subsample of forget and unseen
(:func:`~dlfd.metrics.matching.matched_indices`: equal counts per class, the same samples for
the three models), so they cannot score the class mix instead of membership; the unmatched
(published) numbers are kept next to them. A utility verdict (retain and test accuracy of the
unlearned model against the reference) joins the forgetting verdict: the audit passes only when
both pass (:func:`combine_verdicts`).
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
from dlfd.metrics.matching import MATCH_SEED, label_shift, matched_indices
from dlfd.metrics.uncertainty import bootstrap_interval
from dlfd.runtime import hardware_info, software_versions
from dlfd.scenarios import Scenario
from dlfd.training import TrainRecipe, train_checkpoint
from dlfd.training.runner import config_hash, training_config

CERTIFICATE_FORMAT = "dlfd-certificate/1"
MODELS = ("original", "unlearned", "reference")
#: The verdicts, from best to worst.
VERDICTS = ("pass", "inconclusive", "fail")
#: The accuracies the utility verdict compares (protocol metric key -> split).
UTILITY_SPLITS = {"retain_acc": "retain", "test_acc": "test"}


@dataclass(frozen=True)
class AuditSettings:
    """What the audit computes and the rule of its verdicts.

    ``tolerance``: an attack passes when its accuracy on the unlearned model is at most its
    accuracy on the retrained reference plus this (see :func:`attack_verdict`; LiRA: when the
    share of forget images it flags as members exceeds the reference's share by at most this).
    ``utility_tolerance``: retain and test accuracy pass when the unlearned model's is at most
    this (absolute accuracy) below the reference's (see :func:`utility_verdict`).
    """

    tolerance: float = 0.05
    n_boot: int = 200
    confidence_level: float = 0.95
    shadows: int = 0
    top_k: int = 10
    seed: int = 0
    utility_tolerance: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 0.5:
            raise ConfigError(f"tolerance must be in (0, 0.5), got {self.tolerance}")
        if not 0 <= self.utility_tolerance <= 1:
            raise ConfigError(f"utility tolerance must be in [0, 1], got {self.utility_tolerance}")
        if self.shadows < 0 or self.top_k < 0 or self.n_boot < 10:
            raise ConfigError(f"invalid audit settings {self}")
        if not 0 < self.confidence_level < 1:
            raise ConfigError(f"confidence level must be in (0, 1), got {self.confidence_level}")


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    model: nn.Module
    meta: CheckpointMeta


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "-"


def _forgetting_clause(
    verdict: str, failed: list[str], unsure: list[str], tolerance: float, reason: str | None
) -> str:
    """What the membership attacks (and LiRA) found, in words."""
    if verdict == "pass":
        return (
            "no attack finds the forget set more member-like on the unlearned model than on "
            f"the retrained reference (by more than {tolerance:g})"
        )
    if verdict == "fail":
        return (
            f"{_names(failed)} still find the forget set more member-like than on the "
            f"retrained reference (by more than {tolerance:g}, beyond the interval)"
        )
    clauses = []
    if reason is not None:
        clauses.append(f"the label-matched attacks cannot judge membership ({reason})")
    others = [name for name in unsure if reason is None or name == "lira"]
    if others:
        clauses.append(
            f"{_names(others)} are above the reference by more than {tolerance:g} but within "
            "the bootstrap interval (more forget/unseen samples or seeds are needed)"
        )
    return "; ".join(clauses)


def _utility_clause(utility: dict[str, Any]) -> str:
    """What the accuracy comparison found, in words."""
    tolerance = utility["tolerance"]
    worse = {
        v: [key for key in UTILITY_SPLITS if utility[key]["verdict"] == v]
        for v in ("fail", "inconclusive")
    }
    if utility["verdict"] == "pass":
        return f"retain and test accuracy are at most {tolerance:g} below the reference's"
    clauses = []
    if worse["fail"]:
        clauses.append(
            f"{_names(worse['fail'])} below the reference's by more than {tolerance:g} "
            "(beyond the interval)"
        )
    if worse["inconclusive"]:
        clauses.append(
            f"{_names(worse['inconclusive'])} below the reference's by more than "
            f"{tolerance:g} but within the interval"
        )
    return "; ".join(clauses)


def _summary(
    overall: str,
    forgetting: tuple[str, list[str], list[str], str | None],
    utility: dict[str, Any],
    tolerance: float,
) -> str:
    """One line a person can read: the overall verdict, then forgetting and utility.

    ``forgetting`` is (verdict, failed attacks, inconclusive attacks, reason the matched
    attacks could not be run or None).
    """
    verdict, failed, unsure, reason = forgetting
    return (
        f"{overall.upper()}: forgetting {verdict} ("
        f"{_forgetting_clause(verdict, failed, unsure, tolerance, reason)}); utility "
        f"{utility['verdict']} ({_utility_clause(utility)})"
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


def one_sided_verdict(excess: float, interval: tuple[float, float], tolerance: float) -> str:
    """The one rule of every verdict of the audit; only doing *worse* than the retrained
    reference counts against the unlearned model.

    ``excess`` is how much worse the unlearned model is than the reference (attacks: its attack
    accuracy minus the reference's; utility: the reference's accuracy minus its own) and
    ``interval`` the bootstrap interval of that excess. pass: ``excess <= tolerance``; fail:
    even the interval's low end is above the tolerance; inconclusive: the point is above but
    the interval reaches it (too few samples to tell).
    """
    if excess <= tolerance:
        return "pass"
    return "fail" if interval[0] > tolerance else "inconclusive"


def attack_verdict(
    accuracy: float, interval: tuple[float, float], reference: float, tolerance: float
) -> str:
    """:func:`one_sided_verdict` of an attack: the excess is the unlearned model's accuracy
    (``interval`` is its interval; the reference's accuracy is taken as fixed) over the
    reference's. pass: accuracy <= reference + tolerance; fail: even the interval's low end is
    above that; inconclusive: the point is above but the interval reaches it.
    """
    return one_sided_verdict(
        accuracy - reference, (interval[0] - reference, interval[1] - reference), tolerance
    )


def utility_verdict(difference: float, interval: tuple[float, float], tolerance: float) -> str:
    """:func:`one_sided_verdict` of an accuracy: ``difference`` is unlearned minus reference
    accuracy and ``interval`` its bootstrap interval. pass: the unlearned model is at most
    ``tolerance`` below the reference (or above it); fail: even the interval's high end is
    more than ``tolerance`` below; inconclusive: the point is, the interval is not."""
    return one_sided_verdict(-difference, (-interval[1], -interval[0]), tolerance)


def combine_verdicts(*verdicts: str) -> str:
    """fail if any verdict fails, else inconclusive if any is (or if there is none), else
    pass: the forgetting verdict combines the attacks (and LiRA), the overall verdict combines
    forgetting and utility."""
    unknown = [v for v in verdicts if v not in VERDICTS]
    if unknown:
        raise ConfigError(f"unknown verdict(s) {unknown}; expected among {list(VERDICTS)}")
    if not verdicts:
        return "inconclusive"
    return max(verdicts, key=VERDICTS.index)


def _matched_outputs(
    outputs: dict[str, SplitOutputs], forget_idx: np.ndarray, unseen_idx: np.ndarray
) -> dict[str, SplitOutputs]:
    """A model's outputs with forget and unseen cut to the label-matched samples."""
    matched = dict(outputs)
    for split, idx in (("forget", forget_idx), ("unseen", unseen_idx)):
        pick = torch.as_tensor(idx, dtype=torch.long)
        matched[split] = SplitOutputs(outputs[split].logits[pick], outputs[split].labels[pick])
    return matched


def matched_attacks(
    outputs: dict[str, dict[str, SplitOutputs]], task: str
) -> tuple[dict[str, dict[str, AttackResult]] | None, dict[str, Any]]:
    """Every attack of ``task`` on the label-matched forget/unseen subsample, per model (the same
    samples for all), and the ``matching`` record: samples per side, seed, and the reason the
    attacks could not be run (then None instead of results: sides without a class in common,
    or too few matched samples for the attack's 10 folds)."""
    forget, unseen = outputs["unlearned"]["forget"], outputs["unlearned"]["unseen"]
    forget_idx, unseen_idx = matched_indices(forget.labels, unseen.labels, task, seed=MATCH_SEED)
    record: dict[str, Any] = {
        "per_side": int(forget_idx.size),
        "forget": len(forget),
        "unseen": len(unseen),
        "seed": MATCH_SEED,
        "reason": None,
    }
    if forget_idx.size == 0:
        record["reason"] = "forget and unseen samples share no class"
        return None, record
    try:
        results = {
            name: attacks_for_task(_matched_outputs(outputs[name], forget_idx, unseen_idx), task)
            for name in MODELS
        }
    except ConfigError as exc:
        record["reason"] = f"too few matched samples ({exc})"
        return None, record
    return results, record


def _accuracy_comparison(
    outputs: dict[str, dict[str, SplitOutputs]],
    protocol: dict[str, dict[str, float]],
    task: str,
    settings: AuditSettings,
) -> dict[str, Any]:
    """The ``utility`` section: retain and test accuracy of the unlearned model against the
    reference, each with the percentile bootstrap interval of the difference (unlearned minus
    reference; the samples are resampled, both models' predictions on a sample stay paired)
    and its :func:`utility_verdict`; ``verdict`` combines the two."""
    kw = {"n_boot": settings.n_boot, "level": settings.confidence_level, "seed": settings.seed}
    utility: dict[str, Any] = {"tolerance": settings.utility_tolerance}
    for key, split in UTILITY_SPLITS.items():
        unlearned, reference = outputs["unlearned"][split], outputs["reference"][split]
        paired = (
            correct_predictions(unlearned.logits, unlearned.labels, task)
            - correct_predictions(reference.logits, reference.labels, task)
        ).numpy()
        difference = float(paired.mean())
        interval = bootstrap_interval(lambda d: d.mean(), paired, **kw)
        utility[key] = {
            "original": protocol["original"][key],
            "unlearned": protocol["unlearned"][key],
            "reference": protocol["reference"][key],
            "difference": difference,
            "difference_interval": list(interval),
            "verdict": utility_verdict(difference, interval, settings.utility_tolerance),
        }
    utility["verdict"] = combine_verdicts(*(utility[key]["verdict"] for key in UTILITY_SPLITS))
    return utility


def _attack_entries(
    published: dict[str, dict[str, AttackResult]],
    matched: dict[str, dict[str, AttackResult]] | None,
    matching: dict[str, Any],
    settings: AuditSettings,
) -> dict[str, dict[str, Any]]:
    """Per attack: the matched numbers of the three models, the unlearned model's interval,
    its excess over the reference and the verdict; ``published`` holds the unmatched numbers.
    Without matched results every number is None and the verdict inconclusive, with the
    reason."""
    attacks: dict[str, dict[str, Any]] = {}
    for attack in published["unlearned"]:
        entry: dict[str, Any]
        if matched is None:
            entry = {
                **dict.fromkeys(MODELS),
                "unlearned_interval": None,
                "excess_over_reference": None,
                "verdict": "inconclusive",
                "reason": matching["reason"],
            }
        else:
            result = matched["unlearned"][attack]
            summaries = {name: matched[name][attack].summary() for name in MODELS}
            interval = _attack_interval(attack, result, settings)
            reference = summaries["reference"]["accuracy"]
            entry = {
                **summaries,
                "unlearned_interval": list(interval),
                "excess_over_reference": summaries["unlearned"]["accuracy"] - reference,
                "verdict": attack_verdict(
                    summaries["unlearned"]["accuracy"], interval, reference, settings.tolerance
                ),
                "reason": None,
            }
        entry["per_side"] = matching["per_side"]
        entry["published"] = {name: published[name][attack].summary() for name in MODELS}
        attacks[attack] = entry
    return attacks


def run_audit(
    scenario: Scenario,
    models: dict[str, LoadedModel],
    *,
    device: torch.device,
    settings: AuditSettings,
    shadow_dir: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, Any], dict[str, dict[str, SplitOutputs]]]:
    """The certificate (JSON-ready dict) and the raw outputs (for the plots).

    ``attacks[name]`` holds each model's numbers on the label-matched subsample (since the
    matched audit; before, on all of forget and unseen), the unlearned model's interval, its
    excess over the reference and the verdict, plus ``per_side`` and ``reason`` (why there are
    no numbers, else None); ``attacks[name]["published"]`` the unmatched numbers, comparable
    with papers. ``protocol`` and ``intervals`` keep the published (unmatched) ``mia_acc`` and
    NoMUS. ``matching``, ``label_shift``, ``utility`` and ``verdicts`` (forgetting, utility)
    are described in docs/audit.md; ``verdict`` combines forgetting and utility.
    """
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
    shift = label_shift(
        outputs["unlearned"]["forget"].labels,
        outputs["unlearned"]["unseen"].labels,
        task,
        list(problem.records.class_names),
    )
    log("membership attacks: loss, entropy, SVC (multi-class); loss only (multi-label)")
    published = {name: attacks_for_task(outputs[name], task) for name in MODELS}
    matched, matching = matched_attacks(outputs, task)
    log(
        f"label-matched attacks: {matching['per_side']} forget and unseen samples per side"
        + (f" ({matching['reason']})" if matching["reason"] else "")
    )
    attacks = _attack_entries(published, matched, matching, settings)
    lira = None
    if settings.shadows > 0:
        assert shadow_dir is not None  # checked above
        log(f"LiRA: training/reusing {settings.shadows} shadow model(s) per side in {shadow_dir}")
        shadow_paths = train_shadows(
            scenario, models["original"].meta, settings.shadows, shadow_dir, device
        )
        lira = _lira(loaders, outputs, shadow_paths, device)
        lira["verdict"] = "pass" if lira["excess"] <= settings.tolerance else "fail"
    utility = _accuracy_comparison(outputs, protocol, task, settings)

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
    forgetting = combine_verdicts(*verdicts.values())
    overall = combine_verdicts(forgetting, utility["verdict"])
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
        "label_shift": {**shift.to_dict(), "warning": shift.warning()},
        "matching": matching,
        "attacks": attacks,
        "lira": lira,
        "utility": utility,
        "divergence_to_reference": divergence,
        "people": [asdict(p) for p in per_person(people, scores, keys)],
        "most_exposed": most_exposed(keys, people, scores["unlearned"], settings.top_k),
        "verdicts": {"forgetting": forgetting, "utility": utility["verdict"]},
        "verdict": overall,
        "summary": _summary(
            overall,
            (forgetting, failed, unsure, matching["reason"]),
            utility,
            settings.tolerance,
        ),
        "audit_s": time.perf_counter() - started,
    }
    return certificate, outputs


def load_models(paths: dict[str, Path], device: torch.device) -> dict[str, LoadedModel]:
    """Load the three checkpoints (never unpickling) on ``device``."""
    return {
        name: LoadedModel(path, *load_checkpoint(path, device=device))
        for name, path in paths.items()
    }
