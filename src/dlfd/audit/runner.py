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

import itertools
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
from dlfd.data.loaders import ProblemLoaders, batch_device
from dlfd.errors import CheckpointError, ConfigError
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
from dlfd.models.user_factory import is_user_arch
from dlfd.recipe import TrainRecipe
from dlfd.runs.cache import ModelCache
from dlfd.runs.records import checkpoint_record, data_hashes, run_record
from dlfd.runs.scenario import checkpoint_fit
from dlfd.scenarios import Scenario
from dlfd.training.loop import ProgressFn

CERTIFICATE_FORMAT = "dlfd-certificate/1"
MODELS = ("original", "unlearned", "reference")
#: The verdicts, from best to worst.
VERDICTS = ("pass", "inconclusive", "fail")
#: The accuracies the utility verdict compares (protocol metric key -> split).
UTILITY_SPLITS = {"retain_acc": "retain", "test_acc": "test"}
#: What the certificate records of each model.
MODEL_RECORD_KEYS = ("path", "role", "weights_sha256", "forget_sha256")


@dataclass(frozen=True)
class AuditSettings:
    """What the audit computes and the rule of its verdicts. ``tolerance``: an attack passes
    when its accuracy on the unlearned model is at most the reference's plus this (see
    :func:`attack_verdict`; LiRA: when the share of forget images it flags as members exceeds
    the reference's share by at most this). ``utility_tolerance``: retain and test accuracy
    pass when the unlearned model's is at most this (absolute) below the reference's."""

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

    @property
    def bootstrap(self) -> dict[str, Any]:
        """The keywords of every bootstrap interval of the audit."""
        return {"n_boot": self.n_boot, "level": self.confidence_level, "seed": self.seed}


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    model: nn.Module
    meta: CheckpointMeta


def _summary(
    overall: str,
    verdict: str,
    verdicts: dict[str, str],
    reason: str | None,
    utility: dict[str, Any],
    tolerance: float,
) -> str:
    """One line a person can read: the overall verdict, then what the membership attacks (and
    LiRA: ``verdicts``, combined into ``verdict``; ``reason``: why the matched attacks could not
    be run, or None) and the accuracy comparison found."""
    failed = [name for name, v in verdicts.items() if v == "fail"]
    unsure = [name for name, v in verdicts.items() if v == "inconclusive"]
    beyond = f"by more than {tolerance:g}"
    if verdict == "pass":
        found = (
            "no attack finds the forget set more member-like on the unlearned model than on "
            f"the retrained reference ({beyond})"
        )
    elif verdict == "fail":
        found = (
            f"{', '.join(failed)} still find the forget set more member-like than on the "
            f"retrained reference ({beyond}, beyond the interval)"
        )
    else:
        clauses = []
        if reason is not None:
            clauses.append(f"the label-matched attacks cannot judge membership ({reason})")
        others = [name for name in unsure if reason is None or name == "lira"]
        if others:
            clauses.append(
                f"{', '.join(others)} are above the reference {beyond} but within the bootstrap "
                "interval (more forget/unseen samples or seeds are needed)"
            )
        found = "; ".join(clauses)
    tol = utility["tolerance"]
    kept = f"retain and test accuracy are at most {tol:g} below the reference's"
    if utility["verdict"] != "pass":
        kept = "; ".join(
            f"{', '.join(keys)} below the reference's by more than {tol:g} {how}"
            for v, how in (
                ("fail", "(beyond the interval)"),
                ("inconclusive", "but within the interval"),
            )
            if (keys := [key for key in UTILITY_SPLITS if utility[key]["verdict"] == v])
        )
    return (
        f"{overall.upper()}: forgetting {verdict} ({found}); utility {utility['verdict']} ({kept})"
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
    scenario: Scenario, original: CheckpointMeta, count: int, shadow_dir: Path, device: torch.device
) -> dict[str, list[Path]]:
    """``count`` shadow originals (trained on train) and retrains (retain only), with the
    original's recipe and new seeds; cached by configuration hash, so finished ones are reused
    and one folder serves several scenarios."""
    if is_user_arch(original.arch) and not original.recipe:
        raise ConfigError(
            f"LiRA shadows are trained with the original's recipe, and {original.arch} was "
            "imported without one (trained outside dlfd); use --shadows 0"
        )
    recipe = TrainRecipe.from_dict(original.recipe) if original.recipe else scenario.recipe
    base = (original.train_seed or 0) + 1000
    cache = ModelCache(shadow_dir, "{role}-seed{seed}-{digest:.12}", lock=False)
    return {
        role: [
            cache.get(scenario, role=role, seed=base + k, recipe=recipe, device=device).path
            for k in range(count)
        ]
        for role in ("original", "retrained")
    }


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

    def shadows(role: str) -> list[np.ndarray]:
        models = (load_checkpoint(path, device=device)[0] for path in shadow_paths[role])
        return [
            confidence(split_outputs(m, loaders, device=device, splits=("forget",))) for m in models
        ]

    conf_in = [confidence(outputs["original"]), *shadows("original")]
    conf_out = shadows("retrained")
    fit = fit_lira(np.stack(conf_in), np.stack(conf_out))
    result = lira_compare(confidence(outputs["unlearned"]), confidence(outputs["reference"]), fit)
    return {**result, "n_in": len(conf_in), "n_out": len(conf_out)}


