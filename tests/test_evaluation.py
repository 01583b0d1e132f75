"""Running models over splits: order, mode restoration, and the protocol on real outputs."""

from __future__ import annotations

import pytest
import torch

from dlfd.data import ProblemLoaders
from dlfd.evaluation import evaluate_model, split_features, split_outputs
from dlfd.metrics import protocol_metrics
from dlfd.models import create_model
from dlfd.scenarios import get_scenario

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaders() -> ProblemLoaders:
    scenario = get_scenario("orl-identity", split_seed=0, image_size=32)
    return ProblemLoaders(scenario.problem, scenario.input_spec)


class LabelOracle(torch.nn.Module):
    """Predicts the true label of each ORL sample by looking its exact pixels up in a table."""

    def __init__(self, table: dict[bytes, int], classes: int) -> None:
        super().__init__()
        self.table, self.classes = table, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = [row.numpy().tobytes() for row in x]
        out = torch.zeros(len(keys), self.classes)
        for i, key in enumerate(keys):
            out[i, self.table[key]] = 10.0
        return out


def test_outputs_follow_split_order_and_restore_train_mode(loaders: ProblemLoaders) -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", 40).train()
    outputs = split_outputs(model, loaders, device=CPU, batch_size=7)
    assert model.training
    records = loaders.problem.records
    for split, out in outputs.items():
        idx = loaders.problem.split(split)
        assert out.logits.shape == (len(idx), 40)
        assert torch.equal(out.labels, torch.as_tensor(records.labels[idx]))
    again = split_outputs(model, loaders, device=CPU, batch_size=64)
    assert torch.allclose(outputs["test"].logits, again["test"].logits, atol=1e-5)


def test_perfect_model_scores_perfect_accuracy(loaders: ProblemLoaders) -> None:
    table = {}
    for split in ("retain", "forget", "val", "test", "unseen"):
        for x, y in loaders.loader(split, batch_size=64):
            table.update(
                (row.numpy().tobytes(), int(label)) for row, label in zip(x, y, strict=True)
            )
    metrics = evaluate_model(LabelOracle(table, 40), loaders, device=CPU)
    for split in ("retain", "forget", "val", "test", "unseen"):
        assert metrics[f"{split}_acc"] == 1.0
        assert metrics[f"{split}_top2"] == 1.0
    # every sample has the same loss: the attack is at chance, the model perfect: NoMUS 1
    assert metrics["mia_acc"] == 0.5 and metrics["forgetting_score"] == 0.0
    assert metrics["nomus"] == 1.0


def test_evaluate_model_equals_protocol_on_its_outputs(loaders: ProblemLoaders) -> None:
    torch.manual_seed(1)
    model, reference = create_model("small_cnn", 40), create_model("small_cnn", 40)
    metrics = evaluate_model(model, loaders, device=CPU, reference=reference, lam=0.3)
    expected = protocol_metrics(
        split_outputs(model, loaders, device=CPU),
        task="multiclass",
        reference=split_outputs(reference, loaders, device=CPU),
        lam=0.3,
    )
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["eval_s"] > 0


def test_split_features_have_the_penultimate_width(loaders: ProblemLoaders) -> None:
    model = create_model("small_cnn", 40)
    feats = split_features(model, loaders, "unseen", device=CPU)
    assert feats.shape == (40, model.feature_dim)
    assert model.training  # restored
