"""``benchmarks/dlfd_speed.py --mufac-shape``: projected numbers follow from measured ones."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dlfd_speed.py"
TINY = ["--mufac-shape", "--image-size", "32", "--batches", "1", "--steps", "2"]
TINY += ["--device", "cpu", "--model", "small_cnn"]
#: label of each printed projection row -> its key in the JSON
ROWS = {
    "fine-tuning epoch": "finetune_epoch",
    "dlfd paper, synthesis every batch": "dlfd_paper_every_batch",
    "official per-batch evaluation": "official_evaluation",
    "dlfd official schedule (synth + eval)": "dlfd_official_schedule",
    "dlfd paper, updates=24 (upper bound)": "dlfd_updates_upper_bound",
}


def load_script() -> ModuleType:
    """The benchmark script as a module (``benchmarks`` is not a package)."""
    spec = importlib.util.spec_from_file_location("dlfd_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed() -> ModuleType:
    """The script, loaded once for the module's tests."""
    return load_script()


@pytest.fixture(scope="module")
def tiny_run(speed: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One tiny ``--mufac-shape`` run: its JSON record and its printed text."""
    path = tmp_path_factory.mktemp("speed") / "speed.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        speed.main([*TINY, "--json", str(path)])
    return json.loads(path.read_text()), out.getvalue()


def test_batch_counts_are_those_of_the_real_sizes(tiny_run: tuple[dict, str]) -> None:
    record, _ = tiny_run
    assert record["batch_counts"] == {
        "retain": math.ceil(10_000 / 64),
        "forget": math.ceil(1_000 / 64),
        "val": math.ceil(1_000 / 64),
        "evaluation": math.ceil(10_000 / 64) + 2 * math.ceil(1_000 / 64),
    }
    assert record["batch_counts"]["retain"] == 157
    assert record["config"]["batch_size"] == 64 and record["config"]["timed_batches"] == 1


def test_batch_counts_round_up(speed: ModuleType) -> None:
    args = argparse.Namespace(retain_size=130, forget_size=64, val_size=1, batch_size=64)
    assert speed.batch_counts(args) == {"retain": 3, "forget": 1, "val": 1, "evaluation": 5}


def test_projection_is_per_batch_cost_times_batch_count(tiny_run: tuple[dict, str]) -> None:
    record, _ = tiny_run
    per_batch, counts = record["per_batch_s"], record["batch_counts"]
    for name, values in record["samples_s"].items():
        assert len(values) == 1 and per_batch[name] == pytest.approx(sum(values) / len(values))
        assert per_batch[name] > 0
    retain, evaluation = counts["retain"], counts["retain"] + counts["forget"] + counts["val"]
    eval_per_batch = per_batch["eval_forward"] * evaluation
    expected = {
        "finetune_epoch": per_batch["finetune_step"] * retain,
        "dlfd_paper_every_batch": per_batch["dlfd_paper_batch"] * retain,
        "official_evaluation": eval_per_batch * retain,
        "dlfd_official_schedule": (per_batch["dlfd_official_batch"] + eval_per_batch) * retain,
        "dlfd_updates_upper_bound": per_batch["dlfd_paper_batch"] * 24,
    }
    projected = record["projected"]
    assert projected["official_evaluation_per_batch_s"] == pytest.approx(eval_per_batch)
    assert projected["seconds"] == pytest.approx(expected, rel=1e-12)
    ratios = {name: value / expected["finetune_epoch"] for name, value in expected.items()}
    assert projected["ratios_to_finetune_epoch"] == pytest.approx(ratios, rel=1e-12)
    # the every-batch ratio is the ratio of the per-batch costs
    assert ratios["dlfd_paper_every_batch"] == pytest.approx(
        per_batch["dlfd_paper_batch"] / per_batch["finetune_step"]
    )
    assert record["k"] == 2 and record["target_ratio"] == 4
    assert "platform" in record["hardware"]


def test_project_by_hand(speed: ModuleType) -> None:
    per_batch = {
        "finetune_step": 0.5,
        "dlfd_paper_batch": 4.0,
        "dlfd_official_batch": 6.0,
        "eval_forward": 0.25,
    }
    counts = {"retain": 10, "forget": 2, "val": 2, "evaluation": 14}
    projected = speed.project(per_batch, counts, updates=3)
    assert projected["official_evaluation_per_batch_s"] == 3.5  # 0.25 x 14
    assert projected["seconds"] == {
        "finetune_epoch": 5.0,
        "dlfd_paper_every_batch": 40.0,
        "official_evaluation": 35.0,
        "dlfd_official_schedule": 95.0,  # (6 + 3.5) x 10
        "dlfd_updates_upper_bound": 12.0,
    }
    assert projected["ratios_to_finetune_epoch"] == {
        "finetune_epoch": 1.0,
        "dlfd_paper_every_batch": 8.0,
        "official_evaluation": 7.0,
        "dlfd_official_schedule": 19.0,
        "dlfd_updates_upper_bound": 2.4,
    }


def _row(text: str, label: str) -> list[float]:
    """The numbers of the printed projection row ``label``: batches, s/batch, s, ratio."""
    (line,) = [line for line in text.splitlines() if line.startswith(label + " ")]
    return [float(field) for field in line[len(label) :].split()]


def test_printed_projection_matches_the_record(tiny_run: tuple[dict, str]) -> None:
    record, text = tiny_run
    assert "PROJECTION" in text and "not measured epochs" in text
    assert "batch counts: retain 157 (10000 images), forget 16 (1000), val 16 (1000)" in text
    assert "upper bound" in text and "target <= K+2 = 4" in text
    seconds = record["projected"]["seconds"]
    ratios = record["projected"]["ratios_to_finetune_epoch"]
    for label, key in ROWS.items():
        count, cost, total, ratio = _row(text, label)
        assert count == (24 if key == "dlfd_updates_upper_bound" else 157)
        assert total == pytest.approx(count * cost, rel=2e-3)  # 4 significant digits printed
        assert total == pytest.approx(seconds[key], rel=1e-3)
        assert ratio == pytest.approx(ratios[key], abs=0.006)


def test_json_refuses_an_existing_file(
    speed: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "speed.json"
    path.write_text("kept\n")
    with pytest.raises(SystemExit) as stopped:
        speed.main([*TINY, "--json", str(path)])
    message = str(stopped.value.code)
    assert message == f"{path} exists; pass --force to overwrite it"
    assert path.read_text() == "kept\n"

    def measured(_args: argparse.Namespace) -> dict[str, Any]:
        return {"measured": True}

    monkeypatch.setattr(speed, "mufac_shape", measured)
    monkeypatch.setattr(speed, "print_mufac_shape", lambda _results: None)
    speed.main([*TINY, "--json", str(path), "--force"])
    assert json.loads(path.read_text()) == {"measured": True}


def test_default_mode_is_unchanged(speed: ModuleType) -> None:
    args = speed.parse_args([])
    assert not args.mufac_shape
    assert (args.dataset, args.device, args.steps, args.json) == ("orl-glasses", "cpu", 15, None)
