"""Faults: processes killed at any point, NaN losses, and one clear line for every user error.

A real ``dlfd unlearn`` and a real ``dlfd train`` are killed with SIGKILL mid-run: no output a
later command would read is left, the original checkpoint is untouched, and a rerun completes
(``train`` from its last complete epoch, to the same weights as an uninterrupted run). Kills at
each boundary of a checkpoint or resume-state write (forked children that SIGKILL themselves
there) show that every reachable file state is either complete or refused. NaN/inf losses
stop ``dlfd unlearn`` and ``dlfd train`` with a one-line message; every user error of the CLI
exits 2 with one ``error:`` line, and ``--debug`` raises the exception instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from dlfd.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint, sidecar_path
from dlfd.cli import main
from dlfd.config import Bounds
from dlfd.data.transforms import InputSpec
from dlfd.errors import CheckpointError, DlfdError
from dlfd.io import sha256_file
from dlfd.models import create_model
from dlfd.recipe import TrainRecipe
from dlfd.training.loop import make_optimizer
from dlfd.training.resume import ResumePaths, load_resume_state, save_resume_state

DLFD = str(Path(sys.executable).with_name("dlfd"))
TINY = ["--model", "small_cnn", "--image-size", "8", "--set", "batch_size=64"]
CPU = ["--device", "cpu", "--quiet"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``dlfd ARGS`` in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pair_digest(path: Path) -> tuple[str, str]:
    return sha256_file(path), sha256_file(sidecar_path(path))


def only_temporaries(folder: Path, *expected: str) -> None:
    """Apart from ``expected`` names, ``folder`` holds at most temporary files (``.*.tmp``),
    which no command reads, and the lock files of a killed writer (``.*.lock``)."""
    for entry in folder.iterdir():
        if entry.name not in expected:
            assert entry.name.startswith(".") and entry.name.endswith((".tmp", ".lock")), entry.name


@contextlib.contextmanager
def spawned(args: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real ``dlfd`` process (one torch thread, like the in-process runs it is compared with)
    with its stderr in a file; killed on the way out if still running."""
    log = cwd / "stderr.log"
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [DLFD, *map(str, args)], cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, log: Path) -> None:
    """Poll ``condition`` until it holds or ``proc`` has ended (failing then with its log)."""
    deadline = time.monotonic() + 300
    while not condition():
        if proc.poll() is not None:
            return
        assert time.monotonic() < deadline, f"timed out; stderr: {log.read_text()}"
        time.sleep(0.02)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread, as in the spawned processes, so float results match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny original checkpoint of orl-glasses (8x8 images, one epoch)."""
    path = tmp_path_factory.mktemp("faults") / "original.safetensors"
    try:
        main(
            ["train", "--dataset", "orl-glasses", "--epochs", "1", "--out", str(path), *TINY, *CPU]
        )
    except SystemExit as exc:
        assert not exc.code, "training the original failed"
    return path


# ------------------------------------------------------------------------------ kill -9
def test_killed_unlearn_leaves_nothing_and_a_rerun_completes(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = pair_digest(original)
    out = tmp_path / "unlearned.safetensors"
    args = ["unlearn", "--model", original, "--out", out, "--method", "finetune", *CPU]
    # 500 epochs: the run is still training long after it announces itself
    with spawned([*args, "--set", "epochs=500"], tmp_path) as (proc, log):
        wait_until(lambda: "finetune on orl-glasses" in log.read_text(), proc, log)
        assert proc.poll() is None, f"dlfd unlearn ended early: {log.read_text()}"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert not out.exists() and not sidecar_path(out).exists()
    only_temporaries(tmp_path, "stderr.log")
    assert pair_digest(original) == before

    code, _, err = run(capsys, *args, "--set", "epochs=1")
    assert code == 0, err
    _, meta = load_checkpoint(out)
    assert meta.role == "unlearned" and meta.extra["original_sha256"] == before[0]
    assert pair_digest(original) == before


def test_killed_train_resumes_to_the_uninterrupted_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "run" / "model.safetensors"
    out.parent.mkdir()
    resume = ResumePaths.for_checkpoint(out)
    for epochs in (5, 20):  # more epochs if the first run finished before it could be killed
        args = ["train", "--dataset", "orl-glasses", "--epochs", epochs, *TINY, *CPU]
        args += ["--resume-every", "0", "--out", out]
        with spawned(args, out.parent) as (proc, log):
            wait_until(resume.meta.is_file, proc, log)
            proc.send_signal(signal.SIGKILL)
            killed = proc.wait() == -signal.SIGKILL
        if killed and not out.exists():
            break
        assert killed or proc.returncode == 0, log.read_text()
        # it finished (or was killed just after its last write): again, with a longer run
        for path in (out, sidecar_path(out), resume.meta, resume.tensors):
            path.unlink(missing_ok=True)
    else:
        pytest.fail("dlfd train finished every time before it could be killed")
    assert not out.exists() and not sidecar_path(out).exists()
    done = json.loads(resume.meta.read_text())["epoch"]
    assert 1 <= done < epochs
    only_temporaries(out.parent, "stderr.log", resume.meta.name, resume.tensors.name)

    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert f"resumed after epoch {done}" in err
    assert not resume.meta.exists() and not resume.tensors.exists()
    straight = tmp_path / "straight.safetensors"
    code, _, err = run(capsys, *args[:-1], straight)
    assert code == 0, err
    resumed_model, resumed_meta = load_checkpoint(out)
    straight_model, straight_meta = load_checkpoint(straight)
    for key, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key
    assert resumed_meta.config_sha256 == straight_meta.config_sha256
    assert [h["epoch"] for h in resumed_meta.extra["history"]] == list(range(1, epochs + 1))


# Kill points of a two-file write: (n, when) = just before or just after its n-th rename.
KILL_POINTS = [(1, "before"), (1, "after"), (2, "before"), (2, "after")]
POINT_IDS = [f"{when}-rename-{n}" for n, when in KILL_POINTS]


def killed_at(point: tuple[int, str], write: Callable[[], None]) -> None:
    """Run ``write`` in a forked child that SIGKILLs itself at ``point``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)  # no OpenMP pool in a forked child
            real_replace, calls = os.replace, []

            def replace(src: str, dst: str) -> None:
                calls.append(dst)
                if (len(calls), "before") == point:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_replace(src, dst)
                if (len(calls), "after") == point:
                    os.kill(os.getpid(), signal.SIGKILL)

            os.replace = replace
            write()
        finally:
            os._exit(3)
    deadline = time.monotonic() + 120
    while (status := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked writer hung")
        time.sleep(0.01)
    assert os.WIFSIGNALED(status[1]) and os.WTERMSIG(status[1]) == signal.SIGKILL


def _meta(tag: str) -> CheckpointMeta:
    spec = InputSpec(size=(16, 16), channels=1, mean=(0.5,), std=(0.5,))
    return CheckpointMeta("small_cnn", 3, "multiclass", spec, role="original", extra={"t": tag})


# What a reader finds after a kill: sidecar then weights are renamed into place.
AFTER_FRESH_WRITE = ["absent", "absent", "absent", "new"]
AFTER_OVERWRITE = ["old", "torn", "torn", "new"]


@pytest.mark.parametrize("point", KILL_POINTS, ids=POINT_IDS)
@pytest.mark.parametrize("overwrite", [False, True], ids=["fresh", "overwrite"])
def test_checkpoint_write_killed_at_any_point(
    tmp_path: Path, point: tuple[int, str], overwrite: bool
) -> None:
    """Whatever the kill point, the checkpoint is the old one, the new one, absent (no weights
    file, so no --force is needed to rerun) or refused as torn, never a mix read as valid; and
    writing again completes."""
    torch.manual_seed(0)
    old_model, new_model = (create_model("small_cnn", 3, in_channels=1) for _ in range(2))
    path = tmp_path / "model.safetensors"
    if overwrite:
        save_checkpoint(old_model, path, _meta("old"))
    killed_at(point, lambda: save_checkpoint(new_model, path, _meta("new")))
    only_temporaries(tmp_path, path.name, sidecar_path(path).name)
    expected = (AFTER_OVERWRITE if overwrite else AFTER_FRESH_WRITE)[KILL_POINTS.index(point)]
    if expected == "absent":
        assert not path.exists()
        with pytest.raises(CheckpointError, match="not found"):
            load_checkpoint(path)
    elif expected == "torn":
        with pytest.raises(CheckpointError, match="does not match its sidecar"):
            load_checkpoint(path)
    else:
        loaded, meta = load_checkpoint(path)
        assert meta.extra["t"] == expected
        want = (old_model if expected == "old" else new_model).state_dict()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in want.items())
    save_checkpoint(new_model, path, _meta("new"))  # the rerun
    assert load_checkpoint(path)[1].extra["t"] == "new"


