"""``dlfd report`` and the audit pages against malformed or hostile input: every mistake is one
``error:`` line (never a traceback), run files stay inside the results folder, names are drawn
and written literally (no mathtext, no raw HTML), and the outputs carry dlfd's markers."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from dlfd import __version__
from dlfd import pages as plots
from dlfd.audit.render import write_pages
from dlfd.bench.records import read_record, validate_bench_record
from dlfd.cli import main
from dlfd.errors import ConfigError
from dlfd.metrics import SplitOutputs
from dlfd.metrics.protocol import MAIN_METRICS
from dlfd.outputs import HTML_MARK, MD_MARK, PNG_SOFTWARE, written_by_dlfd
from dlfd.pages import PageTable, md_table, md_text
from dlfd.report import build_report, load_results
from dlfd.report.build import load_details
from test_report import record, write_bench_dir

MATH_NAME = r"$\undefined{x}$"
SCRIPT = "<script>x</script>"


# --------------------------------------------------------------------------- helpers


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``dlfd ARGS`` in-process, expect exit code 2; returns the one ``error:`` line."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def results_of(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "results.json").read_text())


def edit_results(folder: Path, change: Callable[[list[dict[str, Any]]], object]) -> None:
    data = results_of(folder)
    change(data)
    (folder / "results.json").write_text(json.dumps(data))


def edit_run_file(folder: Path, run_file: str, change: Callable[[dict[str, Any]], object]) -> None:
    path = folder / run_file
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rename_method(folder: Path, old: str, new: str) -> None:
    """Rename a method everywhere in a bench folder (results.json and its run files)."""
    data = results_of(folder)
    for rec in data:
        if rec["method"] == old:
            rec["method"] = new
            edit_run_file(folder, rec["run_file"], lambda full: full.update(method=new))
    (folder / "results.json").write_text(json.dumps(data))


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the test run) when the block takes longer than ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s (a blocking read?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    return write_bench_dir(tmp_path / "bench")


# --------------------------------------------------------------------------- records


def _set(index: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(data: list[dict[str, Any]]) -> None:
        data[index][key] = value

    return change


def _set_in(index: int, path: tuple[str, ...], value: Any) -> Callable[[list[dict]], None]:
    def change(data: list[dict[str, Any]]) -> None:
        target = data[index]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set(3, "seed", "abc"), "record 3: seed must be an integer, got 'abc'"),
        (_set(1, "seed", True), "record 1: seed must be an integer, got True"),
        (_set(2, "seed", 1.5), "record 2: seed must be an integer, got 1.5"),
        (_set(0, "method", ""), "record 0: method must be a non-empty string"),
        (_set(0, "method", 7), "record 0: method must be a non-empty string, got 7"),
        (_set(4, "metrics", [0.5, 0.6]), "record 4: metrics must be an object"),
        (_set_in(0, ("metrics", "test_acc"), "high"), "metrics.test_acc must be a finite number"),
        (_set_in(0, ("metrics", "nomus"), 10**400), "metrics.nomus must be a finite number"),
        (_set_in(0, ("metrics", "nomus"), {"a": 1}), "metrics.nomus must be a finite number"),
        (_set(5, "wall_s", "fast"), "record 5: wall_s must be a finite number, got 'fast'"),
        (_set(0, "config", "x"), "record 0: config must be an object, got 'x'"),
        (_set_in(3, ("config", "params"), [1]), "record 3: config.params must be an object"),
        (_set_in(0, ("config", "recipe"), "r"), "config.recipe must be an object"),
        (_set_in(0, ("config", "input", "size"), "16x16"), "config.input.size must be a list"),
        (_set_in(0, ("config", "input"), 3), "config.input must be an object"),
        (_set(0, "split_sizes", [1, 2]), "record 0: split_sizes must be an object"),
        (_set_in(0, ("split_sizes", "forget"), "many"), "split_sizes.forget must be a number"),
        (_set(0, "hardware", "fast box"), "record 0: hardware must be an object"),
        (_set(0, "versions", ["1"]), "record 0: versions must be an object"),
        (_set(0, "hashes", None), "record 0: hashes must be an object, got null"),
        (_set(0, "config", None), "record 0: config must be an object, got null"),
        (_set(0, "selected", {"a": 1}), "record 0: selected must be a string"),
        (_set(0, "dataset", 3), "record 0: dataset must be a string"),
        (_set(0, "run_file", 3), "record 0: run_file must be a non-empty string"),
        (_set(0, "run_file", ""), "record 0: run_file must be a non-empty string"),
        (_set_in(0, ("config", "params"), _nested(40)), "record 0: nested too deeply"),
    ],
)
def test_malformed_record_is_one_config_error(
    bench_dir: Path, change: Callable[[list[dict]], None], message: str
) -> None:
    edit_results(bench_dir, change)
    with pytest.raises(ConfigError) as exc:
        load_results(bench_dir)
    assert message in str(exc.value)
    assert "results.json" in str(exc.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 100000, "nested too deeply"),
        ('[{"method": "a", "seed": 0, "metrics": {"nomus": NaN}}]', "not valid JSON"),
        ('[{"method": "a", "seed": 0, "metrics": {"nomus": Infinity}}]', "not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ('{"method": "a"}', "not a list of bench records"),
        ("[]", "holds no finished run"),
        ("[3]", "record 0: the record must be an object, got 3"),
        ('[{"method": "a", "seed": 0}]', "record 0: missing metrics"),
        (b"\xff\xfe\x00[".decode("latin-1"), "not UTF-8"),
    ],
)
def test_unusable_results_file_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "results.json").write_bytes(content.encode("latin-1"))
    line = cli_error(capsys, "report", str(tmp_path))
    assert message in line


def test_seed_abc_through_the_cli(capsys: pytest.CaptureFixture[str], bench_dir: Path) -> None:
    edit_results(bench_dir, _set(3, "seed", "abc"))
    line = cli_error(capsys, "report", str(bench_dir))
    assert line.endswith("results.json record 3: seed must be an integer, got 'abc'")
    assert not (bench_dir / "report.html").exists()


def test_metrics_as_a_list_through_the_cli(
    capsys: pytest.CaptureFixture[str], bench_dir: Path
) -> None:
    edit_results(bench_dir, _set(0, "metrics", [1, 2]))
    assert "record 0: metrics must be an object of numbers, got a list" in cli_error(
        capsys, "report", str(bench_dir)
    )


def test_results_file_that_is_a_fifo_does_not_hang(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "results.json")
    with deadline(20):
        line = cli_error(capsys, "report", str(tmp_path))
    assert "not a regular file" in line


def test_validation_accepts_what_the_bench_writes() -> None:
    """Nulls where the bench writes them (non-finite numbers go to null) are accepted."""
    full = record("dlfd", 0, nomus=0.5)
    full["metrics"]["kl_forget"] = None
    full["eval_s"] = None
    full["model"] = None
    full["details"] = {
        "losses": {"forget": [0.1, None, 2.0], "unseen": []},
        "projection": {"method": "pca", "forget": [[0.0, 1.0], [None, 2.0]], "unseen": []},
        "readings": [{"where": "batch 1", "forgetting_score": None, "val_acc": 0.5}],
        "trace": [{"anything": [1, "x"]}],
        "info": {"free": "form"},
    }
    assert validate_bench_record(full, "run") is full


# --------------------------------------------------------------------------- run files


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["details"]["losses"].update(forget=["a", "b"]), "details.losses.forget[0]"),
        (lambda d: d["details"]["losses"].update(forget="many"), "details.losses.forget must"),
        (lambda d: d["details"].update(losses=[1.0]), "details.losses must be an object"),
        (lambda d: d["details"].update(readings="r"), "details.readings must be a list"),
        (lambda d: d["details"].update(readings=[3]), "details.readings[0] must be an object"),
        (
            lambda d: d["details"].update(readings=[{"forgetting_score": "low"}]),
            "details.readings[0].forgetting_score must be a number",
        ),
        (lambda d: d["details"].update(projection=[1]), "details.projection must be an object"),
        (
            lambda d: d["details"]["projection"].update(forget=[[1.0, 2.0, 3.0]]),
            "details.projection.forget[0] must be an [x, y] point",
        ),
        (lambda d: d.update(details="none"), "details must be an object"),
        (lambda d: d.update(seed="abc"), "seed must be an integer"),
        (lambda d: d.update(format="other"), "is not a dlfd bench run record"),
    ],
)
def test_malformed_run_file_is_refused(
    capsys: pytest.CaptureFixture[str],
    bench_dir: Path,
    change: Callable[[dict], object],
    message: str,
) -> None:
    """A run file that is present but malformed is refused (one error), not skipped."""
    run_file = results_of(bench_dir)[2]["run_file"]
    edit_run_file(bench_dir, run_file, change)
    line = cli_error(capsys, "report", str(bench_dir))
    assert message in line and run_file in line


def test_run_file_that_is_not_json_is_refused(bench_dir: Path) -> None:
    run_file = results_of(bench_dir)[0]["run_file"]
    (bench_dir / run_file).write_text("[" * 100000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        build_report(bench_dir)


def test_missing_run_file_is_skipped(bench_dir: Path) -> None:
    """Without any run file the report still builds, with the figures that need no details."""
    for rec in results_of(bench_dir):
        (bench_dir / rec["run_file"]).unlink()
    report = build_report(bench_dir)
    assert set(report.figures) == {"nomus_time", "paired"}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "symlinked folder"])
def test_run_file_outside_the_folder_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    folder = write_bench_dir(tmp_path / "bench")
    outside = write_bench_dir(tmp_path / "other")
    target = outside / "seed-0" / "finetune.result.json"
    if kind == "absolute":
        run_file = str(target)
    elif kind == "dotdot":
        run_file = "../other/seed-0/finetune.result.json"
    elif kind == "symlink":
        run_file = "seed-0/finetune.result.json"
        (folder / run_file).unlink()
        (folder / run_file).symlink_to(target)
    else:
        run_file = "linked/finetune.result.json"
        (folder / "linked").symlink_to(outside / "seed-0", target_is_directory=True)
    edit_results(folder, _set(2, "run_file", run_file))
    line = cli_error(capsys, "report", str(folder))
    assert "record 2: run_file" in line
    assert {"absolute": "absolute path", "dotdot": "(..)"}.get(kind, "resolves outside") in line


def test_run_file_inside_through_a_symlink_is_read(bench_dir: Path) -> None:
    """A link that stays inside the folder is fine (only the destination matters)."""
    (bench_dir / "alias").symlink_to(bench_dir / "seed-0", target_is_directory=True)
    edit_results(bench_dir, _set(2, "run_file", "alias/finetune.result.json"))
    details = load_details(bench_dir, load_results(bench_dir))
    assert details[("finetune", 0)]["losses"]["forget"]


def test_run_file_that_is_a_fifo_does_not_hang(
    capsys: pytest.CaptureFixture[str], bench_dir: Path
) -> None:
    run_file = results_of(bench_dir)[0]["run_file"]
    (bench_dir / run_file).unlink()
    os.mkfifo(bench_dir / run_file)
    with deadline(20):
        line = cli_error(capsys, "report", str(bench_dir))
        assert read_record(bench_dir / run_file) is None
    assert "not a regular file" in line and run_file in line


def test_read_record_returns_none_on_any_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.result.json"
    good = {**record("finetune", 0), "details": {"losses": {"forget": [0.5]}}}
    path.write_text(json.dumps(good))
    assert read_record(path) == good
    for bad in (
        {**good, "seed": "abc"},
        {**good, "metrics": [1]},
        {**good, "details": {"losses": {"forget": ["x"]}}},
        {**good, "format": "something else"},
    ):
        path.write_text(json.dumps(bad))
        assert read_record(path) is None
    for text in ("[" * 100000, '{"a": NaN}', "not json"):
        path.write_text(text)
        assert read_record(path) is None
    path.unlink()
    assert read_record(path) is None
    assert read_record(tmp_path) is None  # a folder


# --------------------------------------------------------------------------- figures


def test_mathtext_method_name_is_drawn_literally(bench_dir: Path) -> None:
    rename_method(bench_dir, "finetune", MATH_NAME)
    report = build_report(bench_dir)
    assert set(report.figures) == {"losses", "paired", "nomus_time", "dlfd_trace", "features"}
    page = (bench_dir / "report.html").read_text()
    assert MATH_NAME in page
    assert MATH_NAME.replace("\\", "\\\\") in (bench_dir / "report.md").read_text()


def test_mathtext_in_thresholds_and_null_numbers_in_details(bench_dir: Path) -> None:
    """Setting names and null (non-finite) losses, points and scores do not break figures."""

    def change(data: list[dict]) -> None:
        for rec in data:
            if rec["method"] == "dlfd":
                rec["config"]["params"][r"$\bad{threshold}$"] = 0.2
                rec["config"]["params"]["huge_threshold"] = 10**400

    edit_results(bench_dir, change)
    for rec in results_of(bench_dir):
        if rec["method"] == "dlfd":

            def nulls(full: dict) -> None:
                full["details"]["losses"]["forget"] += [None, -1.0]
                full["details"]["projection"]["forget"].append([None, 1.0])
                full["details"]["readings"].append({"where": "batch 9", "forgetting_score": None})

            edit_run_file(bench_dir, rec["run_file"], nulls)
    report = build_report(bench_dir)
    assert "dlfd_trace" in report.figures and "losses" in report.figures


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the plots module renders (captured before they are closed)."""
    figures: list[Any] = []
    real = plots.figure_png

    def capture(fig: Any, *args: Any, **kwargs: Any) -> bytes:
        figures.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(plots, "figure_png", capture)
    return figures


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def test_legend_shows_labels_starting_with_underscore(drawn: list[Any]) -> None:
    readings = [{"where": f"batch {b}", "forgetting_score": 0.1 * b} for b in (1, 2, 3)]
    plots.forgetting_trace({"_hidden": readings, MATH_NAME: readings}, {"_t": 0.2}, title="_x")
    legend = drawn[-1].axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["_hidden", MATH_NAME.replace("$", r"\$")]


