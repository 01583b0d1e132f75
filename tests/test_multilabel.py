"""Multi-label end to end: a CSV manifest with label_<name> columns trains with BCE and is
evaluated with mean per-label accuracy and the attack on mean BCE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlfd.cli import main
from dlfd.losses import correct_predictions, task_loss


def test_task_loss_multilabel_is_mean_bce_per_sample() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 0.5, -3.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    per_sample = task_loss(logits, labels, "multilabel", reduction="none")
    p = torch.sigmoid(logits)
    by_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean(dim=1)
    assert torch.allclose(per_sample, by_hand)
    assert torch.isclose(task_loss(logits, labels, "multilabel"), by_hand.mean())
    assert correct_predictions(logits, labels, "multilabel").tolist() == pytest.approx([1.0, 2 / 3])


def test_multilabel_manifest_trains_and_evaluates(tmp_path: Path, write_image, capsys) -> None:
    rng = np.random.default_rng(0)
    rows = ["path,label_smiling,label_glasses,identity"]
    for k in range(30):  # 30 people x 3 photos: forget 3 people, unseen ~5: an attack of 9 vs 9
        for j in range(3):
            write_image(tmp_path / f"p{k}" / f"{j}.png", size=(16, 16))
            rows.append(f"p{k}/{j}.png,{rng.integers(2)},{rng.integers(2)},p{k}")
    manifest = tmp_path / "faces.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.safetensors"
    common = ["-d", "csv", "--data-root", str(manifest), "--image-size", "16"]
    for args in (
        ["train", *common, "--model", "small_cnn", "--epochs", "2", "--out", str(out), "-q"],
        ["evaluate", "--model", str(out), "--json", str(tmp_path / "e.json")],
    ):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["task"] == "multilabel" and sidecar["num_classes"] == 2
    metrics = json.loads((tmp_path / "e.json").read_text())["results"][0]["metrics"]
    assert 0.0 <= metrics["test_acc"] <= 1.0 and "test_top2" not in metrics
    assert 0.0 <= metrics["forgetting_score"] <= 0.5
