"""``dlfd audit``: certificate content, verdicts, pages, and the LiRA shadows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FAST_TRAIN
from dlfd.audit.evidence import loss_exposure, most_exposed, per_person
from dlfd.audit.runner import AuditSettings, LoadedModel, run_audit
from dlfd.checkpoint import read_meta
from dlfd.cli import main
from dlfd.scenarios import get_scenario

FAST = FAST_TRAIN


def _run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit-models")
    paths = {}
    for role in ("original", "retrained"):
        paths[role] = root / f"{role}.safetensors"
        assert _run("train", "--role", role, "--out", str(paths[role]), *FAST) == 0
    return paths


def test_loss_exposure_by_hand() -> None:
    import numpy as np

    unseen = np.array([0.5, 1.0, 1.0, 2.0])
    exposure = loss_exposure(np.array([0.1, 1.0, 3.0]), unseen)
    # 0.1: all 4 strangers fit worse; 1.0: one worse, two ties (half each); 3.0: none
    assert exposure.tolist() == [1.0, 0.5, 0.0]


def test_per_person_and_most_exposed_by_hand() -> None:
    import numpy as np

    scores = {"unlearned": np.array([0.9, 0.1, 0.5, 0.3])}
    people = per_person(["a", "a", "b", ""], scores, ["x", "y", "z", "w"])
    assert people[1].per_image == [
        {"image": "x", "unlearned": 0.9},
        {"image": "y", "unlearned": 0.1},
    ]
    assert [(p.person, p.images, p.scores["unlearned"]) for p in people] == [
        ("(unknown)", 1, 0.3),
        ("a", 2, 0.5),
        ("b", 1, 0.5),
    ]
    top = most_exposed(["x", "y", "z", "w"], ["a", "a", "b", ""], scores["unlearned"], 2)
    assert [e["image"] for e in top] == ["x", "z"]


def test_audit_of_the_retrained_model_itself_passes(
    models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "audit"
    code = _run(
        "audit",
        "--model",
        str(models["retrained"]),
        "--original",
        str(models["original"]),
        "--reference",
        str(models["retrained"]),
        "--out",
        str(out),
        "--n-boot",
        "20",
    )
    assert code == 0
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["verdict"] == "pass"
    assert {"loss", "entropy", "svc_confidence", "svc_m_entropy"} <= set(cert["attacks"])
    for attack in cert["attacks"].values():
        assert attack["excess_over_reference"] == 0.0 and attack["verdict"] == "pass"
        assert 0.0 <= attack["unlearned"]["auc"] <= 1.0
        low, high = attack["unlearned_interval"]
        assert low <= attack["unlearned"]["accuracy"] <= high
    meta = read_meta(models["original"])
    assert cert["models"]["original"]["weights_sha256"] == meta.weights_sha256
    assert cert["scenario"]["forget_sha256"] == meta.forget_sha256
    assert cert["scenario"]["forgotten_people"] == sorted(p["person"] for p in cert["people"])
    low, high = cert["intervals"]["unlearned"]["mia_acc"]
    assert low <= cert["protocol"]["unlearned"]["mia_acc"] <= high
    assert cert["versions"]["torch"] and cert["created"].endswith("Z")
    assert cert["divergence_to_reference"]["kl_forget"] == 0.0
    page = (out / "audit.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    assert (out / "figures" / "losses.png").stat().st_size > 1000
    assert "figures/people.png" in (out / "audit.md").read_text()
    assert "base64" not in json.dumps(cert)  # no images in the certificate


class Memorizer(torch.nn.Module):
    """Confidently right on the training photos it was given, uniform on everything else."""

    def __init__(self, known: dict[bytes, int], classes: int) -> None:
        super().__init__()
        self.known, self.classes = known, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.classes)
        for i, row in enumerate(x):
            label = self.known.get(row.numpy().tobytes())
            if label is not None:
                out[i, label] = 12.0
        return out


def test_a_model_that_remembers_the_forget_set_fails(models: dict[str, Path]) -> None:
    from dlfd.checkpoint import load_checkpoint
    from dlfd.data import ProblemLoaders

    scenario = get_scenario("orl-glasses", split_seed=0, image_size=32)
    loaders = ProblemLoaders(scenario.problem, read_meta(models["original"]).input_spec)
    known = {}
    for split in ("retain", "forget"):
        for x, y in loaders.loader(split, batch_size=64):
            known.update(
                (row.numpy().tobytes(), int(label)) for row, label in zip(x, y, strict=True)
            )
    loaded = {
        name: LoadedModel(path, *load_checkpoint(path))
        for name, path in (("original", models["original"]), ("reference", models["retrained"]))
    }
    loaded["unlearned"] = LoadedModel(
        Path("memorizer"), Memorizer(known, 2), loaded["original"].meta
    )
    cert, _ = run_audit(
        scenario, loaded, device=torch.device("cpu"), settings=AuditSettings(n_boot=20)
    )
    assert cert["verdict"] == "fail" and "loss" in cert["summary"]
    assert cert["attacks"]["loss"]["unlearned"]["accuracy"] == 1.0
    assert cert["attacks"]["loss"]["verdict"] == "fail"
    assert all(p["scores"]["unlearned"] > 0.9 for p in cert["people"])


def test_lira_trains_shadows_once_and_compares_with_the_reference(
    models: dict[str, Path], tmp_path: Path
) -> None:
    args = [
        "audit",
        "--model",
        str(models["retrained"]),
        "--original",
        str(models["original"]),
        "--reference",
        str(models["retrained"]),
        "--out",
        str(tmp_path / "a"),
        "--n-boot",
        "10",
        "--shadows",
        "2",
        "--shadow-dir",
        str(tmp_path / "shadows"),
    ]
    assert _run(*args) == 0
    lira = json.loads((tmp_path / "a" / "certificate.json").read_text())["lira"]
    assert (lira["n_in"], lira["n_out"]) == (3, 2)  # original + 2 shadows; 2 shadow retrains
    # the target is the reference itself: indistinguishable from the control
    assert lira["excess"] == 0.0 and lira["verdict"] == "pass"
    assert lira["auc"] == pytest.approx(0.5)
    shadows = sorted((tmp_path / "shadows").glob("*.safetensors"))
    assert len(shadows) == 4
    stamps = [p.stat().st_mtime_ns for p in shadows]
    assert _run(*args) == 0
    assert [p.stat().st_mtime_ns for p in shadows] == stamps  # reused, not retrained


def test_lira_with_one_shadow_is_refused_before_any_work(
    models: dict[str, Path], tmp_path: Path, capsys
) -> None:
    code = _run(
        "audit",
        "--model",
        str(models["retrained"]),
        "--original",
        str(models["original"]),
        "--reference",
        str(models["retrained"]),
        "--out",
        str(tmp_path / "a"),
        "--shadows",
        "1",
    )
    assert code == 2 and "at least 2 shadow models" in capsys.readouterr().err
    assert not (tmp_path / "a" / "shadows").exists()


def test_swapped_or_mismatched_models_are_refused(
    models: dict[str, Path], tmp_path: Path, capsys
) -> None:
    swapped = (
        "audit",
        "--model",
        str(models["retrained"]),
        "--original",
        str(models["retrained"]),
        "--reference",
        str(models["original"]),
        "--out",
        str(tmp_path / "a"),
    )
    assert _run(*swapped) == 2
    assert "is a retrained model; it must be the original model" in capsys.readouterr().err
    other_split = (
        "audit",
        "--model",
        str(models["original"]),
        "--original",
        str(models["original"]),
        "--reference",
        str(models["retrained"]),
        "--out",
        str(tmp_path / "b"),
        "--split-seed",
        "3",
    )
    assert _run(*other_split) == 2
    assert "split of seed 0" in capsys.readouterr().err


def test_evaluate_attacks_interval_follows_lambda(models: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "e.json"
    assert (
        _run(
            "evaluate",
            "--model",
            str(models["original"]),
            "--attacks",
            "--lambda",
            "1.0",
            "--json",
            str(report),
        )
        == 0
    )
    metrics = json.loads(report.read_text())["results"][0]["metrics"]
    assert metrics["nomus"] == metrics["test_acc"]  # lambda 1: NoMUS is test accuracy
    assert metrics["nomus_ci_low"] <= metrics["test_acc"] <= metrics["nomus_ci_high"]
