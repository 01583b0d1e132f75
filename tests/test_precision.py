"""bfloat16 autocast and channels-last for train, unlearn and evaluate (``--amp``,
``--channels-last``): checked on the CPU, where both run too; the GPU timings are
``make gpu-check``'s."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from dlfd.checkpoint import load_checkpoint
from dlfd.data.loaders import ProblemLoaders
from dlfd.evaluation import split_outputs
from dlfd.methods.dlfd import _autocast
from dlfd.runs.method_run import unlearn_on_scenario
from dlfd.runtime import Precision
from dlfd.scenarios import get_scenario
from dlfd.training import train_checkpoint
from dlfd.training.runner import config_hash, training_config

CPU = torch.device("cpu")
AMP = Precision(amp=True)
CHANNELS_LAST = Precision(channels_last=True)


@pytest.fixture(scope="module")
def scenario():
    found = get_scenario("orl-glasses", split_seed=0, data_root=None, image_size=16, options={})
    recipe = dataclasses.replace(found.recipe, model="small_cnn", epochs=2, batch_size=64)
    return dataclasses.replace(found, recipe=recipe)


@pytest.fixture(scope="module")
def trained(scenario, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precision")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the numbers below are one-thread numbers
    try:
        return {
            name: train_checkpoint(
                scenario,
                role="original",
                out=folder / f"{name}.safetensors",
                seed=0,
                device=CPU,
                precision=precision,
            ).path
            for name, precision in (("fp32", Precision()), ("amp", AMP), ("cl", CHANNELS_LAST))
        }
    finally:
        torch.set_num_threads(threads)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(path, device=CPU)
    return {k: v.float() for k, v in model.state_dict().items()}


def test_precision_enters_the_training_configuration_only_when_not_float32(
    scenario, trained: dict[str, Path]
) -> None:
    metas = {name: load_checkpoint(path, device=CPU)[1] for name, path in trained.items()}
    plain = config_hash(training_config(scenario, "original", 0, scenario.recipe))
    assert metas["fp32"].config_sha256 == plain  # float32 runs keep the hashes they had
    assert len({m.config_sha256 for m in metas.values()}) == 3
    assert metas["amp"].extra["precision"] == {"amp": True, "channels_last": False}
    assert "precision" not in metas["fp32"].extra


def test_amp_training_changes_the_numbers_a_little(trained: dict[str, Path]) -> None:
    fp32, amp = _weights(trained["fp32"]), _weights(trained["amp"])
    differences = [float((fp32[k] - amp[k]).abs().max()) for k in fp32]
    assert max(differences) > 0  # bfloat16 forward passes really ran
    scale = max(float(v.abs().max()) for v in fp32.values())
    assert max(differences) < 0.1 * scale


def test_channels_last_training_gives_the_float32_weights(trained: dict[str, Path]) -> None:
    fp32, cl = _weights(trained["fp32"]), _weights(trained["cl"])
    for key in fp32:
        torch.testing.assert_close(cl[key], fp32[key], atol=1e-4, rtol=1e-4)


def test_amp_evaluation_outputs_are_close_float32_and_leave_the_model_as_it_was(
    scenario, trained: dict[str, Path]
) -> None:
    model, meta = load_checkpoint(trained["fp32"], device=CPU)
    loaders = ProblemLoaders(scenario.problem, meta.input_spec)
    plain = split_outputs(model, loaders, device=CPU)
    both = Precision(amp=True, channels_last=True)
    fast = split_outputs(model, loaders, device=CPU, precision=both)
    for split, outputs in plain.items():
        assert fast[split].logits.dtype == torch.float32
        assert not torch.equal(fast[split].logits, outputs.logits)
        torch.testing.assert_close(fast[split].logits, outputs.logits, atol=0.1, rtol=0.05)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # back in the default layout


def test_amp_unlearning_runs_every_step_under_autocast_and_records_it(
    scenario, trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original_forward = torch.nn.Linear.forward

    def spy(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.is_autocast_enabled("cpu"))
        return original_forward(self, x)

    model, _ = load_checkpoint(trained["fp32"], device=CPU)
    kw = {"seed": 0, "device": CPU, "hparams": {"epochs": 1}}
    plain = unlearn_on_scenario(model, scenario, "finetune", **kw)
    monkeypatch.setattr(torch.nn.Linear, "forward", spy)
    fast = unlearn_on_scenario(model, scenario, "finetune", precision=AMP, **kw)
    assert seen and all(seen)
    assert fast.info["precision"] == AMP.to_dict() and "precision" not in plain.info
    plain_w, fast_w = plain.model.state_dict(), fast.model.state_dict()
    assert any(not torch.equal(plain_w[k], fast_w[k]) for k in plain_w)
    assert all(fast_w[k].dtype == plain_w[k].dtype for k in plain_w)  # weights stay float32


def test_dlfd_without_its_own_amp_keeps_a_run_wide_autocast() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with _autocast(CPU, False):
            assert torch.is_autocast_enabled("cpu")
        with _autocast(CPU, True):
            assert torch.is_autocast_enabled("cpu")
    with _autocast(CPU, False):
        assert not torch.is_autocast_enabled("cpu")


def test_the_cli_takes_amp_and_channels_last(cli, tmp_path: Path) -> None:
    from conftest import FAST_TRAIN

    out = tmp_path / "orig.safetensors"
    code, _, err = cli("train", "-d", "orl-glasses", *FAST_TRAIN, "--amp", "--channels-last",
                       "--out", out)  # fmt: skip
    assert code == 0, err
    meta = load_checkpoint(out, device=CPU)[1]
    assert meta.extra["precision"] == {"amp": True, "channels_last": True}
    code, _, err = cli("evaluate", "-m", out, "--amp", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert '"amp": true' in (tmp_path / "e.json").read_text()
