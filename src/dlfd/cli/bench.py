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
from dlfd.bench.records import RESULTS_FILE
from dlfd.cli.app import app, err, out, styled
from dlfd.cli.common import (
    DataRootOpt,
    DeviceOpt,
    ImageSizeOpt,
    OptionOpt,
    QuietOpt,
    claimed,
    input_files,
)
from dlfd.cli.report import rich_table
from dlfd.config import parse_overrides
from dlfd.errors import ConfigError
from dlfd.report import main_table
from dlfd.runtime import SEED_MAX


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


@app.command()
def bench(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder of the results.")],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Scenario (see `dlfd datasets`); or --recipe."),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", help="Recipe file (.toml/.json) with the bench's settings."),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option("--methods", help="'all' or comma-separated keys (see `dlfd methods`)."),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Seeds and ranges: 0,1,2 or 0-19 or 0-2,5 (default 0)."),
    ] = None,
    data_root: DataRootOpt = None,
    option: OptionOpt = None,
    image_size: ImageSizeOpt = None,
    split_seed: Annotated[
        int | None,
        typer.Option(
            "--split-seed",
            min=0,
            max=SEED_MAX,
            help="One split for every seed (default: the seed).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="METHOD.KEY=VALUE (a method's setting), all.KEY=VALUE (a shared one) or "
            "recipe.KEY=VALUE (how original/retrained are trained).",
        ),
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option("--lambda", min=0.0, max=1.0, help="NoMUS weight of test accuracy."),
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
            help="Keep every run's model as DIR/seed-<s>/<method>.safetensors.",
        ),
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Where trained originals/references are cached (default: dlfd's)."
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, max=256, help="Runs in parallel (processes).")
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
    """Benchmark unlearning methods: per seed, train (or reuse) the original and the retrained
    reference, run every method from the same original under the same rules, evaluate each
    result with the protocol, and write DIR/seed-<s>/<method>.result.json and DIR/results.json.

    Finished runs are skipped when rerun (same configuration hash); an interrupted run is
    redone. Progress goes to the terminal, a log to DIR/bench.log.
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
    )
    progress = None if quiet or jobs > 1 else RichBenchProgress(err)

    def echo(message: str) -> None:
        console = progress.progress.console if progress is not None else err
        console.print(message, highlight=False, markup=False)

    err.print(
        styled(
            ("bench", "bold"),
            f" {plan.dataset}: {len(plan.methods)} methods x {len(plan.seeds)} seeds -> {plan.out}",
        )
    )
    validate_plan(plan)  # bad settings are refused before the output folder is made
    results = out_dir / RESULTS_FILE
    with claimed([results], "--out", inputs=input_files(recipe, data_root), force=force):
        outcome = run_bench(plan, progress=progress, echo=echo)
    if outcome.records:
        out.print(rich_table(main_table(outcome.records, digits=3, sep="±")))
    err.print(
        f"{outcome.ran} run(s) done now, {outcome.skipped} reused; wrote {outcome.results} "
        f"(log: {outcome.log})"
    )
    if outcome.failed:
        raise BenchError(
            f"{len(outcome.failed)} run(s) failed (see {outcome.log}): " + "; ".join(outcome.failed)
        )