def test_plot_titles_are_literal(drawn: list[Any]) -> None:
    """Every name reaches matplotlib with its dollars escaped, so none is parsed as math."""
    from matplotlib.text import Text

    plots.loss_histograms({MATH_NAME: {"forget": [0.1, 0.2]}, "_b": {"unseen": [1.0]}})
    plots.projections({MATH_NAME: {"forget": [[0, 1], [1, 0]], "unseen": [[1, 1]]}})
    plots.nomus_vs_time(
        [{"label": MATH_NAME, "wall": 1.0, "wall_std": 0.0, "nomus": 0.5, "nomus_std": 0.0}]
    )
    named = [t for fig in drawn for t in fig.findobj(Text) if "undefined" in t.get_text()]
    assert len(named) == 3  # a title, a title, an annotation
    for text in named:
        shown, is_math = text._preprocess_math(text.get_text())
        assert (shown, is_math) == (MATH_NAME, False)
    titles = [ax.get_title() for ax in drawn[0].axes if ax.get_visible()]
    assert titles == [MATH_NAME.replace("$", r"\$"), "_b"]
    assert [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()] == ["forget"]


# --------------------------------------------------------------------------- markdown / html


def test_md_text_escapes_html_and_table_breakers() -> None:
    assert md_text(SCRIPT) == "&lt;script&gt;x&lt;/script&gt;"
    assert md_text("a|b\nc & [l](u) `c` *e*") == r"a\|b c &amp; \[l\](u) \`c\` \*e\*"
    table = PageTable("t <b>", ["m|x"], [["<i>a</i>\nb"]], best={(0, 0)})
    assert md_table(table)[:4] == [
        "## t &lt;b&gt;",
        "",
        r"| m\|x |",
        "|---|",
    ]
    assert md_table(table)[4] == "| **&lt;i&gt;a&lt;/i&gt; b** |"


