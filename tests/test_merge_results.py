"""``benchmarks/merge_results.py``: several bench folders joined into one report input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dlfd.report.build import load_results
from test_report import write_bench_dir

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("merge_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_merge_keeps_first_records_renames_and_copies_run_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write_bench_dir(first)
    write_bench_dir(second)
    out = tmp_path / "merged"
    kept, dropped = _module().merge([str(first), f"{second}:dlfd=dlfd_variant"], out)
    original = load_results(first)
    methods = {r["method"] for r in original}
    variant_runs = [r for r in original if r["method"] == "dlfd"]
    assert dropped == len(original) - len(variant_runs)  # b's other rows duplicate a's
    assert kept == len(original) + len(variant_runs)
    merged = load_results(out)
    assert {r["method"] for r in merged} == methods | {"dlfd_variant"}
    for record in merged:
        run = json.loads((out / record["run_file"]).read_text())
        assert run["method"] == record["method"]
        assert record["run_file"] == f"seed-{record['seed']}/{record['method']}.result.json"
    renamed = next(r for r in merged if r["method"] == "dlfd_variant")
    source = next(r for r in variant_runs if r["seed"] == renamed["seed"])
    assert renamed["metrics"] == source["metrics"]
