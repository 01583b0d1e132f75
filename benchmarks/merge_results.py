"""Join the records of several bench folders into one, so one `dlfd report` compares them.

Benches run on the same scenario and seeds reuse the same cached originals and references, so
their records pair seed by seed. Each input is ``FOLDER`` or ``FOLDER:OLD=NEW`` (rename method
``OLD`` to ``NEW``, e.g. a DLFD variant run with other settings: ``runs/v:dlfd=dlfd_u24``). The
first folder that holds a (method, seed) wins; later duplicates are left out and counted.
Run records are copied (with the new name) into ``OUT/seed-<s>/<method>.result.json`` and
``OUT/results.json`` lists them; models and per-example files are not copied.

    python benchmarks/merge_results.py --out runs/evidence-glasses runs/grid-glasses \
        runs/grid-glasses-rest runs/u24k5-glasses:dlfd=dlfd_u24k5
    dlfd report runs/evidence-glasses
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlfd.bench.records import RESULTS_FILE, validate_bench_record
from dlfd.io import atomic_write_json, read_json_file
from dlfd.report.build import run_file_path


def parse_input(spec: str) -> tuple[Path, dict[str, str]]:
    """``FOLDER`` or ``FOLDER:OLD=NEW[,OLD2=NEW2]`` -> (folder, renames)."""
    folder, _, renames = spec.partition(":")
    mapping = {}
    for item in filter(None, renames.split(",")):
        old, eq, new = item.partition("=")
        if not eq or not old or not new:
            sys.exit(f"error: rename {item!r} must be OLD=NEW")
        mapping[old] = new
    return Path(folder), mapping


def merge(inputs: list[str], out: Path) -> tuple[int, int]:
    """Write the merged folder; returns (records kept, duplicates left out)."""
    seen: set[tuple[str, int]] = set()
    merged: list[dict] = []
    dropped = 0
    for spec in inputs:
        folder, renames = parse_input(spec)
        records = read_json_file(folder / RESULTS_FILE, RESULTS_FILE, limit=256 << 20)
        for k, record in enumerate(records):
            validate_bench_record(record, f"{folder / RESULTS_FILE} record {k}")
            method = renames.get(record["method"], record["method"])
            key = (method, int(record["seed"]))
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            source = run_file_path(folder, record["run_file"], str(folder))
            run = read_json_file(source, "run record")
            run_file = f"seed-{key[1]}/{method}.result.json"
            for entry in (record, run):
                entry["method"] = method
                entry["run_file"] = run_file
            (out / f"seed-{key[1]}").mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / run_file, run)
            merged.append(record)
    atomic_write_json(out / RESULTS_FILE, merged)
    return len(merged), dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder (must not exist)")
    parser.add_argument("inputs", nargs="+", help="FOLDER or FOLDER:OLD=NEW")
    args = parser.parse_args()
    if args.out.exists():
        sys.exit(f"error: {args.out} exists; choose a new folder")
    kept, dropped = merge(args.inputs, args.out)
    print(json.dumps({"out": str(args.out), "records": kept, "duplicates_left_out": dropped}))


if __name__ == "__main__":
    main()
