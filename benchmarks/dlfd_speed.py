"""DLFD's cost, measured side by side in one run.

Default mode: on a scenario (default orl-glasses, resnet18_mlp at its 64x64 recipe) it times,
on the same original model and the same retain loader:
  1. one fine-tuning epoch over retain (the unit of cost),
  2. DLFD (paper mode) with synthesis on every batch (the algorithm's full cost, K steps),
     monitoring included, and with the default dynamic switch,
  3. DLFD in official mode with synthesis on every batch (per-batch full evaluation,
     redundant forward passes),
  4. retraining from scratch with the scenario's recipe,
and prints the ratios. Absolute seconds on shared cores are noisy; the ratios are what to read.

    python benchmarks/dlfd_speed.py [--device cpu|cuda] [--steps 15] [--out DIR] [--json PATH]

``--mufac-shape``: DLFD's cost at the size of the MUFAC benchmark, without the dataset. Images
are generated in memory (seeded, ImageNet-normalised, never written to disk): only the batches
it times, while the batch counts are those of the real sizes (``--retain-size`` 10,000,
``--forget-size`` 1,000 and ``--val-size`` 1,000 images in batches of ``--batch-size`` 64;
``--image-size`` 128, 8 classes, ``--model`` resnet18). After one warm-up batch each, it times
``--batches`` batches of:
  1. a fine-tuning step (forward, backward, SGD step; train mode),
  2. a paper-mode DLFD batch: ``_synthesise`` with K = ``--steps`` steps, then one training
     step (the paper mode's monitoring is not included),
  3. an official-mode DLFD batch: ``_synthesise`` in official mode, then one training step
     (eval mode, as the official loop trains from its second batch on),
  4. a no-grad eval-mode forward of one batch (loss included): the official code evaluates
     retain, forget and validation in full after every batch, so its per-batch evaluation is
     projected as this cost times the batches of the three splits.
It prints the measured per-batch costs, then a projection: per-epoch seconds of each schedule =
measured per-batch cost x batch count (projections, not measured epochs), and the ratios to one
fine-tuning epoch of DLFD with synthesis on every batch (target <= K+2), of the official
schedule (synthesis + per-batch evaluation), and of ``--updates`` synthesis batches (the paper
mode with a fixed budget of optimiser steps; an upper bound: all updates synthesise). The
projection assumes full batches (the last, partial batch of each split counts as a full one).
``--json PATH`` writes every number and the hardware; an existing PATH is refused unless
``--force``.

    python benchmarks/dlfd_speed.py --mufac-shape [--device cpu|cuda] [--steps 15] \
        [--batches 3] [--updates 24] [--image-size 128] [--model resnet18] [--json PATH --force]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlfd.checkpoint import load_checkpoint
from dlfd.losses import task_loss
from dlfd.methods.base import RunContext, UnlearnData
from dlfd.methods.common import sgd
from dlfd.methods.dlfd import (
    DLFDParams,
    _autocast,
    _synthesise,
    classification_weight,
    feature_layer,
)
from dlfd.models import create_model
from dlfd.runs.method_run import unlearn_on_scenario
from dlfd.runtime import hardware_info, resolve_device
from dlfd.scenarios import get_scenario
from dlfd.training import train_checkpoint

#: ImageNet statistics, the normalisation of the MUFAC scenario (and of the DLFD code).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: One measured batch: ``step(model, optimizer, i)`` runs on batch ``i`` of the generated data.
Step = Callable[[nn.Module, torch.optim.Optimizer, int], None]
#: Per-batch measurements of ``--mufac-shape``, in the order they are taken and printed.
MEASURED = {
    "finetune_step": "fine-tuning step (train mode)",
    "dlfd_paper_batch": "dlfd paper: synthesis + step",
    "dlfd_official_batch": "dlfd official: synthesis + step",
    "eval_forward": "eval forward, no grad (one batch)",
}


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of both modes (the ``--mufac-shape`` options are ignored otherwise)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="orl-glasses")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=15, help="K perturbation steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    shape = parser.add_argument_group("--mufac-shape (generated data, projected epochs)")
    shape.add_argument(
        "--mufac-shape", action="store_true", help="time batches at MUFAC's size, project epochs"
    )
    shape.add_argument("--model", default="resnet18")
    shape.add_argument("--image-size", type=positive_int, default=128)
    shape.add_argument("--classes", type=positive_int, default=8)
    shape.add_argument("--batch-size", type=positive_int, default=64)
    shape.add_argument("--batches", type=positive_int, default=3, help="timed batches each")
    shape.add_argument("--retain-size", type=positive_int, default=10_000)
    shape.add_argument("--forget-size", type=positive_int, default=1_000)
    shape.add_argument("--val-size", type=positive_int, default=1_000)
    shape.add_argument(
        "--updates", type=positive_int, default=24, help="optimiser steps of the updates budget"
    )
    shape.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    shape.add_argument(
        "--amp", action="store_true", help="bf16 autocast for every timed step (CUDA only)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the mode the command line asks for."""
    args = parse_args(argv)
    if not args.mufac_shape:
        scenario_benchmark(args)
        return
    if args.json is not None and args.json.exists() and not args.force:
        sys.exit(f"{args.json} exists; pass --force to overwrite it")
    results = mufac_shape(args)
    print_mufac_shape(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def scenario_benchmark(args: argparse.Namespace) -> None:
    """The default mode: whole runs on a real scenario, side by side (see the module docstring)."""
    device = resolve_device(args.device)
    scenario = get_scenario(args.dataset, split_seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    original_path = args.out / f"{args.dataset}-original-s{args.seed}.safetensors"
    train_checkpoint(scenario, role="original", out=original_path, seed=args.seed, device=device)
    model, _ = load_checkpoint(original_path, device=device)

    def run(method: str, **hparams: object) -> tuple[float, float, dict]:
        """One unlearning run on the original model: wall and monitor seconds, the info."""
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


def batch_counts(args: argparse.Namespace) -> dict[str, int]:
    """Batches per pass over each split at the real sizes, and the batches of one full
    evaluation (retain, forget and validation), as the official code runs after every batch."""
    counts = {
        "retain": math.ceil(args.retain_size / args.batch_size),
        "forget": math.ceil(args.forget_size / args.batch_size),
        "val": math.ceil(args.val_size / args.batch_size),
    }
    counts["evaluation"] = counts["retain"] + counts["forget"] + counts["val"]
    return counts


def generated_loader(
    images: int, args: argparse.Namespace, generator: torch.Generator
) -> DataLoader:
    """``images`` random 3-channel ``--image-size`` images (uniform pixels, ImageNet-normalised)
    with random labels of ``--classes`` classes, in memory, in batches of ``--batch-size``."""
    size = args.image_size
    pixels = torch.rand((images, 3, size, size), generator=generator)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    labels = torch.randint(0, args.classes, (images,), generator=generator)
    return DataLoader(TensorDataset((pixels - mean) / std, labels), batch_size=args.batch_size)


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock reading includes it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(step: Callable[[int], None], batches: int, device: torch.device) -> list[float]:
    """Seconds of ``step(i)`` for ``i = 1..batches``, each timed alone, after ``step(0)`` as an
    untimed warm-up (allocator, kernel selection)."""
    step(0)
    seconds = []
    for i in range(1, batches + 1):
        synchronise(device)
        started = time.perf_counter()
        step(i)
        synchronise(device)
        seconds.append(time.perf_counter() - started)
    return seconds


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    train: bool = True,
    amp: bool = False,
) -> None:
    """One optimiser step on a batch: forward, loss, backward, SGD step (``train``: train
    mode, else eval mode, as the official loop from its second batch on; ``amp``: the forward
    under bf16 autocast, as DLFD's ``amp=True`` trains)."""
    model.train(train)
    with _autocast(x.device, amp):
        loss = task_loss(model(x), y, "multiclass")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def project(per_batch: dict[str, float], counts: dict[str, int], updates: int) -> dict[str, Any]:
    """Per-epoch seconds of each schedule projected from measured per-batch seconds (cost x
    batch count), and their ratios to the projected fine-tuning epoch."""
    retain = counts["retain"]
    evaluation = per_batch["eval_forward"] * counts["evaluation"]  # after every official batch
    seconds = {
        "finetune_epoch": per_batch["finetune_step"] * retain,
        "dlfd_paper_every_batch": per_batch["dlfd_paper_batch"] * retain,
        "official_evaluation": evaluation * retain,
        "dlfd_official_schedule": (per_batch["dlfd_official_batch"] + evaluation) * retain,
        "dlfd_updates_upper_bound": per_batch["dlfd_paper_batch"] * updates,
    }
    finetune = seconds["finetune_epoch"]
    return {
        "seconds": seconds,
        "ratios_to_finetune_epoch": {name: value / finetune for name, value in seconds.items()},
        "official_evaluation_per_batch_s": evaluation,
    }


def mufac_shape(args: argparse.Namespace) -> dict[str, Any]:
    """``--mufac-shape``: time the per-batch costs on generated MUFAC-sized data and project
    per-epoch costs from them (see the module docstring); returns every number."""
    device = resolve_device(args.device)
    if args.amp and device.type != "cuda":
        raise SystemExit("--amp times bf16 autocast on CUDA; this device is " + str(device))
    counts = batch_counts(args)
    k = args.steps
    generator = torch.Generator().manual_seed(args.seed)
    timed = args.batches + 1  # the warm-up batch, then the timed ones
    loaders = {
        name: generated_loader(timed * args.batch_size, args, generator)
        for name in ("retain", "forget", "val")
    }
    batches = {
        name: [(x.to(device), y.to(device)) for x, y in loader] for name, loader in loaders.items()
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        base = create_model(args.model, args.classes).to(device)
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    data = UnlearnData(
        retain=loaders["retain"],
        forget=loaders["forget"],
        val=loaders["val"],
        input_bounds=(low.view(3, 1, 1), high.view(3, 1, 1)),
    )
    paper = DLFDParams(steps=k, features=feature_layer(base, "auto"))
    official = DLFDParams(steps=k, mode="official")

    def finetune(model: nn.Module, optimizer: torch.optim.Optimizer, i: int) -> None:
        """One fine-tuning step on retain batch ``i``."""
        x, y = batches["retain"][i]
        train_step(model, optimizer, x, y, amp=args.amp)

    def dlfd_batch(params: DLFDParams) -> Step:
        """One DLFD batch of ``params``' mode: synthesis against forget batch ``i``, a step."""
        official_mode = params.mode == "official"
        ctx = RunContext(method="dlfd", params=params, device=device, seed=args.seed)

        def step(model: nn.Module, optimizer: torch.optim.Optimizer, i: int) -> None:
            """Synthesis on retain batch ``i`` and one training step on the result."""
            (x_r, y_r), (x_f, _) = batches["retain"][i], batches["forget"][i]
            weight = classification_weight(params, i, counts["retain"])
            x_train = _synthesise(model, x_r, y_r, x_f, weight, params, data, ctx, args.amp)
            train_step(model, optimizer, x_train, y_r, train=not official_mode, amp=args.amp)

        return step

    @torch.no_grad()
    def evaluate(model: nn.Module, _optimizer: torch.optim.Optimizer, i: int) -> None:
        """A no-grad eval-mode forward (with per-sample losses) of validation batch ``i``."""
        x, y = batches["val"][i]
        model.eval()
        task_loss(model(x), y, "multiclass", reduction="none")

    steps: dict[str, Step] = {
        "finetune_step": finetune,
        "dlfd_paper_batch": dlfd_batch(paper),
        "dlfd_official_batch": dlfd_batch(official),
        "eval_forward": evaluate,
    }
    samples: dict[str, list[float]] = {}
    for name, step in steps.items():  # each on a fresh copy of the model, a new optimiser
        model = copy.deepcopy(base)
        optimizer = sgd(model.parameters(), paper.lr, paper.momentum, paper.weight_decay)
        samples[name] = time_batches(partial(step, model, optimizer), args.batches, device)
    per_batch = {name: statistics.fmean(values) for name, values in samples.items()}
    return {
        "mode": "mufac-shape",
        "config": {
            "model": args.model,
            "image_size": args.image_size,
            "classes": args.classes,
            "batch_size": args.batch_size,
            "retain_size": args.retain_size,
            "forget_size": args.forget_size,
            "val_size": args.val_size,
            "steps": k,
            "updates": args.updates,
            "timed_batches": args.batches,
            "warmup_batches": 1,
            "device": str(device),
            "seed": args.seed,
            "amp": args.amp,
        },
        "k": k,
        "target_ratio": k + 2,
        "batch_counts": counts,
        "per_batch_s": per_batch,
        "samples_s": samples,
        "projected": project(per_batch, counts, args.updates),
        "hardware": hardware_info(),
    }


def print_mufac_shape(results: dict[str, Any]) -> None:
    """The measured per-batch table and the projection block of ``--mufac-shape``."""
    config, counts = results["config"], results["batch_counts"]
    per_batch, k = results["per_batch_s"], results["k"]
    projected = results["projected"]
    seconds, ratios = projected["seconds"], projected["ratios_to_finetune_epoch"]
    size = config["image_size"]
    print(
        f"\nMUFAC-shaped, generated data: {config['model']}, {size}x{size} RGB, "
        f"{config['classes']} classes, batch {config['batch_size']}, "
        f"device {config['device']}, K={k}"
    )
    print(f"MEASURED per batch (mean of {config['timed_batches']}, after 1 warm-up batch)")
    print(f"{'batch':<40} {'s/batch':>10} {'x FT step':>10}")
    for name, label in MEASURED.items():
        ratio = per_batch[name] / per_batch["finetune_step"]
        print(f"{label:<40} {per_batch[name]:10.4g} {ratio:10.2f}")

    print(
        "\nPROJECTION (not measured epochs): per-epoch seconds = measured per-batch cost "
        "x batch count"
    )
    print(
        f"batch counts: retain {counts['retain']} ({config['retain_size']} images), "
        f"forget {counts['forget']} ({config['forget_size']}), val {counts['val']} "
        f"({config['val_size']}); one full evaluation = {counts['evaluation']} forward batches"
    )
    evaluation = projected["official_evaluation_per_batch_s"]
    rows = [
        ("fine-tuning epoch", "finetune_epoch", counts["retain"], per_batch["finetune_step"]),
        (
            "dlfd paper, synthesis every batch",
            "dlfd_paper_every_batch",
            counts["retain"],
            per_batch["dlfd_paper_batch"],
        ),
        ("official per-batch evaluation", "official_evaluation", counts["retain"], evaluation),
        (
            "dlfd official schedule (synth + eval)",
            "dlfd_official_schedule",
            counts["retain"],
            per_batch["dlfd_official_batch"] + evaluation,
        ),
        (
            f"dlfd paper, updates={config['updates']} (upper bound)",
            "dlfd_updates_upper_bound",
            config["updates"],
            per_batch["dlfd_paper_batch"],
        ),
    ]
    print(f"{'schedule (projected)':<40} {'batches':>8} {'s/batch':>10} {'s':>10} {'x FT ep':>8}")
    for label, key, count, cost in rows:
        print(f"{label:<40} {count:8d} {cost:10.4g} {seconds[key]:10.4g} {ratios[key]:8.2f}")
    updates = f"upper bound, {config['updates']} updates (all synthesising)"
    for label, key, note in (
        (
            "projected DLFD, synthesis every batch",
            "dlfd_paper_every_batch",
            f"target <= K+2 = {k + 2}",
        ),
        ("projected official schedule", "dlfd_official_schedule", "synthesis + full evaluation"),
        (updates, "dlfd_updates_upper_bound", "paper mode, fixed updates budget"),
    ):
        print(f"{label + ' / FT epoch':<56}: {ratios[key]:7.2f}  ({note})")


if __name__ == "__main__":
    main()
