"""Multi-label end to end: a CSV manifest with label_<name> columns trains with BCE and is
evaluated with mean per-label accuracy and the attack on mean BCE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

from dlfd.checkpoint import load_checkpoint
from dlfd.cli import main
from dlfd.data.loaders import ProblemLoaders
from dlfd.losses import correct_predictions, task_loss
from dlfd.scenarios import get_scenario


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
    evaluation = json.loads((tmp_path / "e.json").read_text())
    metrics = evaluation["results"][0]["metrics"]
    assert "test_top2" not in metrics
    # recompute the reported metrics by hand from the saved model's logits on the same splits
    model, meta = load_checkpoint(out)
    scenario = get_scenario("csv", split_seed=0, data_root=manifest, image_size=16)
    assert scenario.problem.forget_sha256 == evaluation["forget_sha256"]  # the same split
    loaders = ProblemLoaders(scenario.problem, meta.input_spec)
    logits, labels = {}, {}
    with torch.no_grad():
        for split in ("test", "forget", "unseen"):
            batches = list(loaders.loader(split, batch_size=64))
            logits[split] = torch.cat([model(x) for x, _ in batches]).double().numpy()
            labels[split] = torch.cat([y for _, y in batches]).double().numpy()
    assert metrics["n_forget"] == len(labels["forget"]) == 9
    assert metrics["n_unseen"] == len(labels["unseen"]) >= 9
    # test_acc: per-label accuracy of sigmoid(logit) >= 0.5 (logit >= 0), averaged over labels
    pred = (logits["test"] >= 0).astype(float)
    per_label = [accuracy_score(labels["test"][:, j], pred[:, j]) for j in range(2)]
    assert metrics["test_acc"] == pytest.approx(np.mean(per_label), abs=1e-12)

    # the attack: logistic regression on each sample's mean BCE over its labels, forget
    # (members) against unseen (non-members), balanced as the benchmark does (shuffle the
    # members with seed 42, then the larger side is shuffled and truncated), 10 stratified
    # 90/10 splits with random_state 0; forgetting score |attack accuracy - 0.5|
    def bce(split: str) -> np.ndarray:
        x, y = logits[split], labels[split]
        return (y * np.logaddexp(0, -x) + (1 - y) * np.logaddexp(0, x)).mean(axis=1)

    members, nonmembers = bce("forget"), bce("unseen")
    rng = np.random.RandomState(42)
    rng.shuffle(members)
    if nonmembers.size > members.size:
        rng.shuffle(nonmembers)
        nonmembers = nonmembers[: members.size]
    members = members[: nonmembers.size]
    features = np.concatenate([nonmembers, members]).reshape(-1, 1)
    is_member = np.r_[np.zeros(nonmembers.size), np.ones(members.size)]
    folds = cross_val_score(
        LogisticRegression(max_iter=1000),
        features,
        is_member,
        cv=StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=0),
        scoring="accuracy",
    )
    assert metrics["mia_acc"] == pytest.approx(folds.mean(), abs=1e-9)
    assert metrics["forgetting_score"] == pytest.approx(abs(folds.mean() - 0.5), abs=1e-9)