def _round_counter(progress: ProgressFn | None, total: int) -> Callable[[], None] | None:
    """A callback for every bootstrap round, reporting ``(done, total, "bootstrap")``."""
    if progress is None:
        return None
    rounds = itertools.count(1)
    return lambda: progress(next(rounds), total, "bootstrap")


def _attack_interval(name: str, result: AttackResult, kw: dict[str, Any]) -> tuple[float, float]:
    """Bootstrap interval of an attack's accuracy on the unlearned model (forget and unseen
    resampled independently). Entropy (like loss): the benchmark's cross-validated logistic
    regression is refitted per round; SVC: its fixed predictions are resampled."""
    if name in ("loss", "entropy"):
        # both attacks score = -feature; the interval refits the attack on the feature itself
        return mia_interval(-result.member_scores, -result.nonmember_scores, **kw)
    flagged_in = (result.member_scores > 0).astype(np.float64)
    flagged_out = (result.nonmember_scores > 0).astype(np.float64)
    return bootstrap_interval(
        lambda a, b: (a.mean() + 1.0 - b.mean()) / 2.0, flagged_in, flagged_out, **kw
    )


def one_sided_verdict(excess: float, interval: tuple[float, float], tolerance: float) -> str:
    """The one rule of every verdict of the audit: only doing *worse* than the retrained
    reference counts. ``excess``: how much worse the unlearned model is (attacks: its accuracy
    minus the reference's; utility: the reference's accuracy minus its own); ``interval``: its
    bootstrap interval. pass: ``excess <= tolerance``; fail: even the interval's low end is
    above; inconclusive: the point is above but the interval reaches it (too few samples)."""
    if excess <= tolerance:
        return "pass"
    return "fail" if interval[0] > tolerance else "inconclusive"


def attack_verdict(
    accuracy: float, interval: tuple[float, float], reference: float, tolerance: float
) -> str:
    """:func:`one_sided_verdict` of an attack's accuracy (``interval``: its interval) over the
    reference's (taken as fixed)."""
    return one_sided_verdict(
        accuracy - reference, (interval[0] - reference, interval[1] - reference), tolerance
    )


def utility_verdict(difference: float, interval: tuple[float, float], tolerance: float) -> str:
    """:func:`one_sided_verdict` of an accuracy: ``difference`` is unlearned minus reference
    accuracy and ``interval`` its bootstrap interval (the excess is its negation)."""
    return one_sided_verdict(-difference, (-interval[1], -interval[0]), tolerance)


def combine_verdicts(*verdicts: str) -> str:
    """fail if any verdict fails, else inconclusive if any is (or if there is none), else pass."""
    unknown = [v for v in verdicts if v not in VERDICTS]
    if unknown:
        raise ConfigError(f"unknown verdict(s) {unknown}; expected among {list(VERDICTS)}")
    if not verdicts:
        return "inconclusive"
    return max(verdicts, key=VERDICTS.index)


def _matched_outputs(
    outputs: dict[str, SplitOutputs], forget_idx: np.ndarray, unseen_idx: np.ndarray
) -> dict[str, SplitOutputs]:
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
        return {
            name: attacks_for_task(_matched_outputs(outputs[name], forget_idx, unseen_idx), task)
            for name in MODELS
        }, record
    except ConfigError as exc:
        record["reason"] = f"too few matched samples ({exc})"
        return None, record


