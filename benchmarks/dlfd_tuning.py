"""Choosing DLFD's defaults without test data: variants compared on validation metrics only.

For each variant (a set of DLFD settings) it runs ``dlfd bench`` on tuning seeds (never the
reported ones) into ``OUT/<variant>/``, next to one base run (original, retrained reference,
fine-tuning) in ``OUT/base/``, and prints, per variant, mean over seeds of quantities that do
not read the test split:

* ``val_acc``, ``retain_acc``, ``forget_acc`` and their gaps to the retrained reference of the
  same seed; ``val_gap`` = the mean of the three gaps (the validation twin of ``avg_gap``);
* ``cost``: the variant's wall time in fine-tuning-epoch equivalents (the base run's
  fine-tuning wall time per epoch, same seed, same machine); ``monitor``: the share of the
  variant's wall time spent monitoring.

The test split's metrics are in the records, but this script never prints them: choose on
what it shows. Runs are cached and resumable (they are bench runs).

    python benchmarks/dlfd_tuning.py -d orl-glasses --seeds 20-23 --out runs/tune-orl-glasses \
        [--variants paper,u24,...] [--list]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from dlfd.cli import main as dlfd_main

#: Name -> DLFD settings. ``paper`` is today's default; the others add one idea at a time.
VARIANTS: dict[str, dict[str, object]] = {
    "paper": {},
    "u12": {"updates": 12},
    "u24": {"updates": 24},
    "u24-k5": {"updates": 24, "steps": 5},
    "u12-conf": {"updates": 12, "match": "confidence"},
    "u24-conf": {"updates": 24, "match": "confidence"},
    "u24-conf-confident": {
        "updates": 24,
        "match": "confidence",
        "switch_z": 1.0,
        "switch_patience": 2,
    },
    "u24-conf0.1": {"updates": 24, "match": "confidence", "match_weight": 0.1},
    "u24-conf0.1-confident": {
        "updates": 24,
        "match": "confidence",
        "match_weight": 0.1,
        "switch_z": 1.0,
        "switch_patience": 2,
    },
    "u24-conf0.03-confident": {
        "updates": 24,
        "match": "confidence",
        "match_weight": 0.03,
        "switch_z": 1.0,
        "switch_patience": 2,
    },
    "u24-lr.001": {"updates": 24, "lr": 0.001},
    "u24-lr.001-confident": {"updates": 24, "lr": 0.001, "switch_z": 1.0, "switch_patience": 2},
    "u24-conf-lr.001-confident": {
        "updates": 24,
        "lr": 0.001,
        "match": "confidence",
        "switch_z": 1.0,
        "switch_patience": 2,
    },
    "u24-conf0.3-lr.001-confident": {
        "updates": 24,
        "lr": 0.001,
        "match": "confidence",
        "match_weight": 0.3,
        "switch_z": 1.0,
        "switch_patience": 2,
    },
    "u24-feat": {"updates": 24, "match": "features"},
    "u24-head": {"updates": 24, "reinit": "head"},
    "u24-sal": {"updates": 24, "reinit": "saliency", "reinit_fraction": 0.1},
}
BASE_METHODS = "original,retrain,finetune"
SHOWN = ("val_acc", "retain_acc", "forget_acc")


def bench(dataset: str, seeds: str, out: Path, methods: str, settings: dict[str, object]) -> None:
    argv = ["bench", "-d", dataset, "--methods", methods, "--seeds", seeds, "--out", str(out)]
    for key, value in settings.items():
        argv += ["--set", f"dlfd.{key}={value}"]
    try:
        dlfd_main(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


def records(folder: Path, method: str) -> dict[int, dict]:
    """Seed -> the method's result record in ``folder``."""
    found = {}
    for path in sorted(folder.glob(f"seed-*/{method}.result.json")):
        record = json.loads(path.read_text())
        found[int(record["seed"])] = record
    return found


def summarise(out: Path, variant: str) -> dict[str, float] | None:
    reference = records(out / "base", "retrain")
    finetune = records(out / "base", "finetune")
    runs = records(out / variant, "dlfd")
    seeds = sorted(set(runs) & set(reference) & set(finetune))
    if not seeds:
        return None
    rows: dict[str, list[float]] = {key: [] for key in (*SHOWN, "val_gap", "cost", "monitor")}
    for seed in seeds:
        metrics, ref = runs[seed]["metrics"], reference[seed]["metrics"]
        gaps = [abs(metrics[key] - ref[key]) for key in SHOWN]
        for key in SHOWN:
            rows[key].append(metrics[key])
        rows["val_gap"].append(sum(gaps) / len(gaps))
        ft = finetune[seed]
        epochs = ft["config"].get("params", {}).get("epochs", 2)
        rows["cost"].append(runs[seed]["wall_s"] / (ft["wall_s"] / epochs))
        rows["monitor"].append(runs[seed]["monitor_s"] / max(runs[seed]["wall_s"], 1e-9))
    summary = {key: statistics.fmean(values) for key, values in rows.items()}
    summary["seeds"] = len(seeds)
    summary["val_gap_sd"] = statistics.stdev(rows["val_gap"]) if len(seeds) > 1 else 0.0
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--seeds", required=True, help="tuning seeds, e.g. 20-23")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--summary-only", action="store_true", help="print, run nothing")
    parser.add_argument("--list", action="store_true", help="show the variants and exit")
    args = parser.parse_args()
    if args.list:
        for name, settings in VARIANTS.items():
            print(f"{name:<22} {settings}")
        return
    names = [name for name in args.variants.split(",") if name]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants: {', '.join(unknown)} (see --list)")
    if not args.summary_only:
        bench(args.dataset, args.seeds, args.out / "base", BASE_METHODS, {})
        for name in names:
            bench(args.dataset, args.seeds, args.out / name, "dlfd", VARIANTS[name])
    reference = records(args.out / "base", "retrain")
    if reference:
        ref = {k: statistics.fmean(r["metrics"][k] for r in reference.values()) for k in SHOWN}
        print(f"\n{args.dataset}, tuning seeds {args.seeds}; reference (retrained): "
              + ", ".join(f"{k} {v:.3f}" for k, v in ref.items()))  # fmt: skip
    columns = (*SHOWN, "val_gap", "cost", "monitor")
    header = f"{'variant':<22}" + "".join(f"{k:>12}" for k in columns)
    print(header + f"{'seeds':>7}")
    for name in names:
        row = summarise(args.out, name)
        if row is None:
            print(f"{name:<22}  (no finished runs)")
            continue
        cells = "".join(f"{row[k]:12.3f}" for k in columns)
        print(f"{name:<22}{cells}{int(row['seeds']):7d}")


if __name__ == "__main__":
    main()
