"""DLFD's quality next to its references, over several seeds (issue #3's quality table).

For each seed: train (or reuse) the scenario's original and retrained reference, run each
variant from the same original, evaluate with the protocol (test split, forget vs unseen
attack) and print mean +- std of test_acc, forgetting_score and NoMUS. Variants are
``name=method:key=value,...``; the defaults compare fine-tuning with DLFD's feature options
and its official mode.

    python benchmarks/dlfd_quality.py [--seeds 0,1,2] [--variant NAME=METHOD:K=V,...] ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dlfd.checkpoint import load_checkpoint
from dlfd.data.loaders import ProblemLoaders
from dlfd.evaluation import evaluate_model
from dlfd.methods.base import Monitor
from dlfd.runs.method_run import method_loaders, unlearn_on_scenario
from dlfd.runtime import resolve_device
from dlfd.scenarios import get_scenario
from dlfd.training import train_checkpoint

DEFAULT_VARIANTS = (
    "finetune=finetune:",
    "dlfd logits=dlfd:features=logits",
    "dlfd penultimate=dlfd:features=penultimate",
    "dlfd official=dlfd:mode=official",
)
COLUMNS = ("test_acc", "forget_acc", "forgetting_score", "nomus", "val_acc", "val_score")


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    name, _, rest = text.partition("=")
    method, _, settings = rest.partition(":")
    hparams = dict(item.split("=", 1) for item in settings.split(",") if item)
    return name, method, hparams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="orl-glasses")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    rows: dict[str, list[dict[str, float]]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        scenario = get_scenario(args.dataset, split_seed=seed)
        loaders = ProblemLoaders(scenario.problem, scenario.input_spec)
        paths = {}
        for role in ("original", "retrained"):
            paths[role] = args.out / f"{args.dataset}-s{seed}-{role}.safetensors"
            train_checkpoint(scenario, role=role, out=paths[role], seed=seed, device=device)
        original, _ = load_checkpoint(paths["original"], device=device)
        reference, _ = load_checkpoint(paths["retrained"], device=device)
        models = {"original": (original, 0.0), "retrained": (reference, 0.0)}
        for name, method, hparams in variants:
            result = unlearn_on_scenario(
                original, scenario, method, seed=seed, device=device, hparams=hparams
            )
            models[name] = (result.model, result.wall_s)
        plain = method_loaders(scenario, batch_size=64, seed=seed)
        monitor = Monitor(
            plain.forget, plain.val, task=scenario.task, device=device, samples=None, seed=seed
        )
        for name, (model, wall) in models.items():
            metrics = evaluate_model(model, loaders, device=device, reference=reference)
            reading = monitor.read(model, name)  # the validation view that selection sees
            metrics["val_acc"], metrics["val_score"] = reading.val_acc, reading.forgetting_score
            record = {c: metrics[c] for c in COLUMNS} | {"wall_s": wall}
            rows.setdefault(name, []).append(record)
            print(json.dumps({"seed": seed, "model": name, **record}), flush=True)
    print(f"\n{args.dataset}, seeds {args.seeds}: mean +- std")
    print(f"{'model':<20}" + "".join(f"{c:>22}" for c in (*COLUMNS, "wall_s")))
    for name, records in rows.items():
        cells = []
        for column in (*COLUMNS, "wall_s"):
            values = np.array([r[column] for r in records])
            cells.append(
                f"{values.mean():.3f} +- {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
            )
        print(f"{name:<20}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