def _accuracy_comparison(
    outputs: dict[str, dict[str, SplitOutputs]],
    protocol: dict[str, dict[str, float]],
    task: str,
    settings: AuditSettings,
    kw: dict[str, Any],
) -> dict[str, Any]:
    """The ``utility`` section: retain and test accuracy of the unlearned model against the
    reference, each with the bootstrap interval of the difference (samples resampled, both
    models' predictions on a sample stay paired) and its :func:`utility_verdict`."""
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
            **{name: protocol[name][key] for name in MODELS},
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
    kw: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per attack: the matched numbers of the three models, the unlearned model's interval, its
    excess over the reference and the verdict (without matched results: None and inconclusive,
    with the reason); ``published`` holds the unmatched numbers."""
    attacks: dict[str, dict[str, Any]] = {}
    for attack in published["unlearned"]:
        entry: dict[str, Any] = {**dict.fromkeys(MODELS), "unlearned_interval": None,
                                 "excess_over_reference": None, "verdict": "inconclusive",
                                 "reason": matching["reason"]}  # fmt: skip
        if matched is not None:
            entry.update({name: matched[name][attack].summary() for name in MODELS})
            interval = _attack_interval(attack, matched["unlearned"][attack], kw)
            accuracy, reference = entry["unlearned"]["accuracy"], entry["reference"]["accuracy"]
            entry.update(
                unlearned_interval=list(interval),
                excess_over_reference=accuracy - reference,
                verdict=attack_verdict(accuracy, interval, reference, settings.tolerance),
                reason=None,
            )
        entry["per_side"] = matching["per_side"]
        entry["published"] = {name: published[name][attack].summary() for name in MODELS}
        attacks[attack] = entry
    return attacks


def assess_outputs(
    outputs: dict[str, dict[str, SplitOutputs]],
    task: str,
    settings: AuditSettings,
    *,
    class_names: list[str] | None = None,
    lira: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda message: None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The certificate's sections concluded from ``outputs[model][split]`` (forget, unseen, test
    and retain; ``lira``: given, it needs shadow models), plus ``losses`` (per model and split,
    for the per-person evidence). ``progress`` follows the bootstrap rounds, the long part."""
    protocol = {
        name: protocol_metrics(outputs[name], task=task, reference=outputs["reference"])
        for name in MODELS
    }
    losses = {
        name: {s: per_sample_loss(o.logits, o.labels, task) for s, o in outputs[name].items()}
        for name in MODELS
    }
    log("membership attacks: loss, entropy, SVC (multi-class); loss only (multi-label)")
    published = {name: attacks_for_task(outputs[name], task) for name in MODELS}
    matched, matching = matched_attacks(outputs, task)
    log(
        f"label-matched attacks: {matching['per_side']} forget and unseen samples per side"
        + (f" ({matching['reason']})" if matching["reason"] else "")
    )
    intervals_wanted = (
        2 * len(MODELS) + len(UTILITY_SPLITS) + (matched is not None) * len(published["unlearned"])
    )
    kw = {
        **settings.bootstrap,
        "on_round": _round_counter(progress, intervals_wanted * settings.n_boot),
    }
    log(f"bootstrap intervals ({settings.n_boot} rounds each)")
    intervals = {}
    for name in MODELS:
        forget, unseen = losses[name]["forget"], losses[name]["unseen"]
        test = outputs[name]["test"]
        correct = correct_predictions(test.logits, test.labels, task).numpy()
        intervals[name] = {
            "mia_acc": list(mia_interval(forget, unseen, **kw)),
            "nomus": list(nomus_interval(correct, forget, unseen, **kw)),
        }
    unlearned = outputs["unlearned"]
    names = class_names or [str(c) for c in range(unlearned["test"].logits.shape[1])]
    shift = label_shift(unlearned["forget"].labels, unlearned["unseen"].labels, task, names)
    attacks = _attack_entries(published, matched, matching, settings, kw)
    utility = _accuracy_comparison(outputs, protocol, task, settings, kw)
    divergence = {
        f"{kind}_{split}": measure(
            outputs["reference"][split].logits, unlearned[split].logits, task
        )
        for kind, measure in (("kl", output_kl), ("js", output_js))
        for split in ("forget", "test")
    }
    divergence["avg_gap"] = protocol["unlearned"].get("avg_gap", float("nan"))
    verdicts = {name: a["verdict"] for name, a in attacks.items()}
    if lira:
        lira["verdict"] = "pass" if lira["excess"] <= settings.tolerance else "fail"
        verdicts["lira"] = lira["verdict"]
    forgetting = combine_verdicts(*verdicts.values())
    overall = combine_verdicts(forgetting, utility["verdict"])
    return {
        "protocol": protocol,
        "intervals": intervals,
        "label_shift": {**shift.to_dict(), "warning": shift.warning()},
        "matching": matching,
        "attacks": attacks,
        "lira": lira,
        "utility": utility,
        "divergence_to_reference": divergence,
        "verdicts": {"forgetting": forgetting, "utility": utility["verdict"]},
        "verdict": overall,
        "summary": _summary(
            overall, forgetting, verdicts, matching["reason"], utility, settings.tolerance
        ),
        "losses": losses,
    }


