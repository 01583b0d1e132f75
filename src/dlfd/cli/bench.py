"""``dlfd bench``: every method from the same original, per seed, evaluated and recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dlfd.bench import (
    BenchError,
    BenchPlan,
    BenchProgress,
    load_recipe_file,
    parse_seeds,
    resolve_methods,
    run_bench,
    split_settings,
    validate_plan,
)
from dlfd.bench.plan import MAX_PER_EXAMPLE
from dlfd.bench.records import RESULTS_FILE, refuse_other_forget_request
from dlfd.bench.unit import check_forget_request
from dlfd.cli.app import app, err, hint, out, styled
from dlfd.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ImageSizeOpt,
    OptionOpt,
    QuietOpt,
    claimed,
    dataset_option,
    input_files,
    shell_word,
    split_seed_option,
)
from dlfd.cli.report import rich_table
from dlfd.config import parse_overrides
from dlfd.data.splits import read_forget_list
from dlfd.errors import ConfigError
from dlfd.report import main_table
from dlfd.runtime import resolve_device


class RichBenchProgress(BenchProgress):
    """One overall bar (runs and trainings done, ETA) and one bar for the current run."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.overall: TaskID | None = None
        self.current: TaskID | None = None

    def start(self, total: int) -> None:
        self.progress.start()
        self.overall = self.progress.add_task("bench", total=total, info="")

    def begin(self, label: str) -> None:
        self._drop_current()
        self.current = self.progress.add_task(f"  {label}", total=None, info="")

    def advance(self, done: int, total: int, phase: str) -> None:
        if self.current is not None:
            self.progress.update(
                self.current, completed=done, total=total if total > 0 else None, info=phase
            )

    def end(self, label: str) -> None:
        self._drop_current()
        if self.overall is not None:
            self.progress.advance(self.overall)

    def _drop_current(self) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None

    def stop(self) -> None:
        self._drop_current()
        self.progress.stop()


def _known_methods(spec: str | None) -> str | None:
    """``--methods`` callback: every key is checked while the command line is read."""
    if spec is not None:
        resolve_methods(spec)  # raises ConfigError naming the unknown key and the known ones
    return spec


def _valid_seeds(spec: str | None) -> str | None:
    """``--seeds`` callback: the seed list is checked while the command line is read."""
    if spec is not None:
        parse_seeds(spec)
    return spec


