"""``dlfd bench --backend ray``: the same records as the local backend, a killed worker's run
retried, Ray's options refused without it, the install hint without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_BENCH
from dlfd.cli import main

pytest.importorskip("ray")

#: finetune long enough (a few seconds a run) for a worker to be killed in the middle of one
BENCH = [
    "--dataset",
    "orl-glasses",
    *FAST_BENCH,
    "--set",
    "finetune.epochs=12",
    "--methods",
    "original,retrain,finetune",
    "--seeds",
    "0,1",
    "--quiet",
]
#: Fields of a record that say how long something took, or when and where it ran.
TIMING = {"wall_s", "train_s", "monitor_s", "eval_s", "created", "hardware"}


def run_cli(*args: str | Path) -> int:
    """``dlfd ARGS`` in-process; returns the exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def records(out: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """The full run records of a bench folder, by (seed, method)."""
    listed = json.loads((out / "results.json").read_text())
    return {(r["seed"], r["method"]): json.loads((out / r["run_file"]).read_text()) for r in listed}


def assert_same_runs(out: Path, expected: Path) -> None:
    """Every run of ``expected`` is in ``out`` with the same numbers, hashes, configuration
    and model file; only timings differ."""
    got, want = records(out), records(expected)
    assert sorted(got) == sorted(want)
    for key, record in want.items():
        other = got[key]
        assert other["metrics"] == record["metrics"], key
        assert other["hashes"] == record["hashes"], key
        assert other["config_sha256"] == record["config_sha256"], key
        assert {k: v for k, v in other.items() if k not in TIMING | {"details"}} == {
            k: v for k, v in record.items() if k not in TIMING | {"details"}
        }, key
        assert other["details"]["losses"] == record["details"]["losses"], key
        model = f"seed-{key[0]}/{key[1]}.safetensors"
        assert (out / model).read_bytes() == (expected / model).read_bytes(), key


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The bench run by the local backend; returns (its folder, the cache). It runs on one
    thread, as each Ray task does (``--task-cpus`` 1): a float sum's order, and so the last
    bits of the numbers, depends on the thread count."""
    import torch

    root = tmp_path_factory.mktemp("bench-ray")
    out, cache = root / "local", root / "cache"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_cli("bench", *BENCH, "--out", out, "--cache-dir", cache) == 0
    finally:
        torch.set_num_threads(threads)
    return out, cache


def test_ray_writes_the_local_backends_records(
    local: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected, cache = local
    out = tmp_path / "ray"
    (out / "seed-1").mkdir(parents=True)
    for name in ("original.result.json", "original.safetensors", "original.json"):
        shutil.copy(expected / "seed-1" / name, out / "seed-1" / name)  # finished earlier
    capsys.readouterr()
    code = run_cli("bench", *BENCH, "--out", out, "--cache-dir", cache, "--backend", "ray", "-j", 2)
    assert code == 0, capsys.readouterr().err
    assert "5 run(s) done now, 1 reused" in capsys.readouterr().err
    log = (out / "bench.log").read_text()
    assert "backend ray (a local cluster)" in log and "ray: 2 CPU(s) in the cluster" in log
    assert "seed 1: original finished earlier" in log and "seed 1: original running" not in log
    assert_same_runs(out, expected)


def _descendants(root: int) -> list[int]:
    """The processes below ``root`` (from /proc; the ones gone meanwhile are skipped)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def _worker_running(root: int, title: bytes) -> int | None:
    """The pid of a Ray worker below ``root`` whose title (``ray::TASK NAME``) is ``title``."""
    for pid in _descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.split(b"\0", 1)[0].strip() == title:
            return pid
    return None


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_killed_workers_run_is_retried(local: tuple[Path, Path], tmp_path: Path) -> None:
    expected, cache = local
    out = tmp_path / "killed"
    args = [*BENCH, "--out", str(out), "--cache-dir", str(cache), "--backend", "ray", "-j", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bench = subprocess.Popen(
        [sys.executable, "-m", "dlfd", "bench", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        title, victim, deadline = b"ray::dlfd-bench seed 0: finetune", None, time.time() + 120
        while victim is None and bench.poll() is None and time.time() < deadline:
            victim = _worker_running(bench.pid, title)
            time.sleep(0.1)
        assert victim is not None, "no worker ran seed 0's finetune"
        time.sleep(0.2)  # inside the run (a few seconds long)
        os.kill(victim, signal.SIGKILL)
        output, _ = bench.communicate(timeout=180)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, output.decode()
    log = (out / "bench.log").read_text()
    assert "seed 0: finetune started again (attempt 2" in log
    assert "6 run(s) now, 0 reused, 0 failed" in log
    assert_same_runs(out, expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "127.0.0.1:6379"], "--address needs --backend ray"),
        (["--task-cpus", "2"], "--task-cpus needs --backend ray"),
        (["--backend", "ray", "--address", "auto", "-j", "2"], "--jobs sizes the local Ray"),
        (["--backend", "dask"], "unknown --backend 'dask'"),
        (["--backend", "ray", "--device", "cuda:1"], "Ray gives each task its GPU"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at"),
    ],
)
def test_ray_options_are_checked_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "o"
    assert run_cli("bench", "-d", "orl-glasses", "--methods", "original", "--out", out, *args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # refused before any work


def test_without_ray_the_install_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "o"
    code = run_cli(
        "bench", "-d", "orl-glasses", "--methods", "original", "--out", out, "--backend", "ray"
    )
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'dlfd[ray]'" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
