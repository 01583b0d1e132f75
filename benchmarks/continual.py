"""Continual unlearning: does quality drift as deletion requests accumulate?

A deletion-request service publishes model versions: v0 is the original model, version k is
DLFD (default settings) run from version k-1's weights with the accumulated forget set F_k (all
requests of batches 1..k; the retain set is the rest of the training set). For each dataset,
seed and k this measures three models on the scenario whose forget set is F_k:

- ``continual``: version k of that chain;
- ``one-shot``: DLFD run once from the original with forget set F_k (k = 1: the continual model);
- ``retrain``: a model trained from scratch on train minus F_k (the reference of the gaps).

Requests: on ``orl-glasses`` (identity-level) a seeded permutation of the 24 training people,
2 people per batch; on ``orl-identity`` (instance-level) a seeded permutation of the 40 people,
per batch the default forget images of the next 8 people (after 5 batches: the default forget
set). Seed = split seed = training seed, as ``dlfd bench`` does. Originals and retrained models
are cached under ``OUT/cache``, continual versions under ``OUT/models``; each finished row is
appended atomically to ``OUT/results.json``, so an interrupted run resumes where it stopped.

    python benchmarks/continual.py [--datasets orl-glasses,orl-identity] [--seeds 0,1,2]
        [--batches 5] [--out runs/continual] [--device auto] [--image-size N]
        [--recipe-set KEY=VALUE ...] [--reuse-cache DIR]
    python benchmarks/continual.py --out runs/continual --table [--plot docs/continual.png]

Smoke run (under a minute): ``--image-size 16 --recipe-set model=small_cnn --recipe-set
epochs=1 --seeds 0 --batches 2 --out /tmp/continual-smoke``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlfd.bench.references import place_checkpoint, reference_cache
from dlfd.checkpoint import CheckpointMeta, load_checkpoint, read_meta
from dlfd.config import apply_overrides, parse_overrides
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import ConfigError
from dlfd.evaluation import split_outputs
from dlfd.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from dlfd.methods.base import UnlearnResult
from dlfd.metrics import SplitOutputs, mean_std, protocol_metrics
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.pages import figure_png, pyplot
from dlfd.recipe import TrainRecipe
from dlfd.runs.cache import TrainedModel
from dlfd.runs.method_run import save_unlearned, unlearn_on_scenario
from dlfd.runs.scenario import load_scenario
from dlfd.runtime import derive_seed, resolve_device
from dlfd.scenarios import Scenario

FORMAT = "dlfd-continual/1"
METHOD = "dlfd"
KINDS = ("continual", "one-shot", "retrain")
#: Requests per batch: people (identity-level) or people whose forget images go (instance-level).
PER_BATCH = {"orl-glasses": 2, "orl-identity": 8}
#: Metrics copied into each row (the matched ones only when the attack could run).
ROW_METRICS = (
    *MAIN_METRICS,
    "gap_forget_acc",
    "gap_retain_acc",
    "gap_test_acc",
    "gap_mia_acc",
)
TABLE_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_acc", "avg_gap")
STARTED = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with the time since the script started."""
    elapsed = int(time.perf_counter() - STARTED)
    stamp = f"{elapsed // 3600:d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


