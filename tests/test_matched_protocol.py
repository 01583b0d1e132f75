"""The label-matched attack in the protocol, and the label-shift warning of evaluate, data check
and bench (a forgotten person who wears glasses, unseen people who do not)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST_BENCH, FAST_TRAIN, _write_image
from dlfd.bench.records import validate_bench_record
from dlfd.metrics import SplitOutputs, per_sample_loss, protocol_metrics
from dlfd.metrics.matching import matched_attack_reason, matched_mia_accuracy
from dlfd.metrics.protocol import MAIN_METRICS, METRIC_DESCRIPTIONS

Cli = Callable[..., tuple[int, str, str]]
MATCHED_KEYS = ("mia_acc_matched", "forgetting_score_matched", "nomus_matched")
WARNING = "warning: forget and unseen have different class mixes"


# --- protocol_metrics ----------------------------------------------------------------------


def _label_only_outputs(labels: torch.Tensor, rng: np.random.Generator) -> SplitOutputs:
    """Two-class logits whose loss depends on the label only: class 1 easy, class 0 hard."""
    noise = torch.as_tensor(rng.normal(0, 0.05, len(labels)), dtype=torch.float32)
    logits = torch.zeros(len(labels), 2)
    logits[:, 1] = 2.0 + noise  # class 1: loss ~0.13, class 0: loss ~2.13
    return SplitOutputs(logits, labels)


def _glasses_outputs(
    forget: torch.Tensor, unseen: torch.Tensor, seed: int = 0
) -> dict[str, SplitOutputs]:
    rng = np.random.default_rng(seed)
    test = torch.tensor([0, 1] * 20)
    return {
        "retain": _label_only_outputs(torch.tensor([0, 1] * 30), rng),
        "forget": _label_only_outputs(forget, rng),
        "test": _label_only_outputs(test, rng),
        "unseen": _label_only_outputs(unseen, rng),
    }


GLASSES_FORGET = torch.ones(60, dtype=torch.long)  # every forgotten photo: glasses
GLASSES_UNSEEN = torch.tensor([1] * 20 + [0] * 40)  # most unseen photos: none


def test_matched_keys_read_membership_not_the_label() -> None:
    outputs = _glasses_outputs(GLASSES_FORGET, GLASSES_UNSEEN)
    metrics = protocol_metrics(outputs, task="multiclass", lam=0.3)
    assert metrics["mia_acc"] > 0.8  # the published attack reads the label
    assert abs(metrics["mia_acc_matched"] - 0.5) < 0.2  # the matched one cannot
    fs = abs(metrics["mia_acc_matched"] - 0.5)
    assert metrics["forgetting_score_matched"] == pytest.approx(fs)
    assert metrics["nomus_matched"] == pytest.approx(0.3 * metrics["test_acc"] + 0.7 * (1 - 2 * fs))
    # the published keys keep their definition
    assert metrics["forgetting_score"] == pytest.approx(abs(metrics["mia_acc"] - 0.5))
    assert metrics["nomus"] == pytest.approx(
        0.3 * metrics["test_acc"] + 0.7 * (1 - 2 * metrics["forgetting_score"])
    )
    forget, unseen = outputs["forget"], outputs["unseen"]
    matched = matched_mia_accuracy(
        per_sample_loss(forget.logits, forget.labels, "multiclass"),
        per_sample_loss(unseen.logits, unseen.labels, "multiclass"),
        forget.labels,
        unseen.labels,
        "multiclass",
    )
    assert matched.accuracy == pytest.approx(metrics["mia_acc_matched"], abs=1e-9)
    assert all(key in METRIC_DESCRIPTIONS for key in MATCHED_KEYS)


def test_reference_gaps_keep_their_published_keys() -> None:
    outputs = _glasses_outputs(GLASSES_FORGET, GLASSES_UNSEEN, seed=0)
    reference = _glasses_outputs(GLASSES_FORGET, GLASSES_UNSEEN, seed=1)
    metrics = protocol_metrics(outputs, task="multiclass", reference=reference)
    gaps = [key for key in metrics if key.startswith("gap_")]
    assert sorted(gaps) == ["gap_forget_acc", "gap_mia_acc", "gap_retain_acc", "gap_test_acc"]
    assert metrics["avg_gap"] == pytest.approx(sum(metrics[k] for k in gaps) / 4)
    assert "mia_acc_matched" in metrics  # the model's own, not the reference's


@pytest.mark.parametrize(
    ("forget", "unseen", "why"),
    [
        (torch.ones(30, dtype=torch.long), torch.zeros(30, dtype=torch.long), "share no class"),
        (
            torch.tensor([1] * 28 + [0] * 2),
            torch.tensor([0] * 28 + [1] * 2),
            "too few matched samples",
        ),
    ],
)
def test_matched_keys_are_absent_when_the_attack_cannot_run(
    forget: torch.Tensor, unseen: torch.Tensor, why: str
) -> None:
    metrics = protocol_metrics(_glasses_outputs(forget, unseen), task="multiclass")
    assert not set(MATCHED_KEYS) & set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert "mia_acc" in metrics and "nomus" in metrics
    reason = matched_attack_reason(forget, unseen, "multiclass")
    assert reason is not None and why in reason
    losses = np.zeros(len(forget)), np.zeros(len(unseen))
    assert reason == matched_mia_accuracy(*losses, forget, unseen, "multiclass").reason


def test_matched_attack_reason_is_none_when_it_runs() -> None:
    assert matched_attack_reason(GLASSES_FORGET, GLASSES_UNSEEN, "multiclass") is None


def test_main_metrics_put_the_matched_keys_beside_the_published_ones() -> None:
    order = list(MAIN_METRICS)
    assert order.index("mia_acc_matched") == order.index("mia_acc") + 1
    assert order.index("nomus_matched") == order.index("nomus") + 1


# --- commands on a label-shifted csv scenario ------------------------------------------------


@pytest.fixture
def glasses_manifest(tmp_path: Path) -> Path:
    """A ``csv`` manifest with a split column: the one forgotten person wears glasses on every
    photo ("yes"), nobody in unseen does ("no"); retain, val and test mix both."""
    root = tmp_path / "glasses"
    lines = ["path,label,identity,split"]

    def person(name: str, split: str, labels: list[str]) -> None:
        for j, label in enumerate(labels):
            _write_image(root / name / f"{j}.png", size=(16, 16))
            lines.append(f"{name}/{j}.png,{label},{name},{split}")

    for k in range(6):
        person(f"r{k}", "retain", ["yes", "no"] * 3)
    person("f0", "forget", ["yes"] * 10)
    person("v0", "val", ["yes", "no"] * 2)
    for k in range(2):
        person(f"t{k}", "test", ["yes", "no"] * 3)
    for k in range(2):
        person(f"u{k}", "unseen", ["no"] * 6)
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _flat(text: str) -> str:
    """``text`` with runs of whitespace as one space (a narrow console wraps long lines)."""
    return " ".join(text.split())


def _train(cli: Cli, manifest: Path, out: Path) -> Path:
    code, _, err = cli("train", "-d", "csv", "--data-root", manifest, "--out", out, *FAST_TRAIN)
    assert code == 0, err
    return out


def test_evaluate_warns_and_records_the_label_shift(
    cli: Cli, glasses_manifest: Path, tmp_path: Path
) -> None:
    model = _train(cli, glasses_manifest, tmp_path / "m" / "original.safetensors")
    report = tmp_path / "eval.json"
    code, out, err = cli("evaluate", "-m", model, "--json", report)
    assert code == 0, err
    err = _flat(err)
    assert WARNING in err and "total variation 1.00" in err
    assert "note: no label-matched attack" in err and "share no class" in err
    record = json.loads(report.read_text())
    shift = record["label_shift"]
    assert shift["tv"] == pytest.approx(1.0)
    assert shift["forget"] == {"no": 0.0, "yes": 1.0}
    assert shift["unseen"] == {"no": 1.0, "yes": 0.0}
    assert shift["warning"].startswith("forget and unseen have different class mixes")
    assert "share no class" in record["matched_attack"]["reason"]
    metrics = record["results"][0]["metrics"]
    assert "mia_acc" in metrics and not set(MATCHED_KEYS) & set(metrics)
    assert "mia_acc" in out


def test_evaluate_without_a_shift_is_silent_and_matched(
    cli: Cli, csv_dataset: Path, tmp_path: Path
) -> None:
    model = _train(cli, csv_dataset, tmp_path / "m" / "original.safetensors")
    report = tmp_path / "eval.json"
    code, out, err = cli("evaluate", "-m", model, "--json", report)
    assert code == 0, err
    assert "warning:" not in err and "note: no label-matched" not in err
    record = json.loads(report.read_text())
    assert record["label_shift"]["warning"] is None and "matched_attack" not in record
    assert set(MATCHED_KEYS) <= set(record["results"][0]["metrics"])
    assert "mia_acc_matched" in out and "nomus_matched" in out


def test_data_check_warns_about_the_label_shift(
    cli: Cli, glasses_manifest: Path, tmp_path: Path
) -> None:
    report = tmp_path / "check.json"
    code, _, err = cli(
        "data", "check", "-d", "csv", "--data-root", glasses_manifest, "--json", report
    )
    assert code == 0, err
    err = _flat(err)
    assert WARNING in err and "note: no label-matched attack" in err
    shift = json.loads(report.read_text())["label_shift"]
    assert shift["tv"] == pytest.approx(1.0) and shift["warning"] is not None


def test_bench_records_carry_the_label_shift(
    cli: Cli, glasses_manifest: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    args = (
        "bench",
        "-d",
        "csv",
        "--data-root",
        glasses_manifest,
        *FAST_BENCH,
        "--methods",
        "original,retrain",
        "--seeds",
        "0",
        "--quiet",
        "--out",
        out,
        "--cache-dir",
        tmp_path / "cache",
    )
    code, _, err = cli(*args)
    assert code == 0, err
    err = _flat(err)
    assert err.count(WARNING.replace("warning:", "seed 0: warning:")) == 1
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results] == ["original", "retrain"]
    for summary in results:
        validate_bench_record(summary, "results.json")
        assert summary["label_shift"]["tv"] == pytest.approx(1.0)
        assert summary["label_shift"] == results[0]["label_shift"]
        record = json.loads((out / summary["run_file"]).read_text())
        validate_bench_record(record, summary["run_file"])
        assert record["label_shift"] == summary["label_shift"]
    log = (out / "bench.log").read_text()
    assert log.count("seed 0: warning: forget and unseen") == 1
    # a rerun reuses both runs (the config hash is unchanged) and keeps the entry, also for a
    # record written before records had it
    old = out / results[0]["run_file"]
    record = json.loads(old.read_text())
    del record["label_shift"]
    old.write_text(json.dumps(record))
    code, _, err = cli(*args)
    assert code == 0, err
    assert "0 run(s) done now, 2 reused" in err
    again = json.loads((out / "results.json").read_text())
    assert [r["label_shift"] for r in again] == [r["label_shift"] for r in results]
