"""``dlfd bench --forget FILE``: the user's forget list drives the split of the originals, the
references and every method; the cache and the records follow the forget set; a folder holds
the runs of one forget request; bad lists are refused before any training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST_BENCH
from dlfd.bench.plan import forget_request_sha256
from dlfd.checkpoint import read_meta
from dlfd.io import sha256_bytes
from dlfd.scenarios import get_scenario

Cli = Callable[..., tuple[int, str, str]]
TINY = ["--dataset", "orl-glasses", *FAST_BENCH, "--set", "finetune.epochs=1", "--quiet"]
ONE_SPLIT = ["--seeds", "0", "--split-seed", "0"]


def _split(seed: int = 0):
    return get_scenario("orl-glasses", split_seed=seed, image_size=16).problem


def _people(indices) -> list[str]:
    records = _split().records
    return sorted({records.identities[i] for i in indices})


@pytest.fixture(scope="module")
def lists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Forget lists for split seed 0: two retained people (``a``), another one (``b``), ``a``
    reordered with a comment (``a_again``), and bad ones."""
    root = tmp_path_factory.mktemp("lists")
    problem = _split()
    retained = _people(problem.retain)
    in_test = _people(problem.test)
    texts = {
        "a": f"{retained[0]}\n{retained[1]}\n",
        "a_again": f"# the same people\n{retained[1]}\n{retained[0]}\n{retained[0]}\n",
        "b": f"{retained[2]}\n",
        "unknown": "nobody-of-that-name\n",
        "empty": "# names nobody\n\n",
        "not_in_train": f"{in_test[0]}\n",
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = root / f"{name}.txt"
        paths[name].write_text(text)
    paths["folder"] = root / "a-folder"
    paths["folder"].mkdir()
    paths["missing"] = root / "missing.txt"
    return paths


@pytest.fixture(scope="module")
def bench_a(
    tmp_path_factory: pytest.TempPathFactory, lists: dict[str, Path]
) -> tuple[Path, Path, str]:
    """One tiny bench with list ``a`` (original, retrain, finetune); (out, cache, stderr)."""
    from dlfd.cli import main

    root = tmp_path_factory.mktemp("bench-forget")
    out, cache = root / "a", root / "cache"
    args = ["bench", *TINY, *ONE_SPLIT, "--methods", "original,retrain,finetune"]
    try:
        main([*args, "--forget", str(lists["a"]), "--out", str(out), "--cache-dir", str(cache)])
    except SystemExit as exc:
        assert not exc.code, "the tiny bench with a forget list failed"
    return out, cache, (out / "bench.log").read_text()


def _results(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def _cache(cache: Path) -> set[str]:
    return {p.name for p in (cache / "references").glob("*.safetensors")}


def test_the_forget_list_sets_every_runs_split(
    bench_a: tuple[Path, Path, str], lists: dict[str, Path]
) -> None:
    out, _, log = bench_a
    problem = _split()
    named = lists["a"].read_text().split()
    keys = sorted(
        problem.records.paths[i] for i in problem.train if problem.records.identities[i] in named
    )
    forget_sha = sha256_bytes("\n".join(keys).encode("utf-8"))
    assert forget_sha != problem.forget_sha256  # not the scenario's own forget set
    records = _results(out)
    assert [r["method"] for r in records] == ["original", "retrain", "finetune"]
    for record in records:
        assert record["split_sizes"]["forget"] == len(keys)
        assert record["config"]["forget_sha256"] == forget_sha
        assert record["hashes"]["forget_sha256"] == forget_sha
        assert record["config"]["forget_request_sha256"] == forget_request_sha256(named)
        assert record["forget_request"] == {
            "file": str(lists["a"]),
            "entries": 2,
            "sha256": forget_request_sha256(named),
        }
        full = json.loads((out / record["run_file"]).read_text())
        assert len(full["details"]["losses"]["forget"]) == len(keys)
    for row in ("original", "retrain", "finetune"):  # the models were made for that split
        meta = read_meta(out / "seed-0" / f"{row}.safetensors")
        assert meta.forget_sha256 == forget_sha
    assert f"forget set from {lists['a']}: {len(keys)} training images of 2 people" in log


def test_other_lists_get_their_own_references(
    cli: Cli, bench_a: tuple[Path, Path, str], lists: dict[str, Path], tmp_path: Path
) -> None:
    out_a, cache, _ = bench_a
    before = _cache(cache)
    assert len(before) == 2  # list a's original and reference
    out_b = tmp_path / "b"
    code, _, err = cli("bench", *TINY, *ONE_SPLIT, "--methods", "original,retrain",
                       "--forget", lists["b"], "--out", out_b, "--cache-dir", cache)  # fmt: skip
    assert code == 0, err
    assert len(_cache(cache)) == 4 and before < _cache(cache)  # two more, none replaced
    a = {r["method"]: r for r in _results(out_a)}
    b = {r["method"]: r for r in _results(out_b)}
    for row in ("original", "retrain"):
        assert b[row]["split_sizes"]["forget"] == 10  # one person
        assert (
            b[row]["config"]["original_config_sha256"] != a[row]["config"]["original_config_sha256"]
        )
        assert (
            b[row]["config"]["reference_config_sha256"]
            != a[row]["config"]["reference_config_sha256"]
        )

    # the same request from another file (reordered, a comment, a repeated line) reuses them
    four = _cache(cache)
    out_again = tmp_path / "a-again"
    code, _, err = cli("bench", *TINY, *ONE_SPLIT, "--methods", "original",
                       "--forget", lists["a_again"], "--out", out_again,
                       "--cache-dir", cache)  # fmt: skip
    assert code == 0, err
    assert (out_again / "bench.log").read_text().count("reused from cache") == 2
    assert _cache(cache) == four
    (again,) = _results(out_again)
    assert again["hashes"]["weights_sha256"] == a["original"]["hashes"]["weights_sha256"]


def test_a_folder_holds_one_forget_request(
    cli: Cli, bench_a: tuple[Path, Path, str], lists: dict[str, Path]
) -> None:
    out, cache, _ = bench_a
    results = (out / "results.json").read_bytes()
    cached = _cache(cache)
    base = ["bench", *TINY, *ONE_SPLIT, "--methods", "original,retrain,finetune",
            "--out", out, "--cache-dir", cache]  # fmt: skip
    for other in (["--forget", lists["b"]], []):  # another list; the scenario's own set
        code, _, err = cli(*base, *other)
        assert code == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err
        assert str(lists["a"]) in lines[0] and "another --out" in lines[0]
        assert (out / "results.json").read_bytes() == results
        assert _cache(cache) == cached

    code, _, err = cli(*base, "--forget", lists["a_again"])  # the same request resumes
    assert code == 0, err
    assert "0 run(s) done now, 3 reused" in err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("unknown", "unknown people or images: 'nobody-of-that-name'"),
        ("empty", "names nobody"),
        ("not_in_train", "has no training images (in test)"),
        ("missing", "not found"),
        ("folder", "forget list"),
    ],
)
def test_bad_lists_are_refused_before_any_training(
    cli: Cli, lists: dict[str, Path], tmp_path: Path, name: str, message: str
) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    code, _, err = cli("bench", *TINY, *ONE_SPLIT, "--methods", "original",
                       "--forget", lists[name], "--out", out, "--cache-dir", cache)  # fmt: skip
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err  # no banner before it
    assert message in lines[0]
    assert not out.exists() and not cache.exists()


def test_a_list_that_misses_some_seeds_split_names_it(
    cli: Cli, lists: dict[str, Path], tmp_path: Path
) -> None:
    named = lists["a"].read_text().split()
    misses = [s for s in range(10) if not set(named) <= set(_people(_split(s).train))]
    assert misses, "every split of seeds 0-9 keeps these people in train"
    out = tmp_path / "out"
    code, _, err = cli("bench", *TINY, "--seeds", f"0-{misses[0]}", "--methods", "original",
                       "--forget", lists["a"], "--out", out,
                       "--cache-dir", tmp_path / "cache")  # fmt: skip
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert f"split seed {misses[0]}" in lines[0] and "--split-seed" in lines[0]
    assert not out.exists()


def test_the_report_names_the_forget_request(
    bench_a: tuple[Path, Path, str], lists: dict[str, Path], tmp_path: Path
) -> None:
    from dlfd.report import build_report

    out, _, _ = bench_a
    build_report(out, html_path=tmp_path / "r.html", md_path=tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    record = _results(out)[0]
    sha = record["forget_request"]["sha256"]
    assert f"forget request {lists['a']} (2 entries, sha256 {sha[:12]})" in text
    assert record["config"]["forget_sha256"][:12] in text