class Results:
    """``results.json``: the run's configuration, its rows and the seconds spent on it (summed
    over resumed runs); every change is written atomically."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"format": FORMAT, "config": config, "elapsed_s": 0.0}
        self.data["rows"] = []
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("format") != FORMAT:
                raise ConfigError(f"{path} is not a {FORMAT} file")
            if config and old.get("config") != config:
                raise ConfigError(
                    f"{path} was made with {old.get('config')}, not {config}; use another --out"
                )
            self.data = old
        self.base_elapsed = float(self.data.get("elapsed_s", 0.0))

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]

    def has(self, dataset: str, seed: int, k: int, kind: str) -> bool:
        return any(
            (r["dataset"], r["seed"], r["k"], r["kind"]) == (dataset, seed, k, kind)
            for r in self.rows
        )

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.base_elapsed + time.perf_counter() - STARTED, 1)
        atomic_write_json(self.path, self.data)


def request_batches(scenario: Scenario, seed: int, batches: int) -> list[list[str]]:
    """The forget-request entries of each batch: whole training people (identity-level) or the
    default forget images of the next people (instance-level), in a seeded order of people."""
    problem = scenario.problem
    identities = problem.records.identities
    people = sorted({identities[i] for i in problem.train} - {""})
    order = [str(p) for p in np.random.default_rng(seed).permutation(people)]
    per = PER_BATCH.get(scenario.name)
    if per is None:
        raise ConfigError(f"no batch size for {scenario.name}; known: {', '.join(PER_BATCH)}")
    if per * batches > len(order):
        raise ConfigError(f"{batches} batches of {per} exceed the {len(order)} training people")
    groups = [order[b * per : (b + 1) * per] for b in range(batches)]
    if problem.level == "identity":
        return groups
    default_forget = [(identities[i], problem.records.paths[i]) for i in problem.forget]
    return [sorted(path for who, path in default_forget if who in set(g)) for g in groups]


def accumulated(batches: Sequence[list[str]], k: int) -> list[str]:
    """F_k: the entries of batches 1..k, sorted."""
    return sorted(chain.from_iterable(batches[:k]))


class Chain:
    """One (dataset, seed): its original, request batches and the shared settings."""

    def __init__(self, args: argparse.Namespace, dataset: str, seed: int) -> None:
        self.args, self.dataset, self.seed = args, dataset, seed
        self.device = resolve_device(args.device)
        self.base = self.scenario([])
        self.recipe = apply_overrides(self.base.recipe, parse_overrides(args.recipe_set or []))
        self.cache = reference_cache(args.out / "cache")
        self.batches = request_batches(self.base, seed, args.batches)
        self.unit = f"{dataset} seed {seed}"

    def scenario(self, entries: list[str]) -> Scenario:
        """The scenario whose forget set is ``entries`` (the default one when empty)."""
        return load_scenario(
            self.dataset,
            split_seed=self.seed,
            data_root=None,
            image_size=self.args.image_size,
            forget_entries=entries or None,
        )

    def trained(self, scenario: Scenario, role: str) -> TrainedModel:
        """The cached ``role`` model of ``scenario``, linked from a ``--reuse-cache`` folder
        that holds the same configuration (same key: the same training), else trained (or
        reused) here."""
        key = dict(role=role, seed=self.seed, recipe=self.recipe)
        here = self.cache.path(scenario, **key)
        for folder in self.args.reuse_cache or []:
            there = reference_cache(folder).path(scenario, **key)
            if there.exists() and not here.exists():
                place_checkpoint(there, here)
                log(f"{self.unit}: {role} linked from {there}")
        started = time.perf_counter()
        model = self.cache.get(scenario, device=self.device, **key)
        if model.trained_now:
            log(f"{self.unit}: {role} trained in {time.perf_counter() - started:.1f}s")
        return model

    def model_path(self, k: int) -> Path:
        return self.args.out / "models" / f"{self.dataset}-s{self.seed}-continual-v{k}.safetensors"


def unlearn(
    model: nn.Module,
    scenario: Scenario,
    seed: int,
    k: int,
    recipe: TrainRecipe,
    device: torch.device,
) -> UnlearnResult:
    """Version k of the service: DLFD at its defaults from ``model`` with ``scenario``'s forget
    set, seeded by ``seed`` and the version number (the call the service makes)."""
    return unlearn_on_scenario(
        model,
        scenario,
        METHOD,
        seed=derive_seed(seed, f"version-{k}"),
        device=device,
        hparams={},
        recipe=recipe,
    )


def metrics_row(
    model: nn.Module,
    scenario: Scenario,
    reference: dict[str, SplitOutputs],
    device: torch.device,
) -> dict[str, float]:
    """Protocol metrics of ``model`` on ``scenario`` with the gaps to the retrained reference."""
    loaders = ProblemLoaders(scenario.problem, scenario.input_spec)
    outputs = split_outputs(model, loaders, device=device)
    metrics = protocol_metrics(outputs, task=scenario.task, reference=reference)
    return {key: round(float(metrics[key]), 6) for key in ROW_METRICS if key in metrics}


def run_chain(ch: Chain, results: Results) -> None:
    """Every missing row of one (dataset, seed), k = 1..batches."""
    ks = range(1, ch.args.batches + 1)
    missing = {(k, kind) for k in ks for kind in KINDS}
    missing = {m for m in missing if not results.has(ch.dataset, ch.seed, *m)}
    if not missing:
        log(f"{ch.unit}: all rows done earlier; skipped")
        return
    original = ch.trained(ch.base, "original")
    meta = read_meta(original.path)
    recipe = TrainRecipe.from_dict(meta.recipe)  # the service's original_recipe
    # the chain is needed up to the last missing continual row (one-shot k = 1 is that row)
    chained = [k for k, kind in missing if kind == "continual" or (k, kind) == (1, "one-shot")]
    last_continual = max(chained, default=0)
    previous: nn.Module | None = None
    for k in ks:
        scenario = ch.scenario(accumulated(ch.batches, k))
        todo = [kind for kind in KINDS if (k, kind) in missing]
        if not todo and k > last_continual:
            break
        size = scenario.problem.sizes()["forget"]
        people = len(scenario.problem.forget_identities())
        base = {"dataset": ch.dataset, "seed": ch.seed, "k": k, "forget_size": size}
        base["forget_people"] = people
        current = None
        if k <= last_continual:
            current, wall = continual_version(ch, k, scenario, previous, original.path, meta)
        if todo:
            log(f"{ch.unit} k={k}: forget {size} images of {people} people; rows {todo}")
            retrained = ch.trained(scenario, "retrained")
            ref_model, _ = load_checkpoint(retrained.path, device=ch.device)
            loaders = ProblemLoaders(scenario.problem, scenario.input_spec)
            reference = split_outputs(ref_model, loaders, device=ch.device)
            models = {"retrain": (ref_model, retrained.training_s, "retrained from scratch")}
            if current is not None:
                models["continual"] = (current, wall, f"version {k} from version {k - 1}")
            if "one-shot" in todo:
                models["one-shot"] = one_shot(ch, k, scenario, original.path, recipe, models)
            for kind in todo:
                model, wall_s, what = models[kind]
                row = {**base, "kind": kind, **metrics_row(model, scenario, reference, ch.device)}
                row.update(wall_s=round(wall_s, 2), what=what)
                results.add(row)
                log(
                    f"{ch.unit} k={k} {kind}: forget_acc {row['forget_acc']:.3f}, test_acc "
                    f"{row['test_acc']:.3f}, avg_gap {row['avg_gap']:.3f} ({wall_s:.1f}s)"
                )
        previous = current


def continual_version(
    ch: Chain,
    k: int,
    scenario: Scenario,
    previous: nn.Module | None,
    original: Path,
    meta: CheckpointMeta,
) -> tuple[nn.Module, float]:
    """Version k (saved under ``OUT/models``; reused when there) and its unlearning seconds."""
    path = ch.model_path(k)
    if path.exists():
        model, meta = load_checkpoint(path, device=ch.device)
        return model, float(meta.extra["method"]["wall_s"])
    if previous is None:
        source = original if k == 1 else ch.model_path(k - 1)
        previous, _ = load_checkpoint(source, device=ch.device)
    log(f"{ch.unit} k={k}: continual DLFD from version {k - 1}")
    recipe = TrainRecipe.from_dict(meta.recipe)  # the service's original_recipe
    result = unlearn(previous, scenario, ch.seed, k, recipe, ch.device)
    log(f"{ch.unit} k={k}: continual done in {result.wall_s:.1f}s ({result.selected})")
    save_unlearned(result, path, meta, source=str(original))
    return result.model, result.wall_s


def one_shot(
    ch: Chain,
    k: int,
    scenario: Scenario,
    original: Path,
    recipe: TrainRecipe,
    models: dict[str, tuple[nn.Module, float, str]],
) -> tuple[nn.Module, float, str]:
    """DLFD once from the original with F_k (seed of version 1: at k = 1 it is the continual
    model, reused)."""
    if k == 1 and "continual" in models:
        model, wall, _ = models["continual"]
        return model, wall, "the continual version 1 (same run)"
    model, _ = load_checkpoint(original, device=ch.device)
    log(f"{ch.unit} k={k}: one-shot DLFD from the original")
    result = unlearn(model, scenario, ch.seed, 1, recipe, ch.device)
    log(f"{ch.unit} k={k}: one-shot done in {result.wall_s:.1f}s ({result.selected})")
    return result.model, result.wall_s, "from the original, forget F_k at once"


# ---- summary --------------------------------------------------------------------------------


def grouped(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["kind"], row["k"]), []).append(row)
    return groups


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: mean ± std over seeds per dataset, k and kind."""
    lines = []
    header = ["dataset", "k", "kind", "n", "forget size", *TABLE_METRICS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    groups = grouped(rows)
    for dataset, kind, k in sorted(groups, key=lambda g: (g[0], g[2], KINDS.index(g[1]))):
        group = groups[(dataset, kind, k)]
        size = mean_std([r["forget_size"] for r in group])[0]
        cells = [dataset, str(k), kind, str(len(group)), f"{size:.0f}"]
        for key in TABLE_METRICS:
            mean, std = mean_std([r[key] for r in group])
            cells.append(f"{mean:.3f} ± {std:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def missing_rows(results: Results, args: argparse.Namespace) -> list[str]:
    return [
        f"{d} seed {s} k={k} {kind}"
        for d in args.datasets
        for s in args.seeds
        for k in range(1, args.batches + 1)
        for kind in KINDS
        if not results.has(d, s, k, kind)
    ]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """avg_gap to the retrained model (top) and test accuracy (bottom) against k, per dataset."""
    plt = pyplot()
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6), squeeze=False)
    groups = grouped(rows)
    styles = {"continual": ("C3", "o"), "one-shot": ("C0", "s"), "retrain": ("0.4", "^")}
    for col, dataset in enumerate(datasets):
        for row, (metric, kinds) in enumerate(
            (("avg_gap", ("continual", "one-shot")), ("test_acc", KINDS))
        ):
            ax = axes[row][col]
            for kind in kinds:
                ks = sorted(k for d, kd, k in groups if d == dataset and kd == kind)
                stats = [mean_std([r[metric] for r in groups[(dataset, kind, k)]]) for k in ks]
                offset = {"continual": -0.06, "one-shot": 0.06}.get(kind, 0.0)
                color, marker = styles[kind]
                ax.errorbar(
                    [k + offset for k in ks],
                    [m for m, _ in stats],
                    yerr=[s for _, s in stats],
                    color=color,
                    marker=marker,
                    capsize=3,
                    label=kind,
                )
            ax.set_xlabel("requests batch k")
            ax.set_ylabel("avg_gap to retrain" if metric == "avg_gap" else "test accuracy")
            ax.set_title(f"{dataset}: {metric}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    seeds = max(len(group) for group in groups.values())
    fig.suptitle(f"DLFD under successive deletion requests: mean ± std over {seeds} seeds")
    fig.tight_layout()
    atomic_write_bytes(path, figure_png(fig, dpi=90))
    plt.close(fig)


def write_summary(results: Results, args: argparse.Namespace) -> None:
    """Print the table, write it to ``OUT/summary.md`` and the plot to ``--plot``."""
    table = summary_table(results.rows)
    missing = missing_rows(results, args)
    note = f"\n{len(missing)} rows missing: {'; '.join(missing)}\n" if missing else ""
    elapsed = f"\nwall time of the run: {results.data.get('elapsed_s', 0.0) / 60:.1f} min\n"
    atomic_write_text(args.out / "summary.md", table + note + elapsed)
    print(table + note + elapsed)
    if results.rows:
        plot(results.rows, args.plot or args.out / "continual.png")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="orl-glasses,orl-identity")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/continual"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--recipe-set", action="append", metavar="KEY=VALUE")
    parser.add_argument(
        "--reuse-cache",
        type=Path,
        action="append",
        metavar="DIR",
        help="cache folder (e.g. ~/.cache/dlfd) whose identical models are linked; repeatable",
    )
    parser.add_argument("--table", action="store_true", help="summarise results.json only")
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default OUT/continual.png)")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """What makes the rows comparable: resuming with another configuration is refused."""
    return {
        "method": METHOD,
        "per_batch": PER_BATCH,
        "image_size": args.image_size,
        "recipe_set": sorted(args.recipe_set or []),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = Results(args.out / "results.json", {} if args.table else run_config(args))
    if not args.table:
        for dataset in args.datasets:
            for seed in args.seeds:
                log(f"{dataset} seed {seed}: start")
                run_chain(Chain(args, dataset, seed), results)
        results.save()
        log(f"finished; {results.data['elapsed_s'] / 60:.1f} min in all (resumed runs summed)")
    write_summary(results, args)


if __name__ == "__main__":
    main()
