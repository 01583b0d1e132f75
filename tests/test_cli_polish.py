"""The command line's manners: --version, values checked while the command line is read (before
any banner or work), the next-step hints, and --help that reads well."""

from __future__ import annotations

import io
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

import dlfd
from conftest import FAST_BENCH, FAST_TRAIN
from dlfd.methods import list_methods
from dlfd.scenarios import list_scenarios

Cli = Callable[..., tuple[int, str, str]]


def _only_error_line(err: str) -> str:
    """The one line ``err`` holds, which must be an ``error:`` line (no banner before it)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


def test_version_is_the_package_version(cli: Cli) -> None:
    code, out, err = cli("--version")
    assert code == 0, err
    assert out.strip() == f"dlfd {dlfd.__version__}"


def test_invalid_role_is_refused_before_the_banner(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("train", "--role", "retrain", "--out", tmp_path / "m.safetensors")
    assert code == 2
    line = _only_error_line(err)
    assert "'retrain'" in line and "original" in line and "retrained" in line
    assert not list(tmp_path.iterdir())


def test_unknown_method_is_refused_before_the_model_is_read(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"  # never opened: the method is checked first
    code, _, err = cli("unlearn", "--model", missing, "--out", tmp_path / "u.safetensors",
                       "--method", "dlfdd")  # fmt: skip
    assert code == 2
    line = _only_error_line(err)
    assert "'dlfdd'" in line and all(key in line for key in list_methods())
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--methods", "finetune,dlfdd"], "'dlfdd'"),
        (["--methods", "finetune", "--dataset", "mnist"], "'mnist'"),
        (["--methods", "finetune", "--seeds", "3-1"], "'3-1'"),
        (["--methods", "finetune", "--set", "finetune.nope=1"], "'nope'"),
    ],
    ids=["method-key", "dataset", "seeds", "setting"],
)
def test_bench_input_is_refused_before_the_banner(
    cli: Cli, tmp_path: Path, args: list[str], named: str
) -> None:
    base = [] if "--dataset" in args else ["--dataset", "orl-glasses"]
    code, _, err = cli("bench", *base, *args, "--out", tmp_path / "o", "--quiet")
    assert code == 2
    line = _only_error_line(err)
    assert named in line
    if "--methods" in args and "dlfdd" in args[1]:
        assert all(key in line for key in list_methods())
    if "mnist" in args:
        assert all(name in line for name in list_scenarios())
    assert not (tmp_path / "o").exists()


def _hints(err: str) -> list[str]:
    """The ``next:`` hint lines (and their continuation lines) of ``err``."""
    lines = err.splitlines()
    start = next((k for k, line in enumerate(lines) if line.startswith("next: ")), None)
    if start is None:
        return []
    found = [lines[start][len("next: ") :]]
    found += [line.strip() for line in lines[start + 1 :] if line.startswith("      ")]
    return found


def test_train_and_unlearn_suggest_the_next_step(cli: Cli, tmp_path: Path) -> None:
    original = tmp_path / "my model.safetensors"  # a space: the hint quotes it
    code, _, err = cli("train", "--out", original, "--device", "cpu", *FAST_TRAIN)
    assert code == 0, err
    hint = _hints(err)
    assert len(hint) == 1
    words = shlex.split(hint[0])  # one line a shell reads back: the path is quoted
    assert words[:4] == ["dlfd", "unlearn", "--model", str(original)]

    code, _, err = cli("train", "--out", original, "--device", "cpu", *FAST_TRAIN)
    assert code == 0 and "up to date" in err
    assert _hints(err) == hint  # also when the checkpoint is reused

    reference = tmp_path / "r.safetensors"
    code, _, err = cli("train", "--role", "retrained", "--out", reference, "--device", "cpu",
                       *FAST_TRAIN)  # fmt: skip
    assert code == 0, err
    (hint,) = _hints(err)
    assert hint.startswith("dlfd evaluate ") and f"--reference {reference}" in hint

    unlearned = tmp_path / "u.safetensors"
    code, _, err = cli("unlearn", "--model", original, "--out", unlearned, "--method",
                       "finetune", "--set", "epochs=1", "--device", "cpu", "--quiet")  # fmt: skip
    assert code == 0, err
    evaluate, audit = (shlex.split(line) for line in _hints(err))
    assert evaluate[:2] == ["dlfd", "evaluate"] and [str(original), str(unlearned)] == [
        evaluate[k + 1] for k, word in enumerate(evaluate) if word == "--model"
    ]
    assert audit[:2] == ["dlfd", "audit"]
    assert audit[audit.index("--model") + 1] == str(unlearned)
    assert audit[audit.index("--original") + 1] == str(original)


def test_bench_suggests_the_report_and_says_running(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["bench", "-d", "orl-glasses", *FAST_BENCH, "--methods", "original", "--out", out]
    code, _, err = cli(*args, "--quiet", "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert _hints(err) == [f"dlfd report {out}"]
    log = (out / "bench.log").read_text()
    assert re.search(r"seed 0: original running$", log, re.MULTILINE), log
    assert "not run yet" not in log
    assert json.loads((out / "results.json").read_text())[0]["method"] == "original"


HELP_PAGES = [
    [],
    ["train"],
    ["unlearn"],
    ["evaluate"],
    ["audit"],
    ["bench"],
    ["report"],
    ["methods"],
    ["datasets"],
    ["data"],
    ["data", "info"],
    ["data", "check"],
]
RAW_TYPE = re.compile(r"<(bool|str|int|float|path|list\[[^>]*\])[^>]*>", re.IGNORECASE)


@pytest.mark.parametrize("command", HELP_PAGES, ids=lambda c: " ".join(c) or "dlfd")
def test_help_shows_no_raw_types(cli: Cli, command: list[str]) -> None:
    code, out, _ = cli(*command, "--help")
    assert code == 0
    assert not RAW_TYPE.search(out), RAW_TYPE.search(out)


def _paragraphs(help_text: str) -> list[str]:
    return [" ".join(p.split()) for p in help_text.split("\n\n") if p.strip()]


@pytest.mark.parametrize("command", HELP_PAGES[1:], ids=" ".join)
def test_help_paragraphs_are_not_broken_mid_sentence(
    cli: Cli, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a wide terminal each paragraph of a command's description is one line: the
    docstring's own line breaks do not reach the help page."""
    import typer

    from dlfd.cli import app

    group = typer.main.get_command(app)
    cmd = group
    for name in command:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    monkeypatch.setenv("COLUMNS", "1000")
    code, out, _ = cli(*command, "--help")
    assert code == 0
    lines = [" ".join(line.strip(" │").split()) for line in out.splitlines()]
    for paragraph in _paragraphs(cmd.help or ""):
        if "[" not in paragraph:  # rich markup would change such a paragraph
            assert paragraph in lines, (paragraph, out)


