"""``dlfd bench``: a tiny benchmark end to end, resuming, half-written runs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FAST_BENCH
from dlfd.bench import BenchPlan, load_recipe_file, resolve_methods, split_settings, validate_plan
from dlfd.cli import main
from dlfd.errors import ConfigError

RECIPES = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes"
TINY = [
    "--dataset",
    "orl-glasses",
    *FAST_BENCH,
    "--set",
    "finetune.epochs=1",
    "--seeds",
    "0",
]
METHODS = ["original", "retrain", "finetune"]
RECORD_KEYS = {
    "method",
    "seed",
    "dataset",
    "config",
    "metrics",
    "wall_s",
    "monitor_s",
    "hardware",
    "versions",
    "hashes",
    "run_file",
}
METRIC_KEYS = {
    "test_acc",
    "retain_acc",
    "forget_acc",
    "unseen_acc",
    "mia_acc",
    "forgetting_score",
    "nomus",
    "gap_test_acc",
    "gap_forget_acc",
    "gap_mia_acc",
    "avg_gap",
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``dlfd ARGS`` in-process; returns (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bench(
    capsys: pytest.CaptureFixture[str],
    out: Path,
    cache: Path,
    *extra: str,
    methods: list[str] = METHODS,
) -> str:
    code, _, err = run(
        capsys,
        "bench",
        *TINY,
        "--methods",
        ",".join(methods),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        *extra,
    )
    assert code == 0, err
    return err


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny bench (seed 0: original, retrain, finetune) with the default cache location
    (``$DLFD_CACHE_DIR``); returns (out dir, cache dir for ``--cache-dir``)."""
    root = tmp_path_factory.mktemp("bench")
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLFD_CACHE_DIR", str(root))  # references go to root/references
        try:
            main(["bench", *TINY, "--methods", ",".join(METHODS), "--quiet", "--out", str(out)])
        except SystemExit as exc:
            assert not exc.code, "the tiny bench failed"
    return out, root


def results(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def test_records_have_the_schema(first: tuple[Path, Path]) -> None:
    out, _ = first
    records = results(out)
    assert [(r["method"], r["seed"]) for r in records] == [(m, 0) for m in METHODS]
    by_method = {r["method"]: r for r in records}
    for rec in records:
        assert set(rec) >= RECORD_KEYS, RECORD_KEYS - set(rec)
        assert set(rec["metrics"]) >= METRIC_KEYS, METRIC_KEYS - set(rec["metrics"])
        assert rec["dataset"] == "orl-glasses" and "details" not in rec
        assert rec["hashes"]["original_sha256"] == by_method["original"]["hashes"]["weights_sha256"]
        model = out / f"seed-0/{rec['method']}.safetensors"
        assert rec["model"] == f"seed-0/{rec['method']}.safetensors" and model.is_file()
        full = json.loads((out / rec["run_file"]).read_text())
        assert {"losses", "projection"} <= set(full["details"])
        assert len(full["details"]["losses"]["forget"]) == rec["split_sizes"]["forget"]
    assert by_method["original"]["wall_s"] == 0.0
    assert by_method["retrain"]["wall_s"] > 0  # its training time
    assert (
        by_method["retrain"]["hashes"]["weights_sha256"]
        == (by_method["retrain"]["hashes"]["reference_sha256"])
    )
    assert by_method["retrain"]["metrics"]["avg_gap"] == 0.0
    assert by_method["finetune"]["config"]["params"]["epochs"] == 1
    assert (out / "bench.log").is_file()


def test_rerun_skips_finished_runs(
    capsys: pytest.CaptureFixture[str], first: tuple[Path, Path]
) -> None:
    out, cache = first
    before = (out / "results.json").read_text()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "seed-0").iterdir()}
    err = bench(capsys, out, cache)  # not quiet: exercises the progress display
    assert "0 run(s) done now, 3 reused" in err
    log = (out / "bench.log").read_text()
    assert log.count("finetune finished earlier") == 1 and "reused from cache" in log
    assert (out / "results.json").read_text() == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "seed-0").iterdir()} == mtimes


