"""The audit's verdicts: label-matched attacks, the label-shift warning, the utility verdict and
how forgetting and utility combine (synthetic models on a tiny CSV scenario; no training)."""

from __future__ import annotations

import html
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from dlfd.audit.render import write_pages
from dlfd.audit.runner import (
    AuditSettings,
    LoadedModel,
    attack_verdict,
    combine_verdicts,
    one_sided_verdict,
    run_audit,
    utility_verdict,
)
from dlfd.checkpoint import CheckpointMeta
from dlfd.cli.audit import verdict_table
from dlfd.data import ProblemLoaders
from dlfd.errors import ConfigError
from dlfd.pages import md_text
from dlfd.scenarios import Scenario, get_scenario

# class indices follow the sorted class names: glasses = 0, plain = 1
GLASSES, PLAIN = 0, 1
PHOTOS = 10  # per person


#: One person per entry and split, forget and unseen with the same class mix.
BALANCED = {
    "retain": ["glasses", "plain"] * 2,
    "forget": ["glasses", "plain"],
    "val": ["plain"],
    "test": ["glasses", "plain"],
    "unseen": ["plain", "glasses"],
}


def _scenario(tmp_path: Path, write_image: Callable[..., Path], people: dict[str, list]) -> Any:
    """A CSV scenario: ``people[split]`` lists one class name per person of that split, each
    person with PHOTOS distinct random 8x8 photos of that class."""
    rows = ["path,label,identity,split"]
    counter = itertools.count()
    for split, labels in people.items():
        for label in labels:
            who = f"{split}{next(counter)}"
            for j in range(PHOTOS):
                write_image(tmp_path / "faces" / who / f"{j}.png")
                rows.append(f"{who}/{j}.png,{label},{who},{split}")
    manifest = tmp_path / "faces" / "faces.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return get_scenario("csv", data_root=manifest, image_size=8)


class Lookup(torch.nn.Module):
    """Logits looked up by the exact input photo: ``table[bytes] = logits``; ``default`` for
    photos not in the table."""

    def __init__(self, table: dict[bytes, torch.Tensor], default: torch.Tensor) -> None:
        super().__init__()
        self.table, self.default = table, default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [self.table.get(row.numpy().tobytes(), self.default) for row in x]
        return torch.stack(rows).float()


def _photos(scenario: Scenario) -> dict[str, list[tuple[bytes, int]]]:
    """Each split's photos as the models see them (input bytes) with their labels."""
    loaders = ProblemLoaders(scenario.problem, scenario.input_spec)
    photos: dict[str, list[tuple[bytes, int]]] = {}
    for split in ("retain", "forget", "val", "test", "unseen"):
        photos[split] = [
            (row.numpy().tobytes(), int(label))
            for x, y in loaders.loader(split, batch_size=64)
            for row, label in zip(x, y, strict=True)
        ]
    return photos


def _logits(label: int, margin: float) -> torch.Tensor:
    out = torch.zeros(2)
    out[label] = margin
    return out


def _loaded(scenario: Scenario, **modules: torch.nn.Module) -> dict[str, LoadedModel]:
    meta = CheckpointMeta(
        arch="synthetic", num_classes=2, task="multiclass", input_spec=scenario.input_spec
    )
    return {name: LoadedModel(Path(name), module, meta) for name, module in modules.items()}