def test_settings_show_pixel_steps_as_fractions_of_255(cli: Cli) -> None:
    from dlfd.methods.base import format_setting
    from dlfd.methods.dlfd import DLFDParams

    assert format_setting(2 / 255) == "2/255" and format_setting(16 / 255) == "16/255"
    assert format_setting(0.2) == "0.2" and format_setting(1.0) == "1"  # short decimals stay
    assert format_setting(0.001) == "0.001" and format_setting(1 / 3) == "1/3"
    assert format_setting(3 / 255 + 1e-9) == "0.0117647"  # not k/255 within 1e-12
    assert format_setting((2 / 255, 0.5)) == "(2/255, 0.5)"
    assert format_setting("cosine", repr) == "'cosine'" and format_setting(None) == "None"
    params = DLFDParams()
    assert "step_size=2/255, budget=16/255" in params.describe_settings()
    assert params.step_size == 2 / 255  # only the display changes
    code, out, err = cli("methods", "dlfd")
    assert code == 0, err
    assert "2/255" in out and "16/255" in out and "0.00784" not in out


def _rendered(tables: list, width: int) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    for table in tables:
        console.print(table)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 60])
def test_terminal_tables_never_cut_numbers_or_headers(width: int) -> None:
    """``dlfd evaluate``'s and ``dlfd bench``'s tables at 80 columns and less: every digit and
    every header word is shown (tables split into groups of columns), no ellipsis."""
    from dlfd.cli.evaluate import metrics_table
    from dlfd.cli.report import fit_width, rich_table
    from dlfd.metrics.protocol import MAIN_METRICS
    from dlfd.report.tables import main_table
    from test_report import three_seed_records

    rows = [
        {"name": name, "role": role, "metrics": {m: 0.7345678 for m in MAIN_METRICS}}
        for name, role in [
            ("original.safetensors", "original"),
            ("runs/finetune-unlearned-with-a-long-name.safetensors", "unlearned"),
        ]
    ]
    text = _rendered(fit_width(metrics_table(rows, "evaluation"), width, keep=2), width)
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    assert text.count("0.7346") == 2 * len(MAIN_METRICS)
    for metric in MAIN_METRICS:
        assert all(part in text for part in metric.split("_")), metric
    names = "".join(
        line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")
    )  # the model column folds a long name onto more lines, never cuts it
    assert "runs/finetune-unlearned-with-a-long-name.safetensors" in names

    bench = rich_table(main_table(three_seed_records(), digits=3, sep="±"))
    text = _rendered(fit_width(bench, width), width)
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    for header in ("nomus", "avg", "gap", "wall", "forgetting", "score", "test", "acc"):
        assert header in text, header
    assert "30.0" in text and "0.800" in text  # the last columns are there
