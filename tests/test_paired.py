"""Paired, seed-by-seed comparison in ``dlfd report``; seed ranges of ``--seeds``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon

from dlfd.bench.plan import MAX_RANGE_SEEDS, parse_seeds
from dlfd.bench.recipe_file import load_recipe_file
from dlfd.cli import main
from dlfd.cli.report import rich_table
from dlfd.errors import ConfigError
from dlfd.report import build_report
from dlfd.report.build import label_shift_warnings
from dlfd.report.paired import (
    _phrase,
    compare,
    compare_all,
    direction,
    headline_metrics,
    paired_differences,
    paired_table,
    sentences,
    wilcoxon_p,
)
from dlfd.report.tables import main_table, t_interval
from dlfd.runtime import SEED_MAX
from test_report import record, write_bench_dir

# --------------------------------------------------------------------------- statistics


def better_on_nine_of_ten() -> np.ndarray:
    rng = np.random.default_rng(1)
    diffs = 0.05 + rng.normal(0.0, 0.01, 10)
    diffs[3] = -0.01  # one seed where the method loses
    return diffs


def test_clear_improvement_is_decided_better_and_p_matches_scipy() -> None:
    diffs = better_on_nine_of_ten()
    result = compare("m", "dlfd", "nomus", range(10), diffs)
    assert result.verdict == "better"
    assert (result.wins, result.ties, result.losses) == (9, 0, 1)
    assert result.mean == pytest.approx(float(np.mean(diffs)))
    assert result.low is not None and result.high is not None
    assert 0.0 < result.low < result.mean < result.high
    assert result.p_value == pytest.approx(wilcoxon(diffs).pvalue)
    assert result.p_value < 0.01


def test_interval_is_a_seeded_percentile_bootstrap_of_the_mean() -> None:
    diffs = better_on_nine_of_ten()
    first = compare("m", "dlfd", "nomus", range(10), diffs)
    again = compare("m", "dlfd", "nomus", range(10), diffs)
    assert (first.low, first.high) == (again.low, again.high)  # seeded: reproducible
    rng = np.random.default_rng(0)
    means = [diffs[rng.integers(0, 10, size=10)].mean() for _ in range(2000)]
    low, high = np.quantile(means, [0.025, 0.975])
    assert (first.low, first.high) == pytest.approx((low, high))


def test_same_gap_against_the_method_is_decided_worse() -> None:
    result = compare("m", "dlfd", "test_acc", range(10), -better_on_nine_of_ten())
    assert result.verdict == "worse"
    assert (result.wins, result.ties, result.losses) == (1, 0, 9)


def test_noise_only_differences_are_not_decided() -> None:
    diffs = np.random.default_rng(2).normal(0.0, 0.05, 10)
    diffs -= diffs.mean()  # centred: the interval straddles 0
    result = compare("m", "dlfd", "nomus", range(10), diffs)
    assert result.verdict == "undecided"
    assert result.low is not None and result.low < 0.0 < result.high
    assert result.p_value == pytest.approx(wilcoxon(diffs).pvalue)
    assert result.p_value > 0.05


@pytest.mark.parametrize("metric", ["forgetting_score", "avg_gap", "gap_test_acc"])
def test_lower_is_better_metrics(metric: str) -> None:
    assert direction(metric) == -1
    lower = compare("m", "dlfd", metric, range(10), -better_on_nine_of_ten())
    assert lower.verdict == "better"
    assert (lower.wins, lower.losses) == (9, 1)
    higher = compare("m", "dlfd", metric, range(10), better_on_nine_of_ten())
    assert higher.verdict == "worse"


def test_directions_defined_once() -> None:
    for metric in ("test_acc", "retain_acc", "nomus", "nomus_matched"):
        assert direction(metric) == 1
    for metric in ("forget_acc", "mia_acc", "mia_acc_matched"):
        assert direction(metric) == 0
    result = compare("m", "dlfd", "mia_acc", range(10), better_on_nine_of_ten())
    assert result.verdict == "no direction"  # judged through forgetting_score
    assert (result.wins, result.losses) == (9, 1)  # higher / lower


def test_few_seeds_never_decide_even_when_every_difference_agrees() -> None:
    three = compare("m", "dlfd", "nomus", range(3), [0.05, 0.06, 0.07])
    assert three.low is not None and three.low > 0  # the bootstrap alone would say "better"
    assert (
        three.p_value == pytest.approx(wilcoxon([0.05, 0.06, 0.07]).pvalue) and three.p_value > 0.05
    )
    assert three.verdict == "undecided"
    assert "cannot decide" in _phrase(three)
    six = compare("m", "dlfd", "nomus", range(6), [0.05, 0.06, 0.07, 0.04, 0.05, 0.08])
    assert six.verdict == "better" and six.p_value < 0.05


def test_ties_few_seeds_and_all_zero() -> None:
    one = compare("m", "dlfd", "nomus", [0], [0.1])
    assert one.verdict == "too few" and one.p_value is None and one.low is None
    zeros = compare("m", "dlfd", "nomus", range(4), [0.0, 1e-13, -1e-13, 0.0])
    assert (zeros.wins, zeros.ties, zeros.losses) == (0, 4, 0)
    assert zeros.p_value is None and zeros.verdict == "undecided"
    assert wilcoxon_p([]) is None and wilcoxon_p([0.2]) is None
    with_zero = [0.0, 0.1, 0.2, -0.05, 0.3]
    assert wilcoxon_p(with_zero) == pytest.approx(wilcoxon(with_zero).pvalue)


def test_pairs_only_common_seeds() -> None:
    records = [record("dlfd", s, nomus=0.5 + 0.01 * s) for s in range(4)]
    records += [record("finetune", s, nomus=0.4) for s in (1, 2, 3, 7)]
    seeds, diffs = paired_differences(records, "finetune", "dlfd", "nomus")
    assert seeds == (1, 2, 3)
    assert diffs == pytest.approx((-0.11, -0.12, -0.13))


def ten_seed_records(**extra: float) -> list[dict]:
    """dlfd, a clearly worse finetune, a noise-level scrub, original and retrain over 10 seeds."""
    rng = np.random.default_rng(3)
    records = []
    for seed in range(10):
        base = 0.7 + 0.05 * rng.normal()
        noise = 0.03 * rng.normal()
        records += [
            record("original", seed, nomus=base - 0.2, avg_gap=0.2, **extra),
            record("retrain", seed, nomus=base + 0.01, avg_gap=0.0, **extra),
            record("dlfd", seed, nomus=base, avg_gap=0.03, **extra),
            record("finetune", seed, nomus=base - 0.05 + 0.01 * rng.normal(), avg_gap=0.1),
            record("scrub", seed, nomus=base + noise, avg_gap=0.03 - noise / 3),
        ]
    return records


def test_compare_all_methods_and_sentences() -> None:
    comparison = compare_all(ten_seed_records())
    assert comparison is not None
    assert comparison.methods == ("original", "retrain", "finetune", "scrub")
    assert comparison.metrics == (
        "test_acc",
        "retain_acc",
        "forget_acc",
        "mia_acc",
        "forgetting_score",
        "nomus",
        "avg_gap",
    )
    assert comparison.results["finetune"]["nomus"].verdict == "worse"
    assert comparison.results["finetune"]["avg_gap"].verdict == "worse"
    assert comparison.results["retrain"]["avg_gap"].verdict == "better"
    assert comparison.results["scrub"]["nomus"].verdict == "undecided"
    lines = sentences(comparison)
    assert len(lines) == 4
    assert lines[2].startswith("finetune vs dlfd: nomus: decided worse (")
    assert "avg_gap: decided worse" in lines[2]
    assert "nomus: not decided at 10 seeds" in lines[3]
    assert lines[1].startswith("retrain (reference) vs dlfd:")
    table = paired_table(comparison)
    assert table.header[0] == "method" and table.header[6] == "nomus (higher is better)"
    cell = table.rows[2][6]
    assert cell.startswith("-0.0") and cell.endswith(" worse") and "0/0/10" in cell
    assert (1, 7) in table.best  # retrain: decided better on avg_gap


def test_matched_metrics_join_when_present() -> None:
    records = ten_seed_records(mia_acc_matched=0.55, nomus_matched=0.6)
    assert headline_metrics(records)[-2:] == ["mia_acc_matched", "nomus_matched"]
    comparison = compare_all(records)
    assert comparison is not None
    # finetune lacks the matched metrics: no common seed, a "-" cell and a plain phrase
    assert comparison.results["finetune"]["nomus_matched"].n == 0
    assert "nomus_matched: no common seed" in sentences(comparison)[2]
    assert comparison.results["retrain"]["nomus_matched"].verdict == "undecided"  # all zero
    assert "nomus_matched" not in headline_metrics(ten_seed_records())


def test_absent_reference_gives_none() -> None:
    assert compare_all(ten_seed_records(), "nope") is None


# --------------------------------------------------------------------------- main table


def test_main_table_interval_is_the_t_interval() -> None:
    low, high = t_interval((0.6, 0.1, 3))  # type: ignore[misc]
    assert (low, high) == pytest.approx((0.6 - 0.24841, 0.6 + 0.24841), abs=1e-5)
    assert t_interval((0.6, 0.0, 1)) is None
    table = main_table([record("dlfd", s, test_acc=0.5 + 0.1 * s) for s in range(3)])
    assert table.rows[0][1] == "0.6000 ± 0.1000 [0.352, 0.848]"
    assert "t interval" in table.note.replace("Student-t", "t")
    terminal = rich_table(main_table(ten_seed_records(), digits=3, sep="±"))
    cells = [str(c) for c in terminal.columns[1].cells]
    assert cells and all("±" not in c and "[" not in c for c in cells)  # means only
    assert "95% intervals" in str(terminal.caption)


# --------------------------------------------------------------------------- seed ranges


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("0-19", tuple(range(20))),
        ("0-2,5,7-8", (0, 1, 2, 5, 7, 8)),
        ("3, 1-2", (3, 1, 2)),
        ("4-4", (4,)),
        (" 2 - 3 ", (2, 3)),
        ("0,1,2", (0, 1, 2)),
        ([0, 1, "2-3"], (0, 1, 2, 3)),
        (f"{SEED_MAX - 1}-{SEED_MAX}", (SEED_MAX - 1, SEED_MAX)),
    ],
)
def test_seed_ranges(text: str | list, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5-2", "seed range '5-2' is reversed or empty"),
        ("0-3,2", "seed 2 is listed twice"),
        (f"0,{SEED_MAX}-{SEED_MAX + 1}", f"seeds must be at most {SEED_MAX}"),
        (f"0-{MAX_RANGE_SEEDS}", f"at most {MAX_RANGE_SEEDS} per range"),
        ("1-" + "9" * 5000, "seeds must be non-negative integers"),
        ("-1", "seeds must be non-negative integers, got '-1'"),
        ("3-", "seeds must be non-negative integers, got '3-'"),
        ("1--2", "seeds must be non-negative integers"),
        ("01-3", "seeds must be non-negative integers"),
        ("0,x", "seeds must be non-negative integers, got 'x'"),
        ("", "seeds must be non-negative integers"),
        ([], "give at least one seed"),
    ],
)
def test_bad_seed_ranges_are_refused(text: str | list, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_seeds(text)


def test_recipe_file_seeds_may_be_a_range(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"dataset": "orl-glasses", "seeds": "0-2,5"}))
    assert parse_seeds(load_recipe_file(path).seeds) == (0, 1, 2, 5)


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_bench_dir(tmp_path_factory.mktemp("paired"))
    build_report(folder)
    return folder


def test_report_has_the_paired_section(built: Path) -> None:
    page = (built / "report.html").read_text()
    md = (built / "report.md").read_text()
    for text in (page, md):
        assert "Paired comparison with dlfd" in text
        assert "finetune vs dlfd: nomus: not decided at 3 seeds" in text
        assert "fewer than 6 seeds cannot decide" in text
        assert "Wilcoxon" in text
    assert "(figures/paired.png)" in md
    assert (built / "figures" / "paired.png").stat().st_size > 1000
    assert page.count("<img") == 5
    assert "| method | test\\_acc (higher is better) |" not in md  # _ is not escaped
    assert "| method | test_acc (higher is better) |" in md
    # the paired section comes before the other figures, after the main table
    assert md.index("Paired comparison") < md.index("(figures/nomus_time.png)")


def test_compare_to_an_absent_method_is_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bench_dir(tmp_path / "b")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder), "--compare-to", "nope"])
    assert not exc.value.code
    captured = capsys.readouterr()
    assert "No paired comparison: the reference method 'nope' is not among the runs" in (
        captured.out
    )
    md = (folder / "report.md").read_text()
    assert "No paired comparison: the reference method 'nope'" in md
    assert "(figures/paired.png)" not in md
    assert "the reference method &#x27;nope&#x27;" in (folder / "report.html").read_text()


def test_compare_to_another_method_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_bench_dir(tmp_path / "b")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(folder), "--compare-to", "retrain"])
    assert not exc.value.code
    out = capsys.readouterr().out
    assert "dlfd vs retrain: nomus: not decided at" in out  # too few seeds to decide
    assert "Paired comparison with retrain" in (folder / "report.md").read_text()


def test_names_are_escaped_in_the_paired_section(tmp_path: Path) -> None:
    folder = write_bench_dir(tmp_path / "b")
    data = json.loads((folder / "results.json").read_text())
    for rec in data:
        if rec["method"] == "finetune":
            rec["method"] = "<b>*x*</b> $\\undefined{x}$"
            rec.pop("run_file")
    (folder / "results.json").write_text(json.dumps(data))
    build_report(folder)
    page = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    assert "<b>*x*" not in page and "&lt;b&gt;*x*&lt;/b&gt;" in page
    assert "<b>" not in md and "&lt;b&gt;\\*x\\*&lt;/b&gt;" in md
    assert (folder / "figures" / "paired.png").is_file()


def test_label_shift_warning_shown_once_per_warning(tmp_path: Path) -> None:
    folder = write_bench_dir(tmp_path / "b")
    data = json.loads((folder / "results.json").read_text())
    for rec in data:
        seed = rec["seed"]
        rec["label_shift"] = {
            "tv": 0.4 if seed < 2 else 0.0,
            "forget": {"a": 0.7, "b": 0.3},
            "unseen": {"a": 0.3, "b": 0.7},
            "warning": "forget and unseen <classes> differ (TV 0.40)" if seed < 2 else None,
        }
    (folder / "results.json").write_text(json.dumps(data))
    assert label_shift_warnings(data) == [
        "Label shift (seeds 0, 1): forget and unseen <classes> differ (TV 0.40)"
    ]
    build_report(folder)
    page = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    assert page.count("forget and unseen &lt;classes&gt; differ") == 1
    assert md.count("forget and unseen &lt;classes&gt; differ") == 1
    assert md.index("Label shift") < md.index("| method |")  # near the top
    assert label_shift_warnings([record("dlfd", 0)]) == []
    odd = [
        {**record("dlfd", 0), "label_shift": {"warning": 3}},
        {**record("x", 0), "label_shift": 1},
    ]
    assert label_shift_warnings(odd) == []
