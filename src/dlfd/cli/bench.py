"""``dlfd bench``: every method from the same original, per seed, evaluated and recorded."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

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
from dlfd.bench.ray_backend import check_ray_plan
from dlfd.bench.recipe_file import RecipeFile
from dlfd.bench.records import RESULTS_FILE, refuse_other_forget_request
from dlfd.bench.unit import check_forget_request, check_given_checkpoints
from dlfd.cli import common
from dlfd.cli.app import app, err, hint, out, styled
from dlfd.cli.progress import RichBenchProgress
from dlfd.cli.report import print_fitted, rich_table
from dlfd.config import parse_overrides
from dlfd.data.splits import read_forget_list
from dlfd.errors import ConfigError
from dlfd.report import main_table
from dlfd.runtime import resolve_device


@app.command()
def bench(
    out_dir: Annotated[Path, common.opt("--out -o DIR", "Folder of the results.")],
    dataset: Annotated[
        str | None, common.dataset_option("Scenario (see `dlfd datasets`); or --recipe.")
    ] = None,
    recipe: Annotated[
        Path | None,
        common.opt("--recipe FILE", "Recipe file (.toml/.json) with the bench's settings."),
    ] = None,
    methods: Annotated[
        str | None,
        common.opt(
            "--methods METHODS",
            "'all' or comma-separated keys (see `dlfd methods`).",
            callback=common.checked(resolve_methods),
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        common.opt(
            "--seeds SEEDS",
            "Seeds and ranges: 0,1,2 or 0-19 or 0-2,5 (default 0).",
            callback=common.checked(parse_seeds),
        ),
    ] = None,
    data_root: common.DataRootOpt = None,
    option: common.OptionOpt = None,
    image_size: common.ImageSizeOpt = None,
    split_seed: Annotated[
        int | None, common.split_seed_option("One split for every seed (default: the seed).")
    ] = None,
    forget: Annotated[
        Path | None,
        common.opt(
            "--forget FILE",
            "File naming people or images to forget, one per line, as for `dlfd train`; "
            "every seed's originals, references and methods use it instead of the "
            "scenario's forget set.",
        ),
    ] = None,
    original: Annotated[
        Path | None,
        common.opt(
            "--original FILE",
            "Use this checkpoint (e.g. from `dlfd import`) as every seed's original instead "
            "of training one; it must match the split (--split-seed) and forget set.",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        common.opt(
            "--reference FILE",
            "With --original: the retrained reference to use (default: trained with the "
            "original's architecture and the recipe).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        common.opt(
            "--set HEAD.KEY=VALUE",
            "METHOD.KEY=VALUE (a method's setting), all.KEY=VALUE (a shared one) or "
            "recipe.KEY=VALUE (how original/retrained are trained); repeatable.",
        ),
    ] = None,
    lam: Annotated[float | None, common.LAMBDA] = None,
    attacks: Annotated[
        bool | None,
        common.opt(
            "--attacks/--no-attacks",
            "Also run the stronger attacks and bootstrap intervals (slow on a CPU).",
        ),
    ] = None,
    save_models: Annotated[
        bool,
        common.opt(
            "--save-models/--no-save-models",
            "Keep every run's model beside its record (seed-S/METHOD.safetensors).",
        ),
    ] = True,
    cache_dir: Annotated[
        Path | None,
        common.opt(
            "--cache-dir DIR", "Where trained originals/references are cached (default: dlfd's)."
        ),
    ] = None,
    jobs: Annotated[
        int,
        common.opt(
            "--jobs -j N",
            "Runs in parallel: processes of this machine; with --backend ray and no --address, "
            "the size of the local Ray cluster (N tasks at once).",
            min=1,
            max=256,
        ),
    ] = 1,
    backend: Annotated[
        str,
        common.opt(
            "--backend NAME",
            "local (this machine, --jobs processes) or ray (Ray tasks on a cluster; needs "
            "pip install 'dlfd\\[ray]' and --out, the cache and the data on a file system "
            "every node sees).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        common.opt(
            "--address HOST:PORT",
            "With --backend ray: the running Ray cluster's head (or auto); default: start a "
            "local cluster for this bench.",
        ),
    ] = None,
    task_cpus: Annotated[
        int | None,
        common.opt(
            "--task-cpus N",
            "With --backend ray: CPUs (and torch threads) per task (default 1).",
            min=1,
            max=1024,
        ),
    ] = None,
    task_gpus: Annotated[
        float | None,
        common.opt(
            "--task-gpus X",
            "With --backend ray: GPUs per task, fractions allowed (default 1 with --device "
            "cuda, else 0).",
            min=0.0,
            max=1024.0,
        ),
    ] = None,
    per_example: Annotated[
        int,
        common.opt(
            "--per-example N",
            "Also score each method with the NeurIPS 2023 challenge's per-example epsilon "
            "(N originals and N retrained models per seed, each method run from each original; "
            "N >= 3 for a non-zero score). 0: off.",
            min=0,
            max=MAX_PER_EXAMPLE,
        ),
    ] = 0,
    device: common.DeviceOpt = "auto",
    quiet: common.QuietOpt = False,
    force: Annotated[
        bool, common.opt("--force", "Replace a results.json in --out that dlfd did not write.")
    ] = False,
) -> None:
    """Benchmark unlearning methods on a scenario, seed by seed, resumably.

    Per seed: train (or reuse) the original and the retrained reference, run every method from
    the same original under the same rules, evaluate each result with the protocol, and write
    DIR/seed-S/METHOD.result.json and DIR/results.json.

    Finished runs are skipped when rerun (same configuration hash); an interrupted run is
    redone. A folder holds the runs of one forget request: another --forget needs another
    --out. Progress goes to the terminal, a log to DIR/bench.log.

    --backend ray runs every seed's checkpoints and every run as Ray tasks (--address: an
    existing cluster), retried when a worker dies; this process writes every file.
    """
    file = load_recipe_file(recipe) if recipe is not None else RecipeFile(Path())

    def given(value: Any, key: str, default: Any = None) -> Any:  # command line, file, default
        value = value if value is not None else getattr(file, key)
        return value if value is not None else default

    dataset = dataset or file.dataset
    if dataset is None:
        raise ConfigError("give --dataset or a --recipe file that names one")
    all_settings = {**file.settings, **parse_overrides(settings or [])}
    recipe_settings, method_settings = split_settings(all_settings)
    plan = BenchPlan(
        dataset=dataset,
        out=out_dir,
        seeds=parse_seeds(given(seeds, "seeds", "0")),
        methods=resolve_methods(given(methods, "methods", "all")),
        data_root=data_root,
        options={**file.options, **parse_overrides(option or [])},
        image_size=given(image_size, "image_size"),
        split_seed=given(split_seed, "split_seed"),
        recipe=recipe_settings,
        settings=method_settings,
        lam=given(lam, "lam", 0.5),
        attacks=bool(given(attacks, "attacks", False)),
        save_models=save_models,
        device=device,
        cache_dir=cache_dir,
        jobs=jobs,
        per_example=per_example,
        forget=forget,
        forget_entries=tuple(read_forget_list(forget)) if forget is not None else (),
        original=original,
        reference=reference,
        backend=backend,
        address=address,
        task_cpus=task_cpus,
        task_gpus=task_gpus,
    )
    # Everything that can be checked is checked before the banner and before any work: the
    # settings, the device, the forget request and given checkpoints against every seed's
    # split, the folder's runs.
    validate_plan(plan)
    if plan.backend == "ray":
        check_ray_plan(plan)  # Ray installed; the device is checked where each task runs
    else:
        resolve_device(plan.device)
    forget_sizes = check_forget_request(plan)
    check_given_checkpoints(plan)
    refuse_other_forget_request(plan.out, plan.forget_request_sha256, plan.forget)
    display = None if quiet or jobs > 1 or backend == "ray" else RichBenchProgress(err)

    forgetting = ""
    if forget is not None:
        images = "/".join(map(str, sorted(set(forget_sizes.values()))))
        forgetting = f"; forget list {forget} ({len(plan.forget_entries)} entries, {images} images)"
    runs = f"{len(plan.methods)} methods x {len(plan.seeds)} seeds"
    headline = f" {plan.dataset}: {runs} -> {plan.out}{forgetting}"
    err.print(styled(("bench", "bold"), headline), highlight=False)
    progress = BenchProgress(display, display.run) if display is not None else None
    results = out_dir / RESULTS_FILE
    inputs = common.input_files(recipe, data_root, forget)
    with common.claimed([results], "--out", inputs=inputs, force=force), display or nullcontext():
        outcome = run_bench(plan, progress=progress)
    if outcome.records:
        print_fitted(out, rich_table(main_table(outcome.records, digits=3, sep="±")))
    err.print(
        f"{outcome.ran} run(s) done now, {outcome.skipped} reused; wrote {outcome.results} "
        f"(log: {outcome.log})"
    )
    if outcome.records:
        hint(f"dlfd report {common.shell_word(out_dir)}")
    if outcome.failed:
        raise BenchError(
            f"{len(outcome.failed)} run(s) failed (see {outcome.log}): " + "; ".join(outcome.failed)
        )
