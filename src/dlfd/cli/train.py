"""``dlfd train``: the original model (all of train) or the retrained reference (retain only).

Under ``torchrun --nproc_per_node=N -m dlfd train ...`` it trains data-parallel on N processes
(one per GPU with NCCL, or CPU processes with gloo); rank 0 alone prints and writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from dlfd.checkpoint import check_weights_path
from dlfd.cli import common
from dlfd.cli.app import app, err, hint
from dlfd.config import apply_overrides, parse_overrides
from dlfd.errors import ConfigError
from dlfd.runs.scenario import ScenarioRequest
from dlfd.runtime import Precision, resolve_device
from dlfd.training import train_checkpoint
from dlfd.training.resume import ResumePaths
from dlfd.training.runner import ROLES


def known_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"--role must be {' or '.join(ROLES)}, got {role!r}")
    return role


def next_step(out: Path, role: str) -> None:
    """The hint after a training: unlearn an original; evaluate against a retrained one."""
    if role == "retrained":
        hint(f"dlfd evaluate --model UNLEARNED.safetensors --reference {common.shell_word(out)}")
        return
    model, unlearned = (
        common.shell_word(p) for p in (out, out.with_name(f"{out.stem}-dlfd.safetensors"))
    )
    hint(f"dlfd unlearn --model {model} --method dlfd --out {unlearned}")


def role_option(help_text: str) -> Any:
    return common.opt("--role", help_text, metavar="|".join(ROLES), callback=known_role)


@app.command()
def train(
    out: Annotated[Path, common.opt("--out -o FILE", "Checkpoint to write (.safetensors).")],
    dataset: common.DatasetOpt = "orl-glasses",
    role: Annotated[
        str, role_option("original (all of train) or retrained (retain only).")
    ] = "original",
    seed: Annotated[int, common.seed_option("Training seed.")] = 0,
    split_seed: common.SplitSeedOpt = None,
    data_root: common.DataRootOpt = None,
    image_size: common.ImageSizeOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
    model: Annotated[
        str | None, common.opt("--model ARCH", "Architecture (see `dlfd models`).")
    ] = None,
    epochs: Annotated[int | None, common.opt("--epochs N", "Override epochs.")] = None,
    init: Annotated[
        Path | None,
        common.opt(
            "--init FILE",
            "Start from pretrained weights: a dlfd checkpoint (e.g. from `dlfd import`; "
            "its architecture is used) or a state_dict file of --model.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        common.opt(
            "--set KEY=VALUE", "Recipe setting (e.g. lr=0.05, augment.hflip=0); repeatable."
        ),
    ] = None,
    device: common.DeviceOpt = "auto",
    resume: Annotated[
        bool, common.opt("--resume/--no-resume", "Continue an interrupted run.")
    ] = True,
    resume_every: Annotated[
        float,
        common.opt(
            "--resume-every SECONDS",
            "Save the resume state after an epoch when this many seconds have passed "
            "since the last save (0: after every epoch).",
            min=0,
            max=1e9,
        ),
    ] = 30.0,
    force: Annotated[
        bool,
        common.opt(
            "--force",
            "Retrain over an existing --out, and replace files there that dlfd did not write.",
        ),
    ] = False,
    amp: common.AmpOpt = False,
    channels_last: common.ChannelsLastOpt = False,
    quiet: common.QuietOpt = False,
) -> None:
    """Train a scenario's original model or its retrained reference, resumably.

    Run under torchrun to train data-parallel: the recipe's batch size is the global batch,
    split evenly over the processes.
    """
    out = check_weights_path(out)
    resume_files = ResumePaths.for_checkpoint(out)
    outputs = [*common.checkpoint_files(out), resume_files.tensors, resume_files.meta]
    inputs = [*common.input_files(forget, data_root), *([init] if init else [])]
    with common.claimed(outputs, "--out", inputs=inputs, force=force):
        split_seed = seed if split_seed is None else split_seed
        request = ScenarioRequest(dataset, split_seed, data_root, forget, option)
        scenario = request.load(image_size)
        overrides = parse_overrides(settings or [])
        if model is not None:
            overrides["model"] = model
        if epochs is not None:
            overrides["epochs"] = str(epochs)
        common.refuse_data_outputs(outputs, "--out", scenario.problem.records, scenario.data_root)
        recipe = apply_overrides(scenario.recipe, overrides)
        torch_device = resolve_device(device)
        sizes = scenario.problem.sizes()
        split = "retain" if role == "retrained" else "train"
        n_train = sizes["retain"] + (sizes["forget"] if split == "train" else 0)
        with common.torchrun_context(torch_device) as dist:
            arch = recipe.model if init is None else f"from {init.name}"
            what = f" {role}: {arch}, {recipe.epochs} epochs on {n_train} {split} images,"
            common.run_headline(scenario.name, what, torch_device, dist, seed)
            with common.progress_bar(role, quiet) as progress:
                result = train_checkpoint(
                    scenario,
                    role=role,
                    out=out,
                    seed=seed,  # type: ignore[arg-type]
                    device=torch_device,
                    recipe=recipe,
                    resume=resume,
                    force=force,
                    progress=progress,
                    resume_every_s=resume_every,
                    dist=dist,
                    init=init,
                    precision=Precision(amp, channels_last),
                )
            if result.reused:
                err.print(f"{out} is up to date (same configuration); nothing to do")
            else:
                if result.resumed_from_epoch:
                    err.print(f"resumed after epoch {result.resumed_from_epoch}")
                last = result.history[-1] if result.history else {}
                loss, acc = (last.get(k, float("nan")) for k in ("loss", "acc"))
                final = f"final train loss {loss:.3f}, acc {acc:.3f}"
                err.print(f"wrote {out} in {result.seconds:.1f}s ({final})")
            next_step(out, role)
