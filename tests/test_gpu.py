"""Checks that need a CUDA GPU (marker ``gpu``; they skip without one), and, on any machine, that
the prepared ``benchmarks/gpu_check.sh`` exits cleanly saying so when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlfd.methods import unlearn
from dlfd.models import create_model

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
BOUNDS = (torch.full((3, 1, 1), -3.0), torch.full((3, 1, 1), 3.0))


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g)


def _dlfd(**settings: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet18", 4).to("cuda")
    result = unlearn(
        model, _loader(64, 1), _loader(32, 2), _loader(32, 3), "dlfd", device="cuda", seed=0,
        input_bounds=BOUNDS, steps=3, **settings,
    )  # fmt: skip
    return result.model


@pytest.mark.gpu
@needs_cuda
def test_dlfd_on_cuda_is_reproducible_within_tolerance() -> None:
    """Two runs with the same seed give (nearly) the same model: cuDNN may pick
    non-deterministic kernels, so equality is asked within a tolerance, not bit for bit
    (the tolerances here are first guesses, to be set from the first GPU run)."""
    first, second = _dlfd(), _dlfd()
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        if a.is_floating_point():
            assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_dlfd_amp_and_channels_last_run_and_stay_close_to_fp32() -> None:
    fp32 = _dlfd()
    mixed = _dlfd(amp=True, channels_last=True)
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        p32, pmix = fp32.eval()(x).softmax(1), mixed.eval()(x).softmax(1)
    assert torch.isfinite(pmix).all()
    assert (p32 - pmix).abs().max().item() < 0.25  # bf16 steps: close, not equal


@pytest.mark.skipif(CUDA, reason="this machine has a GPU: the script runs its checks")
def test_gpu_check_says_no_gpu_and_exits_cleanly(tmp_path: Path) -> None:
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "no CUDA GPU present" in run.stdout
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


@pytest.mark.gpu
@needs_cuda
def test_training_and_evaluation_with_amp_and_channels_last_on_cuda(tmp_path: Path) -> None:
    """``--amp --channels-last`` for train and evaluate on CUDA: finite float32 weights, a
    model that learned, outputs close to the float32 evaluation of the same weights."""
    import dataclasses

    from dlfd.checkpoint import load_checkpoint
    from dlfd.data.loaders import ProblemLoaders
    from dlfd.evaluation import split_outputs
    from dlfd.runtime import Precision
    from dlfd.scenarios import get_scenario
    from dlfd.training import train_checkpoint

    scenario = get_scenario("orl-glasses", split_seed=0, data_root=None, image_size=32, options={})
    recipe = dataclasses.replace(scenario.recipe, model="resnet18", epochs=3)
    fast = Precision(amp=True, channels_last=True)
    cuda = torch.device("cuda")
    path = train_checkpoint(
        scenario, role="original", out=tmp_path / "m.safetensors", seed=0, device=cuda,
        recipe=recipe, precision=fast,
    ).path  # fmt: skip
    model, meta = load_checkpoint(path, device=cuda)
    assert meta.extra["precision"] == fast.to_dict()
    weights = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in weights)
    loaders = ProblemLoaders(scenario.problem, meta.input_spec, pin_memory=True)
    plain = split_outputs(model, loaders, device=cuda)
    mixed = split_outputs(model, loaders, device=cuda, precision=fast)
    for split, outputs in plain.items():
        agree = (outputs.logits.argmax(1) == mixed[split].logits.argmax(1)).float().mean()
        assert agree >= 0.9, split  # bf16 logits: the same predictions almost everywhere
    train_acc = (plain["retain"].logits.argmax(1) == plain["retain"].labels).float().mean()
    assert train_acc > 0.6


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL)")
def test_two_process_nccl_training_writes_one_checkpoint(tmp_path: Path) -> None:
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    out = tmp_path / "model.safetensors"
    command = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "dlfd", "train", "--out", str(out),
        "--image-size", "32", "--set", "epochs=1", "--device", "cuda", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    from dlfd.checkpoint import load_checkpoint

    _, meta = load_checkpoint(out)
    assert meta.extra["world_size"] == 2


@pytest.mark.gpu
@needs_cuda
def test_batches_augmented_on_the_gpu_match_the_cpu_ones() -> None:
    """The GPU path of the loaders draws the same augmentation (same CPU generator, same
    order); only the float arithmetic of the pixel operations differs."""
    from dlfd.data.loaders import ProblemLoaders
    from dlfd.data.transforms import AugmentConfig
    from dlfd.scenarios import get_scenario

    scenario = get_scenario("orl-glasses", split_seed=0, data_root=None, image_size=32, options={})
    augment = AugmentConfig(hflip=0.5, crop_padding=2, degrees=10.0, translate=0.1)
    problem, spec = scenario.problem, scenario.input_spec
    cpu = ProblemLoaders(problem, spec, augment).loader("train", batch_size=32, train=True)
    gpu = ProblemLoaders(problem, spec, augment, device=torch.device("cuda"))
    on_gpu = gpu.loader("train", batch_size=32, train=True)
    for (x, y), (gx, gy) in zip(cpu, on_gpu, strict=True):
        assert gx.is_cuda and torch.equal(y, gy.cpu())
        assert torch.allclose(x, gx.cpu(), atol=1e-3)