def _audit(
    scenario: Scenario, models: dict[str, LoadedModel], **settings: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    return run_audit(
        scenario, models, device=torch.device("cpu"), settings=AuditSettings(n_boot=10, **settings)
    )


def _pages(cert: dict[str, Any], outputs: dict[str, Any], out: Path) -> tuple[str, str]:
    paths = write_pages(cert, outputs, "multiclass", out)
    return paths["markdown"].read_text(), paths["html"].read_text()


def test_label_shift_reference_looks_bad_unmatched_but_matched_attack_catches_memorizer(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    # Every forgotten person wears glasses; 1 of 10 unseen people does. Models score the label:
    # glasses photos get a low loss, plain photos a high one, whether seen or not.
    scenario = _scenario(
        tmp_path,
        write_image,
        {
            "retain": ["glasses", "plain", "glasses", "plain"],
            "forget": ["glasses"] * 3,
            "val": ["plain"],
            "test": ["glasses", "plain"],
            "unseen": ["glasses"] + ["plain"] * 9,
        },
    )
    biased = Lookup({}, _logits(GLASSES, 1.0))  # same output for every photo
    photos = _photos(scenario)
    # the unlearned model still fits every forgotten photo better than any other glasses photo
    remembers = Lookup({key: _logits(GLASSES, 8.0) for key, _ in photos["forget"]}, biased.default)
    cert, outputs = _audit(
        scenario, _loaded(scenario, original=remembers, unlearned=remembers, reference=biased)
    )
    loss = cert["attacks"]["loss"]
    # the retrained reference never saw the forget set, yet the published attack "finds" it
    assert loss["published"]["reference"]["accuracy"] > 0.8
    assert cert["protocol"]["reference"]["mia_acc"] == loss["published"]["reference"]["accuracy"]
    # on 10 glasses photos per side it cannot: every matched photo has the same loss
    assert cert["matching"]["per_side"] == loss["per_side"] == PHOTOS
    assert cert["matching"]["reason"] is None
    assert loss["reference"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    # the unlearned model's memory shows on the matched samples, and decides the verdict
    assert loss["unlearned"]["accuracy"] == pytest.approx(1.0)
    assert loss["verdict"] == "fail" and cert["verdicts"]["forgetting"] == "fail"
    assert cert["verdict"] == "fail" and "loss" in cert["summary"]
    # judged on the published numbers, the bad-looking reference would have excused it
    excess = loss["published"]["unlearned"]["accuracy"] - loss["published"]["reference"]["accuracy"]
    assert excess <= AuditSettings().tolerance
    # the shift is measured, warned about in the certificate and shown on both pages
    shift = cert["label_shift"]
    assert shift["tv"] == pytest.approx(0.9)  # forget 100% glasses, unseen 10%
    assert shift["forget"] == {"glasses": 1.0, "plain": 0.0}
    warning = shift["warning"]
    assert warning and "0.90" in warning and "glasses 1.00" in warning
    md, page = _pages(cert, outputs, tmp_path / "pages")
    assert f"> **Warning:** {md_text(warning)}" in md
    assert md.index("Warning:") < md.index("## ")  # before any table
    assert f"<strong>Warning:</strong> {html.escape(warning)}" in page
    assert "published acc. (O / U / R)" in md and "10 per side" in md


def test_no_label_shift_no_warning(tmp_path: Path, write_image: Callable[..., Path]) -> None:
    scenario = _scenario(
        tmp_path,
        write_image,
        BALANCED,
    )
    biased = Lookup({}, _logits(GLASSES, 1.0))
    cert, outputs = _audit(
        scenario, _loaded(scenario, original=biased, unlearned=biased, reference=biased)
    )
    assert cert["label_shift"]["tv"] == 0.0 and cert["label_shift"]["warning"] is None
    assert cert["matching"]["per_side"] == 2 * PHOTOS
    assert cert["verdict"] == "pass"
    md, page = _pages(cert, outputs, tmp_path / "pages")
    assert "Warning:" not in md and "Warning:" not in page


def test_a_model_that_lost_its_retain_accuracy_fails_on_utility_though_attacks_pass(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    scenario = _scenario(
        tmp_path,
        write_image,
        BALANCED,
    )
    photos = _photos(scenario)
    right = {key: _logits(label, 4.0) for split in photos for key, label in photos[split]}
    oracle = Lookup(right, torch.zeros(2))  # right, equally sure, on every photo
    # the same, except wrong on every retain photo ("forgot the whole training set")
    wrong_retain = {key: _logits(1 - label, 4.0) for key, label in photos["retain"]}
    forgot_all = Lookup({**right, **wrong_retain}, torch.zeros(2))
    cert, outputs = _audit(
        scenario, _loaded(scenario, original=oracle, unlearned=forgot_all, reference=oracle)
    )
    assert all(a["verdict"] == "pass" for a in cert["attacks"].values())
    assert cert["verdicts"] == {"forgetting": "pass", "utility": "fail"}
    utility = cert["utility"]
    assert utility["tolerance"] == 0.05 and utility["verdict"] == "fail"
    retain = utility["retain_acc"]
    assert (retain["unlearned"], retain["reference"], retain["difference"]) == (0.0, 1.0, -1.0)
    assert retain["difference_interval"] == [-1.0, -1.0] and retain["verdict"] == "fail"
    assert utility["test_acc"]["difference"] == 0.0 and utility["test_acc"]["verdict"] == "pass"
    assert cert["verdict"] == "fail"
    assert cert["summary"].startswith("FAIL: forgetting pass")
    assert "utility fail" in cert["summary"] and "retain_acc below" in cert["summary"]
    md, page = _pages(cert, outputs, tmp_path / "pages")
    assert "Utility: accuracy of the unlearned model" in md and "FAIL" in md
    assert "retain_acc" in page
    table = _table_text(cert)
    assert "retain accuracy" in table and "test accuracy" in table
    assert "U-R [-1.000, -1.000]" in table
    # a tolerance of the whole accuracy range lets the same model pass
    lenient, _ = _audit(
        scenario,
        _loaded(scenario, original=oracle, unlearned=forgot_all, reference=oracle),
        utility_tolerance=1.0,
    )
    assert lenient["utility"]["verdict"] == "pass" and lenient["verdict"] == "pass"
    assert lenient["settings"]["utility_tolerance"] == 1.0


def test_no_class_in_common_makes_every_attack_inconclusive_with_the_reason(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    scenario = _scenario(
        tmp_path,
        write_image,
        {
            "retain": ["glasses", "plain"] * 2,
            "forget": ["glasses", "glasses"],
            "val": ["plain"],
            "test": ["glasses", "plain"],
            "unseen": ["plain", "plain"],
        },
    )
    biased = Lookup({}, _logits(GLASSES, 1.0))
    cert, outputs = _audit(
        scenario, _loaded(scenario, original=biased, unlearned=biased, reference=biased)
    )
    reason = "forget and unseen samples share no class"
    assert cert["matching"]["per_side"] == 0 and cert["matching"]["reason"] == reason
    assert {"loss", "entropy", "svc_confidence"} <= set(cert["attacks"])
    for attack in cert["attacks"].values():
        assert attack["verdict"] == "inconclusive" and attack["reason"] == reason
        # no number pretends to measure membership
        assert attack["unlearned"] is None and attack["reference"] is None
        assert attack["unlearned_interval"] is None and attack["excess_over_reference"] is None
    # the published loss attack reads the label (the loss is all it sees)
    assert cert["attacks"]["loss"]["published"]["unlearned"]["accuracy"] > 0.9
    assert cert["verdicts"] == {"forgetting": "inconclusive", "utility": "pass"}
    assert cert["verdict"] == "inconclusive"
    assert cert["summary"].startswith("INCONCLUSIVE") and reason in cert["summary"]
    assert cert["label_shift"]["tv"] == 1.0 and cert["label_shift"]["warning"]
    md, page = _pages(cert, outputs, tmp_path / "pages")
    assert md_text(reason) in md and reason in page
    assert "n/a" in md
    table = _table_text(cert)
    assert "n/a" in table and "inconclusive" in table


def _table_text(cert: dict[str, Any]) -> str:
    console = Console(width=200, record=True, markup=False)
    with console.capture() as capture:
        console.print(verdict_table(cert, "audit"))
    return capture.get()


@pytest.mark.parametrize(
    ("forgetting", "utility", "overall"),
    [
        ("pass", "pass", "pass"),
        ("pass", "fail", "fail"),
        ("fail", "pass", "fail"),
        ("fail", "fail", "fail"),
        ("pass", "inconclusive", "inconclusive"),
        ("inconclusive", "pass", "inconclusive"),
        ("inconclusive", "inconclusive", "inconclusive"),
        ("inconclusive", "fail", "fail"),
        ("fail", "inconclusive", "fail"),
    ],
)
def test_overall_verdict_needs_forgetting_and_utility(
    forgetting: str, utility: str, overall: str
) -> None:
    assert combine_verdicts(forgetting, utility) == overall


def test_combine_verdicts_edge_cases() -> None:
    assert combine_verdicts("pass", "pass", "pass", "pass") == "pass"
    assert combine_verdicts("pass", "inconclusive", "fail", "pass") == "fail"
    assert combine_verdicts() == "inconclusive"  # nothing judged cannot pass
    with pytest.raises(ConfigError, match="unknown verdict"):
        combine_verdicts("pass", "PASS")


def test_one_rule_for_attacks_and_utility() -> None:
    tol = 0.05
    # the rule on the excess (how much worse than the reference) and its interval
    assert one_sided_verdict(0.05, (-0.1, 0.2), tol) == "pass"
    assert one_sided_verdict(0.06, (0.0, 0.2), tol) == "inconclusive"
    assert one_sided_verdict(0.2, (0.051, 0.3), tol) == "fail"
    assert one_sided_verdict(-0.5, (-0.6, -0.4), tol) == "pass"  # better than the reference
    # attacks: accuracy above the reference's is the excess
    assert attack_verdict(0.54, (0.45, 0.63), 0.5, tol) == "pass"
    assert attack_verdict(0.62, (0.52, 0.72), 0.5, tol) == "inconclusive"
    assert attack_verdict(0.8, (0.7, 0.9), 0.5, tol) == "fail"
    # utility: accuracy below the reference's is the excess (difference = unlearned - reference)
    assert utility_verdict(-0.03, (-0.1, 0.04), tol) == "pass"
    assert utility_verdict(0.1, (0.0, 0.2), tol) == "pass"  # better than the reference
    assert utility_verdict(-0.07, (-0.15, 0.01), tol) == "inconclusive"
    assert utility_verdict(-0.256, (-0.35, -0.16), tol) == "fail"  # orl-glasses DLFD: 0.744/1.0
    assert utility_verdict(-0.1, (-0.2, -0.049), tol) == "inconclusive"  # interval reaches -tol


def test_utility_tolerance_is_bounded() -> None:
    assert AuditSettings(utility_tolerance=0.0).utility_tolerance == 0.0
    for bad in (-0.01, 1.5):
        with pytest.raises(ConfigError, match="utility tolerance"):
            AuditSettings(utility_tolerance=bad)


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_utility_tolerance_option_is_bounded(
    cli: Callable[..., tuple[int, str, str]],
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ("audit", "-m", "a", "--original", "a", "-r", "a", "--out", "o")
    code, _, err = cli(*args, "--utility-tolerance", value)
    assert code == 2 and "--utility-tolerance" in err
    assert not list(tmp_path.iterdir())  # refused before any work


def test_cli_warns_about_label_shift_and_shows_utility_rows(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    scenario = _scenario(
        tmp_path,
        write_image,
        {
            "retain": ["glasses", "plain", "glasses", "plain"],
            "forget": ["glasses"] * 2,
            "val": ["plain"],
            "test": ["glasses", "plain"],
            "unseen": ["glasses"] + ["plain"] * 4,
        },
    )
    manifest = str(scenario.data_root)
    fast = ("--model", "small_cnn", "--image-size", "16", "--epochs", "1", "--quiet")
    paths = {}
    for role in ("original", "retrained"):
        paths[role] = tmp_path / f"{role}.safetensors"
        code, _, err = cli(
            "train",
            "-d",
            "csv",
            "--data-root",
            manifest,
            "--role",
            role,
            "--out",
            paths[role],
            *fast,
        )
        assert code == 0, err
    out = tmp_path / "audit"
    code, stdout, err = cli(
        "audit",
        "-m",
        paths["retrained"],
        "--original",
        paths["original"],
        "-r",
        paths["retrained"],
        "--out",
        out,
        "--n-boot",
        "10",
        "--utility-tolerance",
        "0.1",
    )
    assert code == 0, err  # the reference audited against itself
    assert "warning: forget and unseen have different class mixes" in err
    assert "retain accuracy" in stdout and "test accuracy" in stdout
    assert "utility pass" in stdout
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["settings"]["utility_tolerance"] == 0.1
    assert cert["matching"]["per_side"] == PHOTOS
    assert cert["verdicts"] == {"forgetting": "pass", "utility": "pass"}


def test_verdict_is_its_own_emphasised_block_with_code_spans(
    tmp_path: Path, write_image: Callable[..., Path]
) -> None:
    """The verdict word stands out (``<strong>`` with a class, bold in Markdown) in a block of
    its own; `code` in the summary becomes ``<code>``, escaped, and no HTML from data gets in."""
    scenario = _scenario(tmp_path, write_image, BALANCED)
    photos = _photos(scenario)
    right = {key: _logits(label, 4.0) for split in photos for key, label in photos[split]}
    oracle = Lookup(right, torch.zeros(2))
    cert, outputs = _audit(
        scenario, _loaded(scenario, original=oracle, unlearned=oracle, reference=oracle)
    )
    cert = {
        **cert,
        "verdict": "fail",
        "summary": "FAIL: utility fail (rerun with `--utility-tolerance 0.1`); "
        "`<script>alert(1)</script>` and <b>bold</b>",
    }
    md, page = _pages(cert, outputs, tmp_path / "pages")
    block = page.split("<p class='verdict verdict-fail'>", 1)[1].split("</p>", 1)[0]
    assert block.startswith("<strong class='verdict-word verdict-fail'>Verdict: FAIL</strong>")
    assert "<code>--utility-tolerance 0.1</code>" in block and "`" not in block
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in block
    assert "&lt;b&gt;bold&lt;/b&gt;" in block and "<script>" not in page and "<b>" not in page
    # the verdict paragraph closes before the next block starts
    after = page.split(block, 1)[1]
    assert after.startswith("</p><p")
    line = next(x for x in md.splitlines() if x.startswith("**Verdict"))
    assert line.startswith("**Verdict: FAIL** — ") and "`--utility-tolerance 0.1`" in line
    assert "<script>" not in md and "<b>" not in md
    index = md.splitlines().index(line)
    assert md.splitlines()[index + 1] == ""  # a paragraph of its own


def test_zero_height_bars_are_marked() -> None:
    from dlfd.audit.render import mark_zero_bars
    from dlfd.pages import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    bars = ax.bar([0, 1, 2], [0.0, 0.5, 0.001])
    labels = mark_zero_bars(ax, bars)
    plt.close(fig)
    assert [label.get_text() for label in labels] == ["0.0", "0.0"]
    assert len(ax.lines) == 2
