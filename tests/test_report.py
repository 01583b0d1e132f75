"""``dlfd report``: tables from hand-made bench JSON, self-contained pages, a real browser."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from dlfd.cli import main
from dlfd.report import build_report
from dlfd.report.tables import attacks_table, main_table, published_table

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def record(method: str, seed: int, dataset: str = "orl-glasses", **metrics: float) -> dict:
    base = {
        "test_acc": 0.5,
        "retain_acc": 0.9,
        "forget_acc": 0.8,
        "unseen_acc": 0.6,
        "mia_acc": 0.6,
        "forgetting_score": 0.1,
        "nomus": 0.65,
        "avg_gap": 0.05,
    }
    base.update(metrics)
    return {
        "format": "dlfd-bench-run/1",
        "method": method,
        "seed": seed,
        "dataset": dataset,
        "config": {
            "params": {"lr": 0.01, "forget_threshold": 0.15} if method == "dlfd" else {},
            "recipe": {"model": "small_cnn", "epochs": 1, "batch_size": 64, "lr": 0.01},
            "input": {"size": [16, 16]},
            "lambda": 0.5,
        },
        "metrics": base,
        "wall_s": {"original": 0.0, "retrain": 30.0}.get(method, 2.0 + seed),
        "monitor_s": 0.0,
        "selected": "last state",
        "split_sizes": {"retain": 180, "forget": 60},
        "hardware": {"platform": "test", "cpu_threads": 2},
        "versions": {"dlfd": "0", "torch": "0"},
        "hashes": {"weights_sha256": "0" * 64},
    }


def three_seed_records() -> list[dict]:
    """original, retrain, finetune and dlfd over seeds 0, 1, 2 with known test_acc."""
    records = []
    for seed in range(3):
        records.append(record("original", seed, test_acc=0.70, forget_acc=1.0))
        records.append(record("retrain", seed, test_acc=0.60, forget_acc=0.7, avg_gap=0.0))
        records.append(record("finetune", seed, test_acc=0.50 + 0.1 * seed, forget_acc=0.95))
        records.append(
            record("dlfd", seed, test_acc=0.65, forgetting_score=0.02, forget_acc=0.72, nomus=0.8)
        )
    return records


def test_main_table_mean_std_best_and_reference_row() -> None:
    table = main_table(three_seed_records())
    assert [row[0] for row in table.rows] == ["original", "retrain (reference)", "finetune", "dlfd"]
    col = {name: k for k, name in enumerate(table.header)}
    # finetune's test_acc over seeds: 0.5, 0.6, 0.7 -> mean 0.6, sample std 0.1, and the 95%
    # t-interval of the mean 0.6 ± t(0.975, 2) * 0.1 / sqrt(3) = 0.6 ± 0.248
    assert table.rows[2][col["test_acc"]] == "0.6000 ± 0.1000 [0.352, 0.848]"
    assert table.rows[0][col["wall_s"]] == "0.0 ± 0.0 [0.0, 0.0]"
    best = {(table.rows[r][0], table.header[c]) for r, c in table.best}
    # dlfd: higher test_acc (0.65 > 0.6), lower forgetting score, forget_acc nearer retrain's
    assert {("dlfd", "test_acc"), ("dlfd", "forgetting_score"), ("dlfd", "forget_acc")} <= best
    assert ("finetune", "wall_s") in best  # lower wall time (2, 3, 4 vs 2, 3, 4: a tie)
    assert not any(name in ("original", "retrain (reference)") for name, _ in best)
    assert "seeds 0, 1, 2" in table.title


def test_one_seed_shows_values_without_std() -> None:
    table = main_table([record("original", 0), record("finetune", 0, test_acc=0.55)])
    assert table.rows[1][table.header.index("test_acc")] == "0.5500"
    assert not table.best  # one candidate method: nothing to compare


def test_attacks_table_only_when_present() -> None:
    plain = [record("original", 0), record("finetune", 0)]
    assert attacks_table(plain) is None
    strong = [
        record(
            m,
            0,
            loss_accuracy=0.6,
            loss_auc=0.65,
            loss_tpr_at_1pct_fpr=0.02,
            svc_entropy_accuracy=0.55,
            svc_entropy_auc=0.57,
            svc_entropy_tpr_at_1pct_fpr=0.01,
            mia_acc_ci_low=0.45,
            mia_acc_ci_high=0.7,
            nomus_ci_low=0.6,
            nomus_ci_high=0.8,
        )
        for m in ("original", "finetune")
    ]
    table = attacks_table(strong)
    assert table is not None
    assert table.header == ["method", "loss", "svc_entropy", "mia_acc 95% CI", "nomus 95% CI"]
    assert table.rows[0][1:] == [
        "0.600 / 0.650 / 0.020",
        "0.550 / 0.570 / 0.010",
        "[0.450, 0.700]",
        "[0.600, 0.800]",
    ]


def test_published_mufac_table() -> None:
    assert published_table(three_seed_records()) is None
    mufac = [record(m, 0, dataset="mufac") for m in ("original", "retrain", "dlfd", "ssd")]
    table = published_table(mufac)
    assert table is not None
    assert table.rows[0][0] == "original (Original)"
    assert table.rows[0][2] == "0.5951"  # published test_acc of the original
    assert table.rows[3][2] == "-"  # no published number for ssd


def write_bench_dir(folder: Path) -> Path:
    """A bench folder made by hand: results.json plus run files with details."""
    rng = np.random.default_rng(0)
    summaries = []
    for rec in three_seed_records():
        run_file = f"seed-{rec['seed']}/{rec['method']}.result.json"
        details = {
            "losses": {
                split: rng.gamma(2.0, scale, 50).round(5).tolist()
                for split, scale in (("forget", 0.1), ("unseen", 0.5), ("retain", 0.05))
            },
            "projection": {
                "method": "pca",
                "forget": rng.normal(0, 1, (30, 2)).round(4).tolist(),
                "unseen": rng.normal(1, 1, (30, 2)).round(4).tolist(),
            },
        }
        if rec["method"] == "dlfd":
            details["readings"] = [
                {"where": f"batch {b}", "forgetting_score": 0.3 / b, "val_acc": 0.6}
                for b in range(1, 8)
            ]
        full = {**rec, "details": details}
        (folder / run_file).parent.mkdir(parents=True, exist_ok=True)
        (folder / run_file).write_text(json.dumps(full))
        summaries.append({**rec, "run_file": run_file})
    (folder / "results.json").write_text(json.dumps(summaries))
    return folder


class _Refs(HTMLParser):
    """Collects every attribute that can load something, and the tags."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, name, value or ""))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_bench_dir(tmp_path_factory.mktemp("bench"))
    build_report(folder)
    return folder


