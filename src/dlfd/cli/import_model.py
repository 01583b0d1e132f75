"""``dlfd import``: any classifier (your code, timm, torchvision) and its weights become a dlfd
checkpoint of a scenario, which every other command then reads like one ``dlfd train`` wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from dlfd.checkpoint import (
    CheckpointMeta,
    check_weights_path,
    load_state_into,
    read_state_dict,
    save_checkpoint,
)
from dlfd.cli import common
from dlfd.cli.app import app, err, note
from dlfd.cli.train import next_step, role_option
from dlfd.data.loaders import ProblemLoaders
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import sha256_file
from dlfd.models.user_factory import (
    FACTORY_PREFIX,
    build_user_model,
    canonical_arch,
    factory_sha256,
    factory_source,
    trust_factory,
    trust_file,
)
from dlfd.runs.scenario import ScenarioRequest
from dlfd.scenarios import Scenario
from dlfd.training.runner import ROLES, scenario_provenance

#: Images in the batch an imported model must classify before it is written.
CHECK_BATCH = 4


def check_forward(model: nn.Module, scenario: Scenario, split: str, what: str) -> None:
    """Refuse a model that does not turn a batch of the scenario's ``split`` images into finite
    (N, classes) logits."""
    loaders = ProblemLoaders(scenario.problem, scenario.input_spec)
    images, _ = next(iter(loaders.loader(split, batch_size=CHECK_BATCH)))
    shape = "x".join(str(n) for n in images.shape)
    expected = (images.shape[0], scenario.num_classes)
    try:
        with torch.no_grad():
            logits = model.eval()(images)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{what} fails on a batch of {scenario.name}'s inputs ({shape}; --image-size sets "
            f"the size): {type(exc).__name__}: {first}"
        ) from None
    if not isinstance(logits, torch.Tensor):
        raise CheckpointError(
            f"{what} returns a {type(logits).__name__}, not a tensor of logits {expected}"
        )
    if tuple(logits.shape) != expected:
        raise CheckpointError(
            f"{what} gives outputs of shape {tuple(logits.shape)} on a batch of {shape} inputs; "
            f"{scenario.name} needs logits of shape {expected} ({scenario.num_classes} classes)"
        )
    if not torch.isfinite(logits).all():
        raise CheckpointError(f"{what} gives non-finite logits on {scenario.name}'s inputs")


@app.command(name="import")
def import_command(
    factory: Annotated[
        str,
        common.opt(
            "--factory SPEC",
            "What builds the model: FILE.py:FUNCTION, package.module:function, "
            "timm:NAME or torchvision:NAME; called with the scenario's num_classes.",
        ),
    ],
    weights: Annotated[
        Path,
        common.opt(
            "--weights FILE",
            "The trained model's state_dict: .safetensors, or .pt/.pth "
            "(read with torch.load(weights_only=True)).",
        ),
    ],
    out: Annotated[Path, common.opt("--out -o FILE", "Checkpoint to write (.safetensors).")],
    dataset: Annotated[
        str, common.dataset_option("Scenario the model classifies (see `dlfd datasets`).")
    ],
    role: Annotated[
        str, role_option("original (trained on all of train) or retrained (on retain only).")
    ] = "original",
    split_seed: common.DataSplitSeedOpt = 0,
    data_root: common.DataRootOpt = None,
    image_size: common.ImageSizeOpt = None,
    forget: common.ForgetOpt = None,
    option: common.OptionOpt = None,
    force: Annotated[
        bool,
        common.opt(
            "--force",
            "Overwrite an existing --out, and replace files there that dlfd did not write.",
        ),
    ] = False,
) -> None:
    """Turn your own classifier and its trained weights into a dlfd checkpoint of a scenario.

    The checkpoint records the scenario, its options, data folder, split seed and forget set
    as `dlfd train` does, and the input the scenario feeds the model (size, channels,
    normalisation): train your model on the same split (same --split-seed, --forget and
    options) for the role you give. The weights must fit the model exactly, and the model
    must turn a batch of the scenario's images into (N, classes) logits.

    Importing puts the factory's file on this machine's trust list
    ($XDG_CONFIG_HOME/dlfd/trusted-factories.json, by sha256): dlfd rebuilds a model from
    user code only from a file on that list and unchanged since, so a checkpoint from
    elsewhere cannot make it run code it names. A .pt/.pth file is read with
    torch.load(weights_only=True), never unpickled otherwise.
    """
    out = check_weights_path(out)
    arch = canonical_arch(factory)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; use --force to overwrite it")
    outputs = common.checkpoint_files(out)
    user_code = arch.startswith(FACTORY_PREFIX)
    source = factory_source(arch.removeprefix(FACTORY_PREFIX)) if user_code else None
    inputs = common.input_files(weights, forget, data_root, source)
    with common.claimed(outputs, "--out", inputs=inputs, force=force):
        scenario = ScenarioRequest(dataset, split_seed, data_root, forget, option).load(image_size)
        common.refuse_data_outputs(outputs, "--out", scenario.problem.records, scenario.data_root)
        digest = factory_sha256(arch)
        model = build_user_model(arch, scenario.num_classes, source_sha256=digest)
        load_state_into(model, read_state_dict(weights), str(weights))
        split = ROLES[role]
        check_forward(model, scenario, split, f"{factory} with {weights}")
        trusted = trust_factory(arch, digest)
        meta = CheckpointMeta(
            arch=arch,
            role=role,
            factory_sha256=trusted,
            extra={
                "imported_from": str(weights.resolve()),
                "imported_sha256": sha256_file(weights),
                "train_split": split,
            },
            **scenario_provenance(scenario),
        )
        save_checkpoint(model, out, meta)
    params = sum(p.numel() for p in model.parameters())
    size = "x".join(str(n) for n in scenario.input_spec.size)
    err.print(
        f"wrote {out}: {arch} ({params:,} parameters) as the {role} model of {scenario.name} "
        f"({scenario.num_classes} classes, {size} inputs, split seed {split_seed})"
    )
    if trusted is not None:
        note(f"{source} (sha256 {trusted[:12]}...) is on the trust list {trust_file()}")
    next_step(out, role)
