"""Data-parallel scaling: samples/s of training and of DLFD for 1 vs N processes.

Each configuration runs in fresh processes (``dlfd.distributed.spawn_local``: gloo on CPU,
NCCL on GPUs) with the same global batch, through the same code ``torchrun -m dlfd`` uses:

* training: ``train_checkpoint`` on the scenario's train split; the first epoch is a warm-up,
  the rate is train images / median time of the remaining epochs;
* DLFD: ``unlearn_on_scenario(method="dlfd")`` on the model just trained, synthesis on every
  batch (``forget_threshold=0``), monitored every batch on rank 0; the rate is retain images /
  wall time (monitoring included).

Each run is ``PxT``: P processes with T CPU threads each. The default on a CPU with C cores
is ``1x1 1xC Cx1``: one process on one core (the baseline of the last column), one process
using every core through intra-op threads, and one single-threaded process per core (data
parallel). With ``--device cuda`` each process gets one GPU (``--runs 1x1`` on a one-GPU
machine; ``1x1 2x1`` on two GPUs).

    python benchmarks/scaling.py [--device cpu|cuda] [--runs 1x1 1x2 2x1] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from dlfd.checkpoint import load_checkpoint
from dlfd.config import apply_overrides
from dlfd.distributed import DistributedContext, spawn_local
from dlfd.runs.method_run import unlearn_on_scenario
from dlfd.runtime import resolve_device
from dlfd.scenarios import get_scenario
from dlfd.training import train_checkpoint


def measure(context: DistributedContext, config: dict[str, Any]) -> dict[str, Any]:
    """One configuration, on every rank; returns rank-local numbers (rank 0's are reported)."""
    torch.set_num_threads(config["threads"])
    dist = context if context.world_size > 1 else None
    device = context.device
    scenario = get_scenario(config["dataset"], split_seed=0, image_size=config["image_size"])
    recipe = apply_overrides(
        scenario.recipe,
        {
            "model": config["model"],
            "epochs": str(config["epochs"] + 1),
            "batch_size": str(config["batch_size"]),
        },
    )
    out = Path(config["folder"]) / f"original-{context.world_size}.safetensors"
    trained = train_checkpoint(
        scenario,
        role="original",
        out=out,
        seed=0,
        device=device,
        recipe=recipe,
        resume=False,
        force=True,
        resume_every_s=1e9,
        dist=dist,
    )
    epoch_s = statistics.median(h["seconds"] for h in trained.history[1:])
    model, _ = load_checkpoint(out, device=device)
    unlearned = unlearn_on_scenario(
        model,
        scenario,
        "dlfd",
        seed=0,
        device=device,
        hparams={"steps": config["steps"], "forget_threshold": 0.0, "select": False},
        batch_size=config["batch_size"],
        recipe=recipe,
        dist=dist,
    )
    sizes = scenario.problem.sizes()
    return {
        "processes": context.world_size,
        "threads_per_process": config["threads"],
        "device": str(device),
        "train_samples_per_s": trained.meta.extra["n_train"] / epoch_s,
        "train_epoch_s": epoch_s,
        "dlfd_samples_per_s": sizes["retain"] / unlearned.wall_s,
        "dlfd_wall_s": unlearned.wall_s,
        "dlfd_monitor_s": unlearned.monitor_s,
    }


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="orl-glasses")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (plus a warm-up)")
    parser.add_argument("--steps", type=int, default=15, help="DLFD's K perturbation steps")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--runs", nargs="+", default=None, help="PxT: processes x threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    device = str(resolve_device(args.device))

    cores = os.cpu_count() or 1
    if args.runs is None:
        args.runs = ["1x1"] if device.startswith("cuda") else ["1x1", f"1x{cores}", f"{cores}x1"]
    runs = list(dict.fromkeys(tuple(int(n) for n in run.lower().split("x")) for run in args.runs))
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlfd-scaling-") as folder:
        for procs, threads in runs:
            config = {**vars(args), "folder": folder, "threads": threads, "json": None}
            rows.append(spawn_local(measure, procs, config, device=device)[0])
            print(json.dumps(rows[-1]), flush=True)

    print(
        f"\n{args.dataset} {args.image_size}px, {args.model}, global batch {args.batch_size}, "
        f"DLFD K={args.steps} with synthesis on every batch; {json.dumps(machine(device))}\n"
    )
    print("| processes x threads | device | train samples/s | DLFD samples/s | vs 1x1 |")
    print("|---|---|---:|---:|---:|")
    single = rows[0] if runs[0] == (1, 1) else None
    for r in rows:
        ratio = "-"
        if single is not None and r is not single:
            ratio = (
                f"train x{r['train_samples_per_s'] / single['train_samples_per_s']:.2f}, "
                f"DLFD x{r['dlfd_samples_per_s'] / single['dlfd_samples_per_s']:.2f}"
            )
        print(
            f"| {r['processes']} x {r['threads_per_process']} | {r['device']} "
            f"| {r['train_samples_per_s']:.1f} | {r['dlfd_samples_per_s']:.1f} | {ratio} |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
