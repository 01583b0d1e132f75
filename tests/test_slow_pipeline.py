"""End-to-end check of the real recipe (slow: ~3 minutes on 2 CPU cores; `make test-slow`).

Trains the original and the retrained reference of ``orl-glasses`` with the scenario's own
recipe through the CLI and checks what the protocol must show: the original remembers its
training people (forget accuracy near 1), the retrained model never saw the forgotten people
(lower forget accuracy), and both learned the task (test accuracy above chance).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlfd.cli import main

pytestmark = pytest.mark.slow


def _run(*args: str) -> None:
    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, f"dlfd {' '.join(args)} failed"


def test_default_recipe_original_remembers_and_retrained_does_not(tmp_path: Path) -> None:
    original, retrained = tmp_path / "o.safetensors", tmp_path / "r.safetensors"
    _run("train", "--dataset", "orl-glasses", "--role", "original", "--out", str(original), "-q")
    _run("train", "--dataset", "orl-glasses", "--role", "retrained", "--out", str(retrained), "-q")
    report = tmp_path / "eval.json"
    _run(
        "evaluate",
        "--model",
        str(original),
        "--model",
        str(retrained),
        "--reference",
        str(retrained),
        "--json",
        str(report),
    )
    rows = {row["role"]: row["metrics"] for row in json.loads(report.read_text())["results"]}
    assert rows["original"]["forget_acc"] >= 0.95
    assert rows["original"]["retain_acc"] >= 0.95
    assert rows["retrained"]["forget_acc"] < rows["original"]["forget_acc"]
    for role in ("original", "retrained"):
        assert rows[role]["test_acc"] > 0.55
    assert rows["retrained"]["avg_gap"] == 0.0