def test_html_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "the page should embed its figures"
    for tag, name, value in parser.refs:
        assert value.startswith("data:image/png;base64,"), (tag, name, value[:40])
    assert "link" not in parser.tags and "script" not in parser.tags
    assert "http://" not in page and "https://" not in page
    # losses, paired differences, NoMUS vs time, DLFD trace, feature projections
    assert page.count("<img") == 5
    assert "retrain (reference)" in page and "class='best short'" in page


def test_markdown_and_figures_written(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    assert "| method | test_acc |" in md and "| retrain (reference) |" in md
    assert "**0.6500 ± 0.0000 \\[0.650, 0.650\\]**" in md  # dlfd's best test_acc in bold
    for name in ("losses", "paired", "nomus_time", "dlfd_trace", "features"):
        assert f"(figures/{name}.png)" in md
        assert (report_dir / "figures" / f"{name}.png").stat().st_size > 1000


def test_report_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = write_bench_dir(tmp_path / "b")
    html_out = tmp_path / "elsewhere" / "r.html"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder), "--html", str(html_out), "--md", str(tmp_path / "r.md")])
    assert not exc.value.code
    captured = capsys.readouterr()
    assert "retrain (reference)" in captured.out and str(html_out) in captured.err
    assert html_out.is_file() and (tmp_path / "figures" / "losses.png").is_file()


def test_report_without_results_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path)])
    assert exc.value.code == 2
    assert "results.json not found" in capsys.readouterr().err


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_html_renders_in_a_headless_browser(report_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.goto((report_dir / "report.html").resolve().as_uri(), wait_until="load")
            rows = page.evaluate(
                "Array.from(document.querySelectorAll('table')).map(t => t.tBodies[0].rows.length)"
            )
            widths = page.evaluate(
                "Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
            )
            title = page.title()
        finally:
            browser.close()
    assert len(rows) >= 3 and all(n > 0 for n in rows)
    assert len(widths) == 5 and all(w > 0 for w in widths)
    assert "orl-glasses" in title


def test_a_method_with_fewer_seeds_says_so() -> None:
    records = [r for r in three_seed_records() if not (r["method"] == "dlfd" and r["seed"] == 2)]
    labels = [row[0] for row in main_table(records).rows]
    assert labels == ["original", "retrain (reference)", "finetune", "dlfd (n=2)"]


def test_captions_only_mention_rows_that_are_drawn(tmp_path: Path) -> None:
    """Without the original and retrain rows, no caption (nor axis label) speaks of them."""
    folder = write_bench_dir(tmp_path)
    results = json.loads((folder / "results.json").read_text())
    kept = [r for r in results if r["method"] not in ("original", "retrain")]
    (folder / "results.json").write_text(json.dumps(kept))
    build_report(folder)
    md = (folder / "report.md").read_text()
    captions = [line for line in md.splitlines() if line.startswith("![")]
    assert {c.split("](")[1].split("/")[-1] for c in captions} >= {
        "losses.png)",
        "features.png)",
        "nomus_time.png)",
    }
    for caption in captions:
        assert "original)" not in caption and "before unlearning" not in caption, caption
        assert "retrained reference" not in caption and "retrain" not in caption, caption

    full = write_bench_dir(tmp_path / "full")
    build_report(full)
    md = (full / "report.md").read_text()
    assert "as for the retrained reference" in md
    assert "before unlearning (original)" in md
