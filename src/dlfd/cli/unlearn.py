"""``dlfd unlearn``: run a registered method on an original checkpoint; ``dlfd methods``.

Under ``torchrun --nproc_per_node=N -m dlfd unlearn ...`` the method runs data-parallel on N
processes; rank 0 alone prints and writes.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from dlfd.checkpoint import check_weights_path, load_checkpoint
from dlfd.cli import common
from dlfd.cli.app import app, err, hint, note, out
from dlfd.config import parse_overrides, setting_ranges, to_dict
from dlfd.errors import ConfigError
from dlfd.methods import get_method, list_methods
from dlfd.methods.base import format_setting
from dlfd.recipe import TrainRecipe
from dlfd.runs.method_run import save_unlearned, unlearn_on_scenario
from dlfd.runs.scenario import ScenarioRequest, checkpoint_fit
from dlfd.runtime import Precision


@app.command(name="unlearn")
def unlearn_command(
    model: Annotated[Path, common.opt("--model -m FILE", "The original checkpoint.")],
    out_path: Annotated[
        Path, common.opt("--out -o FILE", "Unlearned checkpoint to write (.safetensors).")
    ],
    method: Annotated[
        str,
        common.opt(
            "--method METHOD", "Method key (see `dlfd methods`).", callback=common.known_method
        ),
    ] = "dlfd",
    settings: Annotated[
        list[str] | None,
        common.opt("--set KEY=VALUE", "Method setting (see `dlfd methods METHOD`); repeatable."),
    ] = None,
    dataset: common.RecordedDatasetOpt = None,
    seed: Annotated[int, common.seed_option("Seed of the method.")] = 0,
    batch_size: Annotated[
        int | None,
        common.opt(
            "--batch-size N", "Batch size (default: the original's recipe).", min=1, max=65_536
        ),
    ] = None,
    split_seed: common.RecordedSplitSeedOpt = None,
    data_root: common.DataRootOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
    device: common.DeviceOpt = "auto",
    force: Annotated[bool, common.opt("--force", "Overwrite an existing --out.")] = False,
    amp: common.AmpOpt = False,
    channels_last: common.ChannelsLastOpt = False,
    quiet: common.QuietOpt = False,
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
    outputs = common.checkpoint_files(out_path)
    request = ScenarioRequest(dataset, split_seed, data_root, forget, option)
    opened = common.on_checkpoints([model], request, outputs, "--out", device=device, force=force)
    with opened as (scenario, torch_device), common.torchrun_context(torch_device) as dist:
        if dist is not None:
            torch_device = dist.device
        original, meta = load_checkpoint(model, device=torch_device)
        if checkpoint_fit(meta, model, scenario).other_forget or meta.role == "retrained":
            note(
                f"{model} is not this split's original (role {meta.role!r}); "
                "unlearning from it anyway"
            )
        recipe = TrainRecipe.from_dict(meta.recipe) if meta.recipe else scenario.recipe
        sizes = scenario.problem.sizes()
        counts = f"forget {sizes['forget']}, retain {sizes['retain']}, val {sizes['val']}"
        common.run_headline(
            method, f" on {scenario.name}: {counts} images;", torch_device, dist, seed
        )
        with common.progress_bar(method, quiet) as progress:
            result = unlearn_on_scenario(
                original,
                scenario,
                method,
                seed=seed,
                device=torch_device,
                hparams=overrides,
                batch_size=batch_size,
                recipe=recipe,
                on_progress=progress,
                dist=dist,
                precision=Precision(amp, channels_last),
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
    """The hints after an unlearning run: evaluate it, audit it."""
    model, result = common.shell_word(original), common.shell_word(unlearned)
    audit_dir = common.shell_word(unlearned.with_name(f"{unlearned.stem}-audit"))
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
            callback=common.known_method,
            help="Show this method's settings and defaults.",
        ),
    ] = None,
) -> None:
    """List the unlearning methods, or one method's settings with their defaults."""
    if key is None:
        table = Table("key", "description", "tasks", title="methods")
        for name, description in list_methods().items():
            table.add_row(name, description, ", ".join(get_method(name).tasks))
        out.print(table)
        return
    spec = get_method(key)
    right = {"justify": "right"}
    columns = ("setting (--set KEY=VALUE)", Column("default", **right), Column("range", **right))
    table = Table(*columns, title=f"{key}: {spec.description}")
    ranges = setting_ranges(spec.params_cls)
    for name, value in to_dict(spec.params_cls()).items():
        table.add_row(name, format_setting(value, repr), ranges.get(name, ""))
    out.print(table)
    doc = inspect.getmodule(spec.fn).__doc__ or ""
    if doc:
        out.print(doc.strip(), highlight=False, markup=False)