def test_report_markdown_has_no_raw_html(bench_dir: Path) -> None:
    rename_method(bench_dir, "finetune", SCRIPT)

    def change(data: list[dict]) -> None:
        for rec in data:
            rec["dataset"] = "<b>set</b>"
            rec["config"]["params"]["note"] = "<img src=x onerror=alert(1)>|"
            rec["selected"] = "<em>best</em>"
            rec["hardware"]["cuda_device"] = "<gpu>"

    edit_results(bench_dir, change)
    build_report(bench_dir)
    md = (bench_dir / "report.md").read_text()
    body = md.split("\n", 1)[1]  # after the marker comment
    assert "<" not in body and ">" not in body.replace("&gt;", "")
    assert "&lt;script&gt;x&lt;/script&gt;" in md and "# Unlearning benchmark: &lt;b&gt;" in md
    assert "onerror" in md and "<img" not in md
    for table in md.split("\n\n"):  # every row of every table keeps the header's width
        rows = [line for line in table.splitlines() if line.startswith("|")]
        widths = {re.sub(r"\\\|", "", line).count("|") for line in rows}
        assert len(widths) <= 1, table
    page = (bench_dir / "report.html").read_text()
    assert "<script" not in page and "<b>set" not in page and "<img src=x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def _cert(name: str) -> dict[str, Any]:
    models = ("original", "unlearned", "reference")
    return {
        "scenario": {
            "name": name,
            "forget_sha256": "<i>" + "a" * 20,
            "sizes": {"forget": 3},
            "options": {"<opt>": "<v>"},
        },
        "models": {m: {"weights_sha256": "ab" * 32} for m in models},
        "settings": {"confidence_level": 0.95, "n_boot": 20},
        "summary": f"pass for {name}",
        "protocol": {m: dict.fromkeys(MAIN_METRICS, 0.5) for m in models},
        "intervals": {m: {"mia_acc": [0.4, 0.6], "nomus": [0.4, 0.6]} for m in models},
        "attacks": {
            "<atk>": {
                **{m: {"accuracy": 0.5, "auc": 0.5} for m in models},
                "unlearned_interval": [0.4, 0.6],
                "excess_over_reference": 0.0,
                "verdict": "pass",
            }
        },
        "lira": {"<k>": 0.1},
        "divergence_to_reference": {"kl_forget": 0.0},
        "people": [
            {"person": SCRIPT, "images": 2, "scores": dict.fromkeys(models, 0.5)},
            {"person": MATH_NAME, "images": 1, "scores": dict.fromkeys(models, 0.4)},
            {"person": "_under", "images": 1, "scores": dict.fromkeys(models, 0.4)},
        ],
        "most_exposed": [{"image": "<img src=x>.png", "person": SCRIPT, "score": 0.9}],
    }