def test_half_written_runs_are_redone_not_read(
    capsys: pytest.CaptureFixture[str], first: tuple[Path, Path], tmp_path: Path
) -> None:
    src, cache = first
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    seed = out / "seed-0"
    reference = {r["method"]: r for r in results(src)}
    (seed / "finetune.safetensors").unlink()  # a record without its model
    (seed / "original.result.json").write_text('{"format": "dlfd-bench-run/1", "meth')  # torn
    leftover = seed / ".retrain.result.json.x1y2.tmp"  # an interrupted atomic write
    leftover.write_text('{"garbage": true}')
    err = bench(capsys, out, cache, "--quiet")
    assert "2 run(s) done now, 1 reused" in err
    assert not leftover.exists()
    log = (out / "bench.log").read_text()
    assert "finetune running (seed-0/finetune.safetensors is missing)" in log
    assert "original running (original.result.json is unreadable)" in log
    assert "removed a leftover temporary file" in log
    for rec in results(out):
        assert rec["hashes"] == reference[rec["method"]]["hashes"]  # same models again
        assert rec["metrics"]["test_acc"] == reference[rec["method"]]["metrics"]["test_acc"]


def test_no_save_models(
    capsys: pytest.CaptureFixture[str], first: tuple[Path, Path], tmp_path: Path
) -> None:
    _, cache = first
    out = tmp_path / "nomodels"
    bench(capsys, out, cache, "--quiet", "--no-save-models", methods=["finetune"])
    assert not list(out.rglob("*.safetensors"))
    saved = {r["method"]: r for r in results(first[0])}
    for rec in results(out):
        assert rec["hashes"] == saved[rec["method"]]["hashes"]
        assert rec["model"] is None and len(rec["hashes"]["weights_sha256"]) == 64


def test_jobs_run_whole_runs_in_processes(
    capsys: pytest.CaptureFixture[str], first: tuple[Path, Path], tmp_path: Path
) -> None:
    src, cache = first
    out = tmp_path / "pool"
    code, _, err = run(
        capsys,
        "bench",
        *TINY,
        "--methods",
        "original,retrain",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--jobs",
        "2",
    )
    assert code == 0, err
    here = {r["method"]: r for r in results(src)}
    for rec in results(out):
        assert rec["hashes"]["weights_sha256"] == here[rec["method"]]["hashes"]["weights_sha256"]
        assert rec["metrics"]["test_acc"] == here[rec["method"]]["metrics"]["test_acc"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "finetune,nope"], "unknown method 'nope'"),
        (["--methods", "finetune", "--set", "finetune.nope=1"], "unknown setting 'nope'"),
        (["--methods", "finetune", "--set", "original.lr=1"], "'original.*' settings"),
        (["--methods", "finetune", "--set", "recipe.epochz=1"], "unknown setting 'epochz'"),
        (["--methods", "finetune", "--set", "lr=1"], "must be HEAD.KEY"),
        (["--methods", "finetune", "--seeds", "0,x"], "seeds must be non-negative"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run(
        capsys, "bench", "-d", "orl-glasses", "--out", str(tmp_path / "o"), "--quiet", *args
    )
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_committed_recipes_are_valid(path: Path) -> None:
    recipe = load_recipe_file(path)
    assert recipe.dataset in ("mufac", "mucac", "rafdb")
    recipe_settings, settings = split_settings(recipe.settings)
    plan = BenchPlan(
        dataset=recipe.dataset,
        out=Path("unused"),
        methods=resolve_methods(recipe.methods),
        options=recipe.options,
        recipe=recipe_settings,
        settings=settings,
    )
    validate_plan(plan)  # every method exists and every setting names a real field


def test_recipe_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('dataset = "mufac"\nepochs = 3\n')
    with pytest.raises(ConfigError, match="unknown key 'epochs'"):
        load_recipe_file(bad)
    bad.write_text('dataset = "mufac"\n[set]\nlr = 0.1\n')
    with pytest.raises(ConfigError, match=r"set.lr must be a table"):
        load_recipe_file(bad)


def test_recipe_file_drives_the_cli(
    capsys: pytest.CaptureFixture[str], first: tuple[Path, Path], tmp_path: Path
) -> None:
    _, cache = first
    recipe = tmp_path / "tiny.json"
    recipe.write_text(
        json.dumps(
            {
                "dataset": "orl-glasses",
                "methods": ["original"],
                "seeds": [0],
                "image_size": 16,
                "set": {"recipe": {"model": "small_cnn", "epochs": 1, "batch_size": 64}},
            }
        )
    )
    out = tmp_path / "from-recipe"
    code, stdout, err = run(
        capsys, "bench", "--recipe", str(recipe), "--out", str(out), "--cache-dir", str(cache), "-q"
    )
    assert code == 0, err
    assert "reused from cache" in (out / "bench.log").read_text()  # same models as the CLI's
    assert [r["method"] for r in results(out)] == ["original"] and "original" in stdout
