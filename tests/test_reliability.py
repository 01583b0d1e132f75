"""No lost files, no hangs, no tracebacks: outputs never replace inputs or strangers' files,
one writer per output, readers refuse FIFOs/devices/oversized files, user text prints
literally, checkpoints find their data from any folder, forget lists can name ``#``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import FAST_TRAIN
from dlfd.bench.recipe_file import load_recipe_file
from dlfd.checkpoint import read_meta
from dlfd.data.manifest import read_manifest
from dlfd.data.splits import parse_forget_line, read_forget_list
from dlfd.errors import DlfdError
from dlfd.outputs import lock_path, output_lock, written_by_dlfd
from test_fuzz_inputs import time_limit

Cli = Callable[..., tuple[int, str, str]]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(err: str) -> str:
    """The one ``error:`` line of a refused command (and no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def csv_model(cli: Cli, csv_dataset: Path, tmp_path: Path) -> Path:
    """A model trained on the ``csv`` scenario (seconds)."""
    out = tmp_path / "models" / "original.safetensors"
    code, _, err = cli("train", "-d", "csv", "--data-root", csv_dataset, "--out", out, *FAST_TRAIN)
    assert code == 0, err
    return out


# --- class 1: an output never destroys an input or a file dlfd did not write -----------------


def test_evaluate_json_over_the_manifest_is_refused_even_with_force(
    cli: Cli, csv_model: Path, csv_dataset: Path
) -> None:
    before = digest(csv_dataset)
    for extra in ([], ["--force"]):
        code, _, err = cli("evaluate", "-m", csv_model, "--json", csv_dataset, *extra)
        assert code == 2
        assert "data" in error_line(err) or "input" in error_line(err)
        assert digest(csv_dataset) == before


def test_outputs_over_inputs_are_refused_even_with_force(
    cli: Cli, csv_model: Path, csv_dataset: Path, tmp_path: Path
) -> None:
    sidecar = csv_model.with_suffix(".json")
    forget = tmp_path / "forget.txt"
    forget.write_text("p0\n")
    image = csv_dataset.parent / "p1" / "0.png"
    cases = [
        ("evaluate", "-m", csv_model, "--json", sidecar),
        ("evaluate", "-m", csv_model, "--forget", forget, "--json", forget),
        ("evaluate", "-m", csv_model, "--json", image),
        ("unlearn", "-m", csv_model, "--method", "finetune", "--out", image.with_suffix(".x")),
        ("data", "check", "-d", "csv", "--data-root", csv_dataset, "--json", image),
    ]
    protected = {p: digest(p) for p in (sidecar, forget, image, csv_model)}
    for case in cases:
        code, _, err = cli(*case, "--force")
        assert code == 2, case
        error_line(err)
    assert {p: digest(p) for p in protected} == protected
    link = tmp_path / "link.json"
    link.symlink_to(sidecar)
    code, _, err = cli("evaluate", "-m", csv_model, "--json", link, "--force")
    assert code == 2 and "input" in error_line(err)
    assert digest(sidecar) == protected[sidecar]


def test_strangers_files_are_replaced_only_with_force(
    cli: Cli, csv_model: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    code, _, err = cli("evaluate", "-m", csv_model, "--json", notes)
    assert code == 2 and "not written by dlfd" in error_line(err)
    assert json.loads(notes.read_text()) == {"mine": True}
    code, _, err = cli("evaluate", "-m", csv_model, "--json", notes, "--force")
    assert code == 0, err
    assert written_by_dlfd(notes)
    # dlfd's own file is replaced without --force
    code, _, err = cli("evaluate", "-m", csv_model, "--json", notes)
    assert code == 0, err


def test_train_keeps_a_strangers_sidecar_and_resume_files(
    cli: Cli, csv_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "notes.safetensors"
    for stranger in (
        tmp_path / "notes.json",
        tmp_path / "notes.resume.json",
        tmp_path / "notes.resume.safetensors",
    ):
        stranger.write_text("my own notes\n")
        args = ("train", "-d", "csv", "--data-root", csv_dataset, "--out", out, *FAST_TRAIN)
        code, _, err = cli(*args)
        assert code == 2 and "not written by dlfd" in error_line(err)
        assert stranger.read_text() == "my own notes\n" and not out.exists()
        stranger.unlink()


def test_unlearn_refuses_a_strangers_sidecar(cli: Cli, csv_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "u.safetensors"
    out.with_suffix(".json").write_text("{}\n")
    code, _, err = cli("unlearn", "-m", csv_model, "--method", "finetune", "--out", out)
    assert code == 2 and "not written by dlfd" in error_line(err)
    assert out.with_suffix(".json").read_text() == "{}\n"


def _bench_folder(folder: Path) -> Path:
    """A results folder holding one plain record (what the report needs)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "method": "original",
        "seed": 0,
        "metrics": {"test_acc": 0.5, "forget_acc": 1.0, "nomus": 0.6},
        "run_file": "seed-0/original.result.json",
    }
    (folder / "results.json").write_text(json.dumps([record]))
    run = folder / "seed-0" / "original.result.json"
    run.parent.mkdir()
    run.write_text(json.dumps({**record, "format": "dlfd-bench-run/1"}))
    return folder


def test_report_never_writes_over_what_it_reads(cli: Cli, tmp_path: Path) -> None:
    folder = _bench_folder(tmp_path / "bench")
    results, run = folder / "results.json", folder / "seed-0" / "original.result.json"
    before = {results: digest(results), run: digest(run)}
    for option, target in (("--html", results), ("--md", run), ("--html", run)):
        code, _, err = cli("report", folder, option, target, "--force")
        assert code == 2, (option, target)
        assert "input" in error_line(err)
    assert {p: digest(p) for p in before} == before


def test_report_and_audit_and_bench_refuse_strangers_files(cli: Cli, tmp_path: Path) -> None:
    folder = _bench_folder(tmp_path / "bench")
    page = folder / "report.html"
    page.write_text("<html>my page</html>")
    code, _, err = cli("report", folder)
    assert code == 2 and "not written by dlfd" in error_line(err)
    assert page.read_text() == "<html>my page</html>"
    code, _, err = cli("report", folder, "--force")
    assert code == 0, err
    assert written_by_dlfd(page) and written_by_dlfd(folder / "report.md")
    code, _, err = cli("report", folder)  # dlfd's own pages: replaced without --force
    assert code == 0, err

    audit_dir = tmp_path / "audit"
    (audit_dir / "figures").mkdir(parents=True)
    (audit_dir / "figures" / "people.png").write_bytes(b"\x89PNG not mine")
    fake = tmp_path / "m.safetensors"
    code, _, err = cli("audit", "-m", fake, "--original", fake, "-r", fake, "--out", audit_dir)
    assert code == 2 and "not written by dlfd" in error_line(err)

    bench_dir = tmp_path / "other"
    bench_dir.mkdir()
    (bench_dir / "results.json").write_text("[1, 2, 3]\n")
    code, _, err = cli("bench", "-d", "orl-glasses", "--methods", "original", "--out", bench_dir)
    assert code == 2 and "not written by dlfd" in error_line(err)
    assert (bench_dir / "results.json").read_text() == "[1, 2, 3]\n"


# --- class 2: one writer per output -----------------------------------------------------------


def test_a_held_output_is_refused_at_once(cli: Cli, csv_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    with output_lock(out, "--out"):
        args = ("train", "-d", "csv", "--data-root", csv_dataset, "--out", out, *FAST_TRAIN)
        code, _, err = cli(*args)
    assert code == 2 and "being written by another dlfd command" in error_line(err)
    assert not out.exists()


def _held(path: Path) -> bool:
    """True when another process holds the lock of output ``path``."""
    try:
        with output_lock(path, "probe"):
            return False
    except DlfdError:
        return True


@pytest.fixture
def slow_writer(csv_dataset: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real ``dlfd train`` process (seed 1) writing ``tmp_path/m.safetensors``."""
    out = tmp_path / "m.safetensors"
    args = ["train", "-d", "csv", "--data-root", str(csv_dataset), "--out", str(out)]
    args += [*FAST_TRAIN[:-3], "--seed", "1", "--epochs", "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlfd", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc, out
    finally:
        proc.kill()
        proc.wait()


def test_two_trainings_to_one_output_the_second_is_refused(
    cli: Cli, csv_dataset: Path, slow_writer: tuple[subprocess.Popen, Path]
) -> None:
    proc, out = slow_writer
    deadline = time.monotonic() + 120
    while not (lock_path(out).exists() and _held(out)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first training never took its lock"
        time.sleep(0.1)
    args = ("train", "-d", "csv", "--data-root", csv_dataset, "--out", out, *FAST_TRAIN)
    code, _, err = cli(*args, "--seed", "2")
    assert code == 2 and "being written by another dlfd command" in error_line(err)
    _, first_err = proc.communicate(timeout=600)
    assert proc.returncode == 0, first_err
    assert read_meta(out).train_seed == 1  # the first writer's model, untouched


# --- class 3: readers of outside files ---------------------------------------------------------


READERS: dict[str, Callable[[Path], object]] = {
    "forget list": read_forget_list,
    "manifest": read_manifest,
    "recipe": lambda p: load_recipe_file(p.with_name(p.name + ".toml")),
    "sidecar": lambda p: read_meta(p.with_name(p.name + ".safetensors")),
}


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging: the reader must return within 20 s."""
    with time_limit(20.0):
        yield


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_refuse_fifos_devices_and_folders(reader: str, tmp_path: Path, alarm) -> None:
    read = READERS[reader]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    suffixed = {"recipe": ".toml", "sidecar": ".json"}.get(reader)
    if suffixed:
        os.mkfifo(tmp_path / f"fifo{suffixed}")
    with pytest.raises(DlfdError, match="not a regular file"):
        read(fifo)
    folder = tmp_path / "folder"
    (tmp_path / f"folder{suffixed or ''}").mkdir()
    with pytest.raises(DlfdError, match="folder"):
        read(folder)


def test_dev_zero_and_oversized_forget_lists_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alarm
) -> None:
    with pytest.raises(DlfdError, match="not a regular file"):
        read_forget_list(Path("/dev/zero"))
    big = tmp_path / "big.txt"
    big.write_text("p1\n" * 100)
    monkeypatch.setattr("dlfd.data.splits.MAX_FORGET_LIST_BYTES", 64)
    with pytest.raises(DlfdError, match="too large"):
        read_forget_list(big)


def test_cli_forget_list_fifo_ends_in_one_error_line(
    cli: Cli, csv_model: Path, tmp_path: Path, alarm
) -> None:
    fifo = tmp_path / "forget.fifo"
    os.mkfifo(fifo)
    code, _, err = cli("evaluate", "-m", csv_model, "--forget", fifo)
    assert code == 2 and "not a regular file" in error_line(err)


# --- class 5: user text prints literally --------------------------------------------------------


def test_bracketed_user_text_prints_literally(cli: Cli, csv_model: Path, tmp_path: Path) -> None:
    code, _, err = cli("evaluate", "-m", "[/].safetensors")
    assert code == 2 and "[/].json" in error_line(err)
    code, _, err = cli("evaluate", "-m", "[bold]x[/bold].safetensors")
    assert code == 2 and "[bold]x[/bold].json" in error_line(err)
    forget = tmp_path / "forget.txt"
    forget.write_text("[/]\n[red]nobody[/red]\n")
    code, _, err = cli("evaluate", "-m", csv_model, "--forget", forget)
    line = error_line(err)
    assert code == 2 and "'[/]'" in line and "'[red]nobody[/red]'" in line


def test_bracketed_model_names_print_in_tables(cli: Cli, csv_model: Path, tmp_path: Path) -> None:
    odd = tmp_path / "[" / "]odd[bold].safetensors"  # shown as .../[/]odd[bold]
    odd.parent.mkdir()
    odd.write_bytes(csv_model.read_bytes())
    odd.with_suffix(".json").write_bytes(csv_model.with_suffix(".json").read_bytes())
    code, out, err = cli("evaluate", "-m", odd)
    assert code == 0, err
    assert "]odd[bold]" in out


# --- class 6 (command line side): bounds ----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--out", "x.safetensors", "--seed", str(2**63)),
        ("train", "--out", "x.safetensors", "--split-seed", str(2**32)),
        ("train", "--out", "x.safetensors", "--image-size", "4096"),
        ("unlearn", "-m", "a.safetensors", "--out", "b.safetensors", "--seed", str(2**40)),
        ("bench", "-d", "orl-glasses", "--out", "b", "--seeds", f"0,{2**63}"),
        ("audit", "-m", "a", "--original", "a", "-r", "a", "--out", "o", "--tolerance", "5"),
    ],
)
def test_out_of_range_numbers_are_refused_before_any_work(
    cli: Cli, args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


# --- class 8: checkpoints are not tied to the working directory ----------------------------------


def test_relative_data_root_is_recorded_absolute(
    cli: Cli, csv_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(csv_dataset.parent)
    out = tmp_path / "m.safetensors"
    code, _, err = cli(
        "train", "-d", "csv", "--data-root", "manifest.csv", "--out", out, *FAST_TRAIN
    )
    assert code == 0, err
    assert read_meta(out).data_root == str(csv_dataset)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("evaluate", "-m", out)
    assert code == 0, err
    moved = csv_dataset.with_name("moved.csv")
    csv_dataset.rename(moved)
    code, _, err = cli("evaluate", "-m", out)
    assert code == 2 and "--data-root overrides it" in error_line(err)
    code, _, err = cli("evaluate", "-m", out, "--data-root", moved)
    assert code == 0, err


# --- class 10: identities containing '#' ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        ("p1", "p1"),
        ("p1  # a comment", "p1"),
        ("# only a comment", ""),
        (r"team\#1", "team#1"),
        (r"team\#1 # with a comment", "team#1"),
        (r"back\\#comment", "back\\"),
        ('"team#1"', "team#1"),
        ('"team#1"  # quoted, then a comment', "team#1"),
        ('"a \\"quoted\\" name"', 'a "quoted" name'),
    ],
)
def test_forget_lines_can_name_hash_signs(line: str, entry: str) -> None:
    assert parse_forget_line(line) == entry


@pytest.mark.parametrize("line", ['"unclosed', '"a" trailing words'])
def test_malformed_quoted_forget_lines_are_refused(line: str) -> None:
    with pytest.raises(DlfdError, match="forget list line"):
        parse_forget_line(line)


def test_a_person_named_with_a_hash_can_be_forgotten(
    cli: Cli, tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    root = tmp_path / "data"
    lines = ["path,label,identity"]
    for k in range(20):
        person = "team#1" if k == 0 else f"p{k}"
        for j in range(6):
            write_image(root / f"p{k}" / f"{j}.png", size=(16, 16))
            lines.append(f"p{k}/{j}.png,{'ab'[j % 2]},{person}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    forget = tmp_path / "forget.txt"
    forget.write_text('"team#1"  # the person who asked\n')
    code, _, err = cli("data", "info", "-d", "csv", "--data-root", manifest)
    assert code == 0, err
    out_path = tmp_path / "m.safetensors"
    args = ("train", "-d", "csv", "--data-root", manifest, "--forget", forget, "--out", out_path)
    code, _, err = cli(*args, *FAST_TRAIN)
    assert code == 0, err
    assert read_meta(out_path).forget_keys == tuple(f"p0/{j}.png" for j in range(6))


def test_a_listed_image_that_is_a_fifo_is_never_opened(
    tmp_path: Path, write_image: Callable[..., Path], alarm
) -> None:
    write_image(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nb.png,y\n")
    with pytest.raises(DlfdError, match="not regular files"):
        read_manifest(tmp_path / "m.csv")


def test_a_refused_command_leaves_no_folder_behind(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("report", "nope/[x]")
    assert code == 2 and "results.json not found" in error_line(err)
    code, _, err = cli("evaluate", "-m", "missing.safetensors", "--json", "a/b/eval.json")
    assert code == 2 and "sidecar not found" in error_line(err)
    assert not list(tmp_path.iterdir())


def test_long_output_names_get_a_short_lock_and_one_error_line(
    cli: Cli, csv_model: Path, tmp_path: Path
) -> None:
    long_name = tmp_path / ("x" * 250 + ".json")
    code, _, err = cli("evaluate", "-m", csv_model, "--json", long_name)
    assert code == 0, err
    assert written_by_dlfd(long_name)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]


def test_settings_of_methods_that_do_not_run_are_checked_too(cli: Cli, tmp_path: Path) -> None:
    args = ("bench", "-d", "orl-glasses", "--methods", "original", "--out", tmp_path / "b")
    code, _, err = cli(*args, "--set", "finetune.lr=-1")
    assert code == 2 and "lr must be in" in error_line(err)
    assert not (tmp_path / "b").exists()
