"""DLFD's cost, measured side by side in one run (issue #3's performance benchmark).

On a scenario (default orl-glasses, resnet18_mlp at its 64x64 recipe) it times, on the same
original model and the same retain loader:
  1. one fine-tuning epoch over retain (the unit of cost),
  2. DLFD (paper mode) with synthesis on every batch (the algorithm's full cost, K steps),
     monitoring included, and with the default dynamic switch,
  3. DLFD in official mode with synthesis on every batch (per-batch full evaluation,
     redundant forward passes),
  4. retraining from scratch with the scenario's recipe,
and prints the ratios. Absolute seconds on shared cores are noisy; the ratios are what to read.

    python benchmarks/dlfd_speed.py [--device cpu|cuda] [--steps 15] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dlfd.checkpoint import load_checkpoint
from dlfd.methods.scenario_run import unlearn_on_scenario
from dlfd.runtime import hardware_info, resolve_device
from dlfd.scenarios import get_scenario
from dlfd.training import train_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="orl-glasses")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=15, help="K perturbation steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    scenario = get_scenario(args.dataset, split_seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    original_path = args.out / f"{args.dataset}-original-s{args.seed}.safetensors"
    train_checkpoint(scenario, role="original", out=original_path, seed=args.seed, device=device)
    model, _ = load_checkpoint(original_path, device=device)

    def run(method: str, **hparams: object) -> tuple[float, float, dict]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        result = unlearn_on_scenario(
            model, scenario, method, seed=args.seed, device=device, hparams=hparams
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result.wall_s, result.monitor_s, result.info

    k = args.steps
    run("finetune", epochs=1, lr=0.008, select=False)  # warm-up (allocator, kernels)
    rows: dict[str, dict[str, float]] = {}
    ft, _, _ = run("finetune", epochs=1, lr=0.008, select=False, schedule="constant")
    rows["fine-tune epoch"] = {"seconds": ft, "monitor_s": 0.0}
    for name, hp in {
        f"dlfd paper, K={k}, synthesis every batch": {"steps": k, "forget_threshold": 0.0},
        f"dlfd paper, K={k}, dynamic (defaults)": {"steps": k},
        f"dlfd official, K={k}, synthesis every batch": {
            "steps": k,
            "forget_threshold": 0.0,
            "mode": "official",
        },
    }.items():
        wall, monitor, info = run("dlfd", **hp)
        rows[name] = {
            "seconds": wall,
            "monitor_s": monitor,
            "synthesis_batches": len(info["synthesis_batches"]),
        }
    started = time.perf_counter()
    train_checkpoint(
        scenario,
        role="retrained",
        out=args.out / f"{args.dataset}-retrain-timing.safetensors",
        seed=args.seed,
        device=device,
        resume=False,
        force=True,
    )
    rows["retrain from scratch"] = {"seconds": time.perf_counter() - started, "monitor_s": 0.0}

    paper = rows[f"dlfd paper, K={k}, synthesis every batch"]["seconds"]
    official = rows[f"dlfd official, K={k}, synthesis every batch"]["seconds"]
    retrain = rows["retrain from scratch"]["seconds"]
    print(f"\n{args.dataset}, {scenario.recipe.model}, device {device}, K={k}")
    print(f"{'run':<46} {'seconds':>8} {'x FT epoch':>10} {'monitor %':>9}")
    for name, row in rows.items():
        share = 100 * row["monitor_s"] / row["seconds"] if row["seconds"] else 0.0
        print(f"{name:<46} {row['seconds']:8.1f} {row['seconds'] / ft:10.1f} {share:8.1f}%")
    print(f"\nDLFD (every batch) / fine-tune epoch : {paper / ft:6.1f}  (target <= K+2 = {k + 2})")
    print(f"official schedule / DLFD (same K)    : {official / paper:6.1f}")
    print(f"DLFD (every batch) / retrain         : {paper / retrain:6.3f}")
    dynamic = rows[f"dlfd paper, K={k}, dynamic (defaults)"]["seconds"]
    print(f"DLFD (dynamic) / retrain             : {dynamic / retrain:6.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, "hardware": hardware_info(), "k": k}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