@app.command()
def bench(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Folder of the results.")
    ],
    dataset: Annotated[
        str | None, dataset_option("Scenario (see `dlfd datasets`); or --recipe.")
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            metavar="FILE",
            help="Recipe file (.toml/.json) with the bench's settings.",
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            metavar="METHODS",
            callback=_known_methods,
            help="'all' or comma-separated keys (see `dlfd methods`).",
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="SEEDS",
            callback=_valid_seeds,
            help="Seeds and ranges: 0,1,2 or 0-19 or 0-2,5 (default 0).",
        ),
    ] = None,
    data_root: DataRootOpt = None,
    option: OptionOpt = None,
    image_size: ImageSizeOpt = None,
    split_seed: Annotated[
        int | None, split_seed_option("One split for every seed (default: the seed).")
    ] = None,
    forget: Annotated[
        Path | None,
        typer.Option(
            "--forget",
            metavar="FILE",
            help="File naming people or images to forget, one per line, as for `dlfd train`; "
            "every seed's originals, references and methods use it instead of the "
            "scenario's forget set.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="HEAD.KEY=VALUE",
            help="METHOD.KEY=VALUE (a method's setting), all.KEY=VALUE (a shared one) or "
            "recipe.KEY=VALUE (how original/retrained are trained); repeatable.",
        ),
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option(
            "--lambda",
            min=0.0,
            max=1.0,
            metavar="WEIGHT",
            help="NoMUS weight of test accuracy.",
        ),
    ] = None,
    attacks: Annotated[
        bool | None,
        typer.Option(
            "--attacks/--no-attacks",
            help="Also run the stronger attacks and bootstrap intervals (slow on a CPU).",
        ),
    ] = None,
    save_models: Annotated[
        bool,
        typer.Option(
            "--save-models/--no-save-models",
            help="Keep every run's model beside its record (seed-S/METHOD.safetensors).",
        ),
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            metavar="DIR",
            help="Where trained originals/references are cached (default: dlfd's).",
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, max=256, metavar="N", help="Runs in parallel (processes)."
        ),
    ] = 1,
    per_example: Annotated[
        int,
        typer.Option(
            "--per-example",
            min=0,
            max=MAX_PER_EXAMPLE,
            metavar="N",
            help="Also score each method with the NeurIPS 2023 challenge's per-example epsilon "
            "(N originals and N retrained models per seed, each method run from each original; "
            "N >= 3 for a non-zero score). 0: off.",
        ),
    ] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a results.json in --out that dlfd did not write."),
    ] = False,
) -> None:
    """Benchmark unlearning methods on a scenario, seed by seed, resumably.

    Per seed: train (or reuse) the original and the retrained reference, run every method from
    the same original under the same rules, evaluate each result with the protocol, and write
    DIR/seed-S/METHOD.result.json and DIR/results.json.

    Finished runs are skipped when rerun (same configuration hash); an interrupted run is
    redone. A folder holds the runs of one forget request: another --forget needs another
    --out. Progress goes to the terminal, a log to DIR/bench.log.
    """
    file = load_recipe_file(recipe) if recipe is not None else None
    dataset = dataset or (file.dataset if file else None)
    if dataset is None:
        raise ConfigError("give --dataset or a --recipe file that names one")
    method_spec = methods if methods is not None else (file.methods if file else None)
    seed_spec = seeds if seeds is not None else (file.seeds if file else None)
    options = {**(file.options if file else {}), **parse_overrides(option or [])}
    recipe_settings, method_settings = split_settings(
        {**(file.settings if file else {}), **parse_overrides(settings or [])}
    )
    plan = BenchPlan(
        dataset=dataset,
        out=out_dir,
        seeds=parse_seeds(seed_spec if seed_spec is not None else "0"),
        methods=resolve_methods(method_spec if method_spec is not None else "all"),
        data_root=data_root,
        options=options,
        image_size=image_size if image_size is not None else (file.image_size if file else None),
        split_seed=split_seed if split_seed is not None else (file.split_seed if file else None),
        recipe=recipe_settings,
        settings=method_settings,
        lam=lam if lam is not None else (file.lam if file and file.lam is not None else 0.5),
        attacks=attacks if attacks is not None else bool(file and file.attacks),
        save_models=save_models,
        device=device,
        cache_dir=cache_dir,
        jobs=jobs,
        per_example=per_example,
        forget=forget,
        forget_entries=tuple(read_forget_list(forget)) if forget is not None else (),
    )
    # Everything that can be checked is checked before the banner and before any work: the
    # settings, the device, the forget request against every seed's split, the folder's runs.
    validate_plan(plan)
    resolve_device(plan.device)
    forget_sizes = check_forget_request(plan)
    refuse_other_forget_request(plan.out, plan.forget_request_sha256, plan.forget)
    progress = None if quiet or jobs > 1 else RichBenchProgress(err)

    def echo(message: str) -> None:
        console = progress.progress.console if progress is not None else err
        console.print(message, highlight=False, markup=False)

    forgetting = ""
    if forget is not None:
        counts = sorted(set(forget_sizes.values()))
        images = "/".join(map(str, counts))
        forgetting = f"; forget list {forget} ({len(plan.forget_entries)} entries, {images} images)"
    err.print(
        styled(
            ("bench", "bold"),
            f" {plan.dataset}: {len(plan.methods)} methods x {len(plan.seeds)} seeds -> "
            f"{plan.out}{forgetting}",
        ),
        highlight=False,
    )
    results = out_dir / RESULTS_FILE
    with claimed([results], "--out", inputs=input_files(recipe, data_root, forget), force=force):
        outcome = run_bench(plan, progress=progress, echo=echo)
    if outcome.records:
        out.print(rich_table(main_table(outcome.records, digits=3, sep="±")))
    err.print(
        f"{outcome.ran} run(s) done now, {outcome.skipped} reused; wrote {outcome.results} "
        f"(log: {outcome.log})"
    )
    if outcome.records:
        hint(f"dlfd report {shell_word(out_dir)}")
    if outcome.failed:
        raise BenchError(
            f"{len(outcome.failed)} run(s) failed (see {outcome.log}): " + "; ".join(outcome.failed)
        )