def _outputs() -> dict[str, dict[str, SplitOutputs]]:
    gen = torch.Generator().manual_seed(0)
    return {
        m: {
            split: SplitOutputs(torch.randn(6, 3, generator=gen), torch.tensor([0, 1, 2] * 2))
            for split in ("retain", "unseen", "forget")
        }
        for m in ("original", "unlearned", "reference")
    }


def test_audit_pages_escape_names(tmp_path: Path) -> None:
    paths = write_pages(_cert(f"{SCRIPT}|{MATH_NAME}"), _outputs(), "multiclass", tmp_path)
    md = paths["markdown"].read_text()
    lines = md.splitlines()
    assert lines[0] == MD_MARK
    body = "\n".join(lines[1:])
    assert "<" not in body and ">" not in body.replace("&gt;", "")
    assert "&lt;script&gt;x&lt;/script&gt;" in md and "&lt;img src=x&gt;.png" in md
    assert "&lt;atk&gt;" in md and "&lt;k&gt;" in md
    assert "`abababababababab`" in md  # hashes stay inline code
    assert "`<i>" not in md and "&lt;i&gt;aaaa" in md  # a non-hex "hash" is escaped text
    page = paths["html"].read_text()
    assert "<script" not in page and "<img src=x" not in page and "<i>" not in page
    assert HTML_MARK in page.split("</head>")[0]
    with Image.open(tmp_path / "figures" / "people.png") as image:
        assert image.text["Software"] == f"{PNG_SOFTWARE} {__version__}"


