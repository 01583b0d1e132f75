"""``dlfd unlearn``: run a registered method on an original checkpoint; ``dlfd methods``.

Under ``torchrun --nproc_per_node=N -m dlfd unlearn ...`` the method runs data-parallel on N
processes; rank 0 alone prints and writes.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dlfd.checkpoint import check_weights_path, load_checkpoint
from dlfd.cli.app import app, err, hint, note, out, styled
from dlfd.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ForgetOpt,
    OptionOpt,
    QuietOpt,
    RecordedDatasetOpt,
    RecordedSplitSeedOpt,
    checkpoint_files,
    claimed,
    input_files,
    known_method,
    refuse_data_outputs,
    refuse_unfit,
    scenario_for_checkpoint,
    shell_word,
    torchrun_context,
)
from dlfd.config import parse_overrides, setting_ranges, to_dict
from dlfd.errors import ConfigError
from dlfd.methods import get_method, list_methods
from dlfd.methods.scenario_run import save_unlearned, unlearn_on_scenario
from dlfd.runtime import SEED_MAX, resolve_device
from dlfd.training.recipe import TrainRecipe


@app.command(name="unlearn")
def unlearn_command(
    model: Annotated[
        Path, typer.Option("--model", "-m", metavar="FILE", help="The original checkpoint.")
    ],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="FILE", help="Unlearned checkpoint to write (.safetensors)."
        ),
    ],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            metavar="METHOD",
            callback=known_method,
            help="Method key (see `dlfd methods`).",
        ),
    ] = "dlfd",
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Method setting (see `dlfd methods METHOD`); repeatable.",
        ),
    ] = None,
    dataset: RecordedDatasetOpt = None,
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, max=SEED_MAX, metavar="SEED", help="Seed of the method."),
    ] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=65_536,
            metavar="N",
            help="Batch size (default: the original's recipe).",
        ),
    ] = None,
    split_seed: RecordedSplitSeedOpt = None,
    data_root: DataRootOpt = None,
    forget: ForgetOpt = None,
    option: OptionOpt = None,
    device: DeviceOpt = "auto",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Unlearn the scenario's forget set from an original checkpoint with one method.

    The original is never modified; the result is written atomically with a sidecar that
    records the method, its settings, the selected state and the wall time. Run under torchrun
    to unlearn data-parallel (--batch-size is then the global batch, split evenly).
    """
    spec = get_method(method)
    overrides = parse_overrides(settings or [])
    spec.make_params(overrides)  # refuse bad settings before any work
    out_path = check_weights_path(out_path)
    if out_path.resolve() == check_weights_path(model).resolve():
        raise ConfigError("--out must differ from --model: the original is never overwritten")
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} exists; use --force to overwrite it")
    outputs = checkpoint_files(out_path)
    inputs = input_files(forget, data_root, checkpoints=[model])
    with claimed(outputs, "--out", inputs=inputs, force=force):
        torch_device = resolve_device(device)
        scenario = scenario_for_checkpoint(
            model,
            dataset=dataset,
            split_seed=split_seed,
            data_root=data_root,
            forget=forget,
            option=option,
        )
        refuse_data_outputs(outputs, "--out", scenario)
        with torchrun_context(torch_device) as dist:
            if dist is not None:
                torch_device = dist.device
            original, meta = load_checkpoint(model, device=torch_device)
            refuse_unfit(meta, model, scenario)
            if (
                meta.forget_sha256 not in (None, scenario.problem.forget_sha256)
                or meta.role == "retrained"
            ):
                note(
                    f"{model} is not this split's original (role {meta.role!r}); "
                    "unlearning from it anyway"
                )
            recipe = TrainRecipe.from_dict(meta.recipe) if meta.recipe else scenario.recipe
            sizes = scenario.problem.sizes()
            where = str(torch_device)
            if dist is not None:
                where = f"{dist.world_size} processes ({dist.backend}, {dist.device.type})"
            err.print(
                styled(
                    (method, "bold"),
                    f" on {scenario.name}: forget {sizes['forget']}, retain "
                    f"{sizes['retain']}, val {sizes['val']} images; {where}, seed {seed}",
                )
            )
            progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=quiet or err.quiet,
            )
            with progress:
                task = progress.add_task(method, total=None)

                def on_progress(done: int, total: int, phase: str) -> None:
                    progress.update(
                        task, completed=done, total=total, description=f"{method} {phase}"
                    )

                result = unlearn_on_scenario(
                    original,
                    scenario,
                    method,
                    seed=seed,
                    device=torch_device,
                    hparams=overrides,
                    batch_size=batch_size,
                    recipe=recipe,
                    on_progress=on_progress,
                    dist=dist,
                )
            if dist is None:
                save_unlearned(result, out_path, meta, source=str(model))
            else:
                dist.on_main(lambda: save_unlearned(result, out_path, meta, source=str(model)))
            err.print(f"selected: {result.selected}")
            err.print(
                f"wrote {out_path} in {result.wall_s:.1f}s "
                f"(training {result.train_s:.1f}s, monitoring {result.monitor_s:.1f}s)"
            )
            next_steps(model, out_path)


def next_steps(original: Path, unlearned: Path) -> None:
    """The hints after an unlearning run: evaluate it, audit it (the retrained reference is
    the user's to name)."""
    model, result = shell_word(original), shell_word(unlearned)
    audit_dir = shell_word(unlearned.with_name(f"{unlearned.stem}-audit"))
    hint(
        f"dlfd evaluate --model {model} --model {result} --reference RETRAINED.safetensors",
        f"dlfd audit --model {result} --original {model} --reference RETRAINED.safetensors "
        f"--out {audit_dir}",
    )


@app.command()
def methods(
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="METHOD",
            callback=known_method,
            help="Show this method's settings and defaults.",
        ),
    ] = None,
) -> None:
    """List the unlearning methods, or one method's settings with their defaults."""
    if key is None:
        table = Table(title="methods")
        table.add_column("key")
        table.add_column("description")
        table.add_column("tasks")
        for name, description in list_methods().items():
            table.add_row(name, description, ", ".join(get_method(name).tasks))
        out.print(table)
        return
    spec = get_method(key)
    table = Table(title=f"{key}: {spec.description}")
    table.add_column("setting (--set KEY=VALUE)")
    table.add_column("default", justify="right")
    table.add_column("range", justify="right")
    ranges = setting_ranges(spec.params_cls)
    for name, value in to_dict(spec.params_cls()).items():
        table.add_row(name, repr(value), ranges.get(name, ""))
    out.print(table)
    doc = inspect.getmodule(spec.fn).__doc__ or ""
    if doc:
        out.print(doc.strip(), highlight=False, markup=False)
