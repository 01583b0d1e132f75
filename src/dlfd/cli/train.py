"""``dlfd train``: the original model (all of train) or the retrained reference (retain only).

Under ``torchrun --nproc_per_node=N -m dlfd train ...`` it trains data-parallel on N processes
(one per GPU with NCCL, or CPU processes with gloo); rank 0 alone prints and writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlfd.checkpoint import check_weights_path
from dlfd.cli.app import app, err, hint, styled
from dlfd.cli.common import (
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    ForgetOpt,
    ImageSizeOpt,
    OptionOpt,
    QuietOpt,
    SplitSeedOpt,
    checkpoint_files,
    claimed,
    input_files,
    load_scenario,
    refuse_data_outputs,
    shell_word,
    torchrun_context,
)
from dlfd.cli.progress import RichTrainProgress
from dlfd.config import apply_overrides, parse_overrides
from dlfd.errors import ConfigError
from dlfd.runtime import SEED_MAX, resolve_device
from dlfd.training import train_checkpoint
from dlfd.training.resume import ResumePaths
from dlfd.training.runner import ROLES


def known_role(role: str) -> str:
    """``--role`` callback: refused while the command line is read, naming the roles."""
    if role not in ROLES:
        raise ConfigError(f"--role must be {' or '.join(ROLES)}, got {role!r}")
    return role


def next_step(out: Path, role: str) -> None:
    """The hint after a training: unlearn from an original; use a retrained model as the
    reference of an evaluation."""
    if role == "retrained":
        hint(f"dlfd evaluate --model UNLEARNED.safetensors --reference {shell_word(out)}")
        return
    unlearned = out.with_name(f"{out.stem}-dlfd.safetensors")
    hint(f"dlfd unlearn --model {shell_word(out)} --method dlfd --out {shell_word(unlearned)}")


@app.command()
def train(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="FILE", help="Checkpoint to write (.safetensors)."),
    ],
    dataset: DatasetOpt = "orl-glasses",
    role: Annotated[
        str,
        typer.Option(
            "--role",
            metavar="|".join(ROLES),
            callback=known_role,
            help="original (all of train) or retrained (retain only).",
        ),
    ] = "original",
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, max=SEED_MAX, metavar="SEED", help="Training seed."),
    ] = 0,
    split_seed: SplitSeedOpt = None,
    data_root: DataRootOpt = None,
    image_size: ImageSizeOpt = None,
    forget: ForgetOpt = None,
    option: OptionOpt = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="ARCH", help="Architecture (see `dlfd models`)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", metavar="N", help="Override epochs.")
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Recipe setting (e.g. lr=0.05, augment.hflip=0); repeatable.",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run.")
    ] = True,
    resume_every: Annotated[
        float,
        typer.Option(
            "--resume-every",
            min=0,
            max=1e9,
            metavar="SECONDS",
            help="Save the resume state after an epoch when this many seconds have passed "
            "since the last save (0: after every epoch).",
        ),
    ] = 30.0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Retrain over an existing --out, and replace files there that dlfd did not write.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a scenario's original model or its retrained reference, resumably.

    Run under torchrun to train data-parallel: the recipe's batch size is the global batch,
    split evenly over the processes.
    """
    out = check_weights_path(out)
    resume_files = ResumePaths.for_checkpoint(out)
    outputs = [*checkpoint_files(out), resume_files.tensors, resume_files.meta]
    with claimed(outputs, "--out", inputs=input_files(forget, data_root), force=force):
        scenario = load_scenario(
            dataset,
            split_seed=seed if split_seed is None else split_seed,
            data_root=data_root,
            image_size=image_size,
            forget=forget,
            options=option,
        )
        overrides = parse_overrides(settings or [])
        if model is not None:
            overrides["model"] = model
        if epochs is not None:
            overrides["epochs"] = str(epochs)
        refuse_data_outputs(outputs, "--out", scenario)
        recipe = apply_overrides(scenario.recipe, overrides)
        torch_device = resolve_device(device)
        sizes = scenario.problem.sizes()
        split = "retain" if role == "retrained" else "train"
        n_train = sizes["retain"] + (sizes["forget"] if split == "train" else 0)
        with torchrun_context(torch_device) as dist:
            quiet = quiet or err.quiet
            where = str(torch_device)
            if dist is not None:
                where = f"{dist.world_size} processes ({dist.backend}, {dist.device.type})"
            err.print(
                styled(
                    (scenario.name, "bold"),
                    f" {role}: {recipe.model}, {recipe.epochs} epochs on "
                    f"{n_train} {split} images, {where}, seed {seed}",
                )
            )
            progress = None if quiet else RichTrainProgress(err, role)
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
            )
            if result.reused:
                err.print(f"{out} is up to date (same configuration); nothing to do")
                next_step(out, role)
                return
            if result.resumed_from_epoch:
                err.print(f"resumed after epoch {result.resumed_from_epoch}")
            last = result.history[-1] if result.history else {}
            err.print(
                f"wrote {out} in {result.seconds:.1f}s (final train loss "
                f"{last.get('loss', float('nan')):.3f}, acc {last.get('acc', float('nan')):.3f})"
            )
            next_step(out, role)