def test_people_figure_labels_are_literal(
    drawn: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlfd.audit.render as render

    captured: list[Any] = []
    real = render.figure_png

    def capture(fig: Any, *args: Any, **kwargs: Any) -> bytes:
        captured.append(fig)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(render, "figure_png", capture)
    render.people_figure(_cert("s")["people"])
    ax = captured[0].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [SCRIPT, MATH_NAME.replace("$", r"\$"), "_under"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "original",
        "unlearned",
        "reference",
    ]


# --------------------------------------------------------------------------- markers


def test_written_outputs_carry_dlfd_markers(bench_dir: Path) -> None:
    report = build_report(bench_dir)
    assert report.html is not None and report.markdown is not None
    page = report.html.read_text()
    head = page.split("</head>")[0]
    assert "<head>" in head and HTML_MARK in head
    assert report.markdown.read_text().splitlines()[0] == MD_MARK
    assert report.figures
    for png in report.figures.values():
        with Image.open(png) as image:
            assert image.text.get("Software") == f"{PNG_SOFTWARE} {__version__}"
        assert written_by_dlfd(png)
    assert written_by_dlfd(report.html) and written_by_dlfd(report.markdown)


def test_png_metadata_from_figure_png() -> None:
    from dlfd.pages import figure_png, pyplot

    plt = pyplot()
    fig, _ = plt.subplots()
    try:
        data = figure_png(fig)
    finally:
        plt.close(fig)
    with Image.open(io.BytesIO(data)) as image:
        assert image.text["Software"].startswith(PNG_SOFTWARE + " ")
    assert np.frombuffer(data[:8], dtype=np.uint8).tolist()[1:4] == list(b"PNG")