@pytest.mark.parametrize("point", KILL_POINTS, ids=POINT_IDS)
def test_resume_state_write_killed_at_any_point(tmp_path: Path, point: tuple[int, str]) -> None:
    """A resume state (tensors then JSON) torn by a kill is the previous state, the new one,
    or ignored, in which case the model keeps its initial weights and training starts over."""
    recipe = TrainRecipe(model="small_cnn")
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, in_channels=1)
    optimizer = make_optimizer(model, recipe)
    paths = ResumePaths.for_checkpoint(tmp_path / "m.safetensors")
    save_resume_state(paths, model, optimizer, epoch=1, config_sha256="c", history=[{"e": 1}])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    killed_at(
        point,
        lambda: save_resume_state(
            paths, model, optimizer, epoch=2, config_sha256="c", history=[{"e": 1}, {"e": 2}]
        ),
    )
    fresh = create_model("small_cnn", 3, in_channels=1)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    restored = load_resume_state(paths, fresh, make_optimizer(fresh, recipe), config_sha256="c")
    expected = [1, None, None, 2][KILL_POINTS.index(point)]
    assert (restored and restored[0]) == expected
    if expected is None:
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in initial.items())
    if expected == 2:
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------ NaN losses
@pytest.fixture
def unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let out-of-range settings past validation, as if an in-range combination diverged."""
    monkeypatch.setattr(Bounds, "__contains__", lambda self, value: True)


def test_unlearn_with_exploding_loss_stops_with_one_line_and_no_output(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], unbounded: None
) -> None:
    before = pair_digest(original)
    out = tmp_path / "nan.safetensors"
    code, _, err = run(
        capsys, "unlearn", "--model", original, "--out", out, "--method", "finetune",
        "--set", "lr=1e30", *CPU,
    )  # fmt: skip
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error:"), err
    message = errors[0]
    assert "'finetune'" in message
    assert re.search(r"loss became (nan|inf|-inf)", message)
    assert re.search(r"batch \d+", message)
    assert "lr=1e+30" in message and "epochs=2" in message
    assert "Traceback" not in err
    assert not out.exists() and not sidecar_path(out).exists()
    only_temporaries(tmp_path)
    assert pair_digest(original) == before


def test_train_with_exploding_loss_stops_with_one_line_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unbounded: None
) -> None:
    out = tmp_path / "nan.safetensors"
    code, _, err = run(
        capsys, "train", "--epochs", "2", *TINY, *CPU, "--set", "lr=1e30", "--out", out
    )
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error:"), err
    assert re.search(r"loss became (nan|inf|-inf) at epoch \d+, batch \d+ \(lr=1e\+30\)", err)
    assert not out.exists() and not sidecar_path(out).exists()


# ------------------------------------------------------------------------------ user errors
@pytest.fixture(scope="module")
def inputs(original: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files the user-error table refers to."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {
        "original": original,
        "original_sidecar": sidecar_path(original),
        "new": root / "new.safetensors",
        "missing": root / "missing.safetensors",
        "a_file": root / "a_file.txt",
        "a_folder": root / "folder.safetensors",
        "existing": root / "existing.safetensors",
        "unknown_person": root / "unknown.txt",
        "escaping_csv": root / "data" / "escaping.csv",
        "planted": root / "planted.safetensors",
    }
    paths["a_file"].write_text("not a folder")
    paths["a_folder"].mkdir()
    shutil.copy(original, paths["existing"])
    shutil.copy(sidecar_path(original), sidecar_path(paths["existing"]))
    paths["unknown_person"].write_text("nobody-of-that-name\n")
    paths["escaping_csv"].parent.mkdir()
    paths["escaping_csv"].write_text("path,label\n../secret.png,1\n")
    import pickle

    paths["planted"].write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    meta = json.loads(sidecar_path(original).read_text())
    meta["weights_sha256"] = sha256_file(paths["planted"])
    sidecar_path(paths["planted"]).write_text(json.dumps(meta))
    return paths


ORIG, NEW, MISSING, FILE = "{original}", "{new}", "{missing}", "{a_file}"
USER_ERRORS = {
    "train-unknown-dataset": (["train", "-d", "nope", "--out", NEW], "unknown dataset 'nope'"),
    "train-out-not-safetensors": (["train", "--out", "{a_file}"], r"must end with \.safetensors"),
    "train-out-under-a-file": (["train", "--out", FILE + "/m.safetensors"], "is a file"),
    "train-out-is-a-folder": (["train", "--out", "{a_folder}"], "is a folder"),
    "train-bad-setting-value": (["train", "--set", "lr=fast", "--out", NEW], "lr"),
    "train-unknown-setting": (["train", "--set", "bogus=1", "--out", NEW], "bogus"),
    "train-setting-without-value": (["train", "--set", "epochs", "--out", NEW], "KEY=VALUE"),
    "train-unknown-model": (["train", "--model", "nope", "--out", NEW], "unknown model"),
    "train-huge-image-size": (["train", "--image-size", "99999", "--out", NEW], "input size"),
    "train-unknown-device": (["train", "--device", "tpu", "--out", NEW], "unknown device"),
    "train-missing-forget-list": (
        ["train", "--forget", "{missing}", "--out", NEW],
        "forget list not found",
    ),
    "train-forget-unknown-person": (
        ["train", "--forget", "{unknown_person}", "--out", NEW],
        "unknown people",
    ),
    "train-csv-without-data-root": (["train", "-d", "csv", "--out", NEW], "--data-root"),
    "train-missing-manifest": (
        ["train", "-d", "csv", "--data-root", "{missing}", "--out", NEW],
        "manifest not found",
    ),
    "train-manifest-escaping-its-folder": (
        ["train", "-d", "csv", "--data-root", "{escaping_csv}", "--out", NEW],
        "escapes its folder",
    ),
    "train-unknown-scenario-option": (
        ["train", "-O", "level=bogus", "-d", "csv", "--data-root", "{escaping_csv}", "--out", NEW],
        "level",
    ),
    "unlearn-missing-model": (["unlearn", "--model", MISSING, "--out", NEW], "not found"),
    "unlearn-out-is-the-model": (["unlearn", "--model", ORIG, "--out", ORIG], "must differ"),
    "unlearn-unknown-method": (
        ["unlearn", "--model", ORIG, "--out", NEW, "--method", "nope"],
        "unknown method",
    ),
    "unlearn-bad-setting": (
        ["unlearn", "--model", ORIG, "--out", NEW, "--method", "finetune", "--set", "lr=x"],
        "lr",
    ),
    "unlearn-out-exists": (["unlearn", "--model", ORIG, "--out", "{existing}"], "--force"),
    "unlearn-out-under-a-file": (
        ["unlearn", "--model", ORIG, "--out", FILE + "/u.safetensors"],
        "is a file",
    ),
    "unlearn-pickle-as-model": (
        ["unlearn", "--model", "{planted}", "--out", NEW, "--device", "cpu"],
        "not a valid safetensors",
    ),
    "unlearn-unknown-forget-person": (
        ["unlearn", "--model", ORIG, "--out", NEW, "--forget", "{unknown_person}"],
        "unknown people",
    ),
    "evaluate-missing-model": (["evaluate", "--model", MISSING], "not found"),
    "evaluate-json-over-input": (
        ["evaluate", "--model", ORIG, "--json", "{original_sidecar}"],
        "is also an input",
    ),
    "evaluate-json-under-a-file": (
        ["evaluate", "--model", ORIG, "--json", FILE + "/r.json"],
        "is a file",
    ),
    "audit-out-is-a-file": (
        ["audit", "-m", ORIG, "--original", ORIG, "-r", ORIG, "--out", FILE],
        "not a folder",
    ),
    "data-info-unknown-dataset": (["data", "info", "--dataset", "nope"], "unknown dataset"),
    "methods-unknown": (["methods", "nope"], "unknown method"),
}


def _expand(args: list[str], inputs: dict[str, Path]) -> list[str]:
    named = {k: str(v) for k, v in inputs.items()}
    return [a.format(**named) for a in args]


@pytest.mark.parametrize("case", list(USER_ERRORS), ids=list(USER_ERRORS))
def test_user_error_is_one_line_and_exit_2(
    case: str, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args, pattern = USER_ERRORS[case]
    args = _expand(args, inputs)
    before = pair_digest(inputs["original"])
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in err
    assert not inputs["new"].exists()
    assert pair_digest(inputs["original"]) == before

    with pytest.raises((DlfdError, OSError)) as raised:
        main(["--debug", *args])
    assert re.search(pattern, str(raised.value))
    capsys.readouterr()


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--split-seed", "-1", "--out", "x.safetensors"],
        ["train"],
        ["unlearn", "--model"],
        ["nope"],
    ],
    ids=["negative-seed", "missing-required-option", "option-without-value", "unknown-command"],
)
def test_usage_errors_exit_2_without_traceback(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "Traceback" not in err and err.strip()


def test_real_process_with_debug_prints_the_traceback(tmp_path: Path) -> None:
    """The console script itself: ``--debug`` turns the one-line error into the traceback."""
    missing, out = tmp_path / "missing.safetensors", tmp_path / "u.safetensors"
    args = [DLFD, "--debug", "unlearn", "--model", str(missing), "--out", str(out)]
    debug = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert debug.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in debug.stderr
    assert "CheckpointError: checkpoint sidecar not found" in debug.stderr
    assert not out.exists()


def test_killed_bench_leaves_only_complete_records_and_a_rerun_completes(tmp_path: Path) -> None:
    """SIGKILL a real ``dlfd bench`` right after its first finished run: every record on disk
    is complete JSON (or absent), and a rerun skips what was finished and completes the rest."""
    out = tmp_path / "bench"
    args = [
        "bench", "--dataset", "orl-glasses", "--image-size", "8", "--seeds", "0",
        "--methods", "original,finetune,neggrad", "--set", "recipe.model=small_cnn",
        "--set", "recipe.epochs=1", "--set", "finetune.epochs=30", "--quiet",
        "--out", out, "--cache-dir", tmp_path / "cache", *CPU,
    ]  # fmt: skip
    log = out / "bench.log"
    with spawned(args, tmp_path) as (proc, stderr):
        wait_until(lambda: log.exists() and " done in " in log.read_text(), proc, stderr)
        assert proc.poll() is None, f"the bench finished before it could be killed: {stderr}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    for record in out.rglob("*.json"):
        json.loads(record.read_text())  # nothing half-written under a final name
    assert not (out / "results.json").exists() or json.loads((out / "results.json").read_text())
    with spawned(args, tmp_path) as (proc, stderr):
        assert proc.wait() == 0, stderr.read_text()
    records = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in records] == ["original", "finetune", "neggrad"]
    assert "finished earlier" in log.read_text()  # the run done before the kill was reused