def run_audit(
    scenario: Scenario,
    models: dict[str, LoadedModel],
    *,
    device: torch.device,
    settings: AuditSettings,
    shadow_dir: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, SplitOutputs]]]:
    """The certificate (JSON-ready dict; its sections: :func:`assess_outputs` and
    docs/audit.md) and the raw outputs (for the plots). ``attacks[name]["published"]``,
    ``protocol`` and ``intervals`` keep the unmatched numbers, comparable with papers (before
    the matched audit, ``attacks`` held those)."""
    missing = set(MODELS) - set(models)
    if missing:
        raise ConfigError(f"the audit needs the {', '.join(sorted(missing))} model(s)")
    check_shadow_settings(settings, scenario.task, shadow_dir)
    specs = {name: m.meta.input_spec for name, m in models.items()}
    if len(set(specs.values())) != 1:
        raise ConfigError(f"the three models expect different inputs: {specs}")
    started = time.perf_counter()
    problem = scenario.problem
    loaders = ProblemLoaders(problem, specs["unlearned"], device=batch_device(device))
    log("running the three models over every split")
    outputs = {name: split_outputs(m.model, loaders, device=device) for name, m in models.items()}
    lira = None
    if settings.shadows > 0:
        assert shadow_dir is not None  # checked above
        log(f"LiRA: training/reusing {settings.shadows} shadow model(s) per side in {shadow_dir}")
        shadow_paths = train_shadows(
            scenario, models["original"].meta, settings.shadows, shadow_dir, device
        )
        lira = _lira(loaders, outputs, shadow_paths, device)
    found = assess_outputs(
        outputs,
        scenario.task,
        settings,
        class_names=list(problem.records.class_names),
        lira=lira,
        log=log,
        progress=progress,
    )
    losses = found.pop("losses")
    forget_idx = problem.forget
    keys = [problem.records.paths[i] for i in forget_idx]
    people = [problem.records.identities[i] for i in forget_idx]
    scores = {
        name: loss_exposure(losses[name]["forget"], losses[name]["unseen"]) for name in MODELS
    }
    conclusions = {k: found.pop(k) for k in ("verdicts", "verdict", "summary")}
    certificate = run_record(
        CERTIFICATE_FORMAT,
        dlfd_version=__version__,
        scenario={
            "name": scenario.name,
            "options": dict(scenario.options),
            "split_seed": problem.split_seed,
            "level": problem.level,
            **data_hashes(problem),
            "sizes": problem.sizes(),
            "forgotten_people": problem.forget_identities(),
        },
        models={
            name: {k: checkpoint_record(m.path, m.meta)[k] for k in MODEL_RECORD_KEYS}
            for name, m in models.items()
        },
        settings=asdict(settings),
        **found,
        people=[asdict(p) for p in per_person(people, scores, keys)],
        most_exposed=most_exposed(keys, people, scores["unlearned"], settings.top_k),
        **conclusions,
        audit_s=time.perf_counter() - started,
    )
    return certificate, outputs


def load_models(paths: dict[str, Path], device: torch.device) -> dict[str, LoadedModel]:
    """Load the checkpoints (never unpickling) on ``device``."""
    return {
        name: LoadedModel(path, *load_checkpoint(path, device=device))
        for name, path in paths.items()
    }


def check_audit_models(models: dict[str, LoadedModel], scenario: Scenario) -> None:
    """Refuse models that cannot be compared on this scenario's forget request."""
    fits = {}
    for name, loaded in models.items():
        fits[name] = checkpoint_fit(loaded.meta, loaded.path, scenario)
        if fits[name].other_data:
            raise CheckpointError(f"{loaded.path} ({name}) was trained on other data")
    for name, role in (("original", "original"), ("reference", "retrained")):
        meta = models[name].meta
        if meta.role in ("original", "retrained") and meta.role != role:
            raise CheckpointError(
                f"--{name} {models[name].path} is a {meta.role} model; it must be the {role} model"
            )
    if fits["original"].other_split:
        raise CheckpointError(
            f"--original {models['original'].path} was trained on the split "
            f"of seed {models['original'].meta.split_seed}, not {scenario.problem.split_seed}"
        )
    if fits["reference"].other_forget:
        raise CheckpointError(
            f"the reference {models['reference'].path} was retrained for another forget set"
        )
