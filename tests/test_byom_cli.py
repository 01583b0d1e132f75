"""Bring your own model: README's section walked end to end, and every refusal on the way.

The user's model file, training script and ``dlfd`` commands are read from README's
"## Bring your own model" section and run as written (only the training epochs are cut and a
few speed settings added), so README and this test cannot drift apart silently.
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dlfd.checkpoint import load_checkpoint, read_meta
from dlfd.errors import CheckpointError, ConfigError
from dlfd.io import sha256_file
from dlfd.models.user_factory import trust_file
from dlfd.runs.scenario import load_scenario

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bring your own model"
#: Settings that keep the README's commands to seconds on two CPU cores (appended to them).
SPEED = {
    "unlearn": ["--quiet", "--set", "steps=2", "--set", "sinkhorn_iters=10", "--device", "cpu"],
    "evaluate": ["--device", "cpu"],
    "audit": ["--n-boot", "20", "--device", "cpu"],
}

Cli = Callable[..., tuple[int, str, str]]


def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md lost its {SECTION!r} section"
    body = text.split(SECTION, 1)[1]
    return body.split("\n## ", 1)[0]


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def python_file(section: str, name: str) -> str:
    """The README's Python block that starts with the comment ``# NAME``."""
    found = [b for b in code_blocks(section, "python") if b.startswith(f"# {name}")]
    assert len(found) == 1, f"README's {SECTION!r} has no Python block for {name}"
    return found[0]


def shell_commands(section: str) -> list[list[str]]:
    """The README's shell lines (continuations joined, comments dropped), as argument lists."""
    (block,) = code_blocks(section, "bash")
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def make_user_files(folder: Path, csv_dataset: Path) -> Path:
    """README's mynet.py and train_mynet.py in ``folder`` (beside ``data/manifest.csv``), and a
    forget list naming two people of the split's training set; returns the forget list."""
    assert csv_dataset == folder / "data" / "manifest.csv"  # README's relative data path
    section = readme_section()
    (folder / "mynet.py").write_text(python_file(section, "mynet.py"))
    script = python_file(section, "train_mynet.py")
    assert "EPOCHS = 30" in script
    (folder / "train_mynet.py").write_text(script.replace("EPOCHS = 30", "EPOCHS = 3"))
    scenario = load_scenario("csv", split_seed=0, data_root=csv_dataset, image_size=32)
    retain = scenario.problem.split("retain")
    people = sorted({scenario.problem.records.identities[i] for i in retain})[:2]
    forget = folder / "forget.txt"
    forget.write_text("\n".join(people) + "\n")
    return forget


def run_python(folder: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``python SCRIPT ARGS`` in ``folder``, in this process (the script imports mynet)."""
    script, *args = argv
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(folder))
    try:
        runpy.run_path(str(folder / script), run_name="__main__")
    finally:
        sys.modules.pop("mynet", None)


def test_readme_section_walks_end_to_end(
    tmp_path: Path, csv_dataset: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)
    forget = make_user_files(tmp_path, csv_dataset)
    commands = shell_commands(readme_section())
    assert [c[:2] for c in commands] == [
        ["python", "train_mynet.py"],
        ["python", "train_mynet.py"],
        ["dlfd", "import"],
        ["dlfd", "import"],
        ["dlfd", "unlearn"],
        ["dlfd", "evaluate"],
        ["dlfd", "audit"],
    ]
    codes = {}
    for command in commands:
        if command[0] == "python":
            run_python(tmp_path, command[1:], monkeypatch)
            continue
        args = command[1:] + SPEED.get(command[1], [])
        code, _, err = cli(*args)
        codes[command[1]] = code
        if command[1] == "audit":  # its exit code is the verdict: 0 pass, 1 fail, 3 inconclusive
            assert code in (0, 1, 3), err
        else:
            assert code == 0, f"{shlex.join(command)} failed: {err}"
        if command[1] == "import":
            assert "next: dlfd" in err

    runs = tmp_path / "runs"
    original, retrained = runs / "mynet.safetensors", runs / "mynet-retrained.safetensors"
    unlearned = runs / "mynet-dlfd.safetensors"
    scenario = load_scenario(
        "csv", split_seed=0, data_root=csv_dataset, image_size=32, forget=forget
    )

    # the imported checkpoints record the scenario as `dlfd train` does, and the factory
    meta = read_meta(original)
    assert meta.arch == f"factory:{tmp_path / 'mynet.py'}:build"
    assert meta.role == "original" and read_meta(retrained).role == "retrained"
    assert meta.scenario == "csv" and meta.split_seed == 0 and meta.num_classes == 2
    assert meta.input_spec == scenario.input_spec and meta.input_spec.size == (32, 32)
    assert meta.forget_keys == tuple(scenario.problem.forget_keys)
    assert meta.forget_sha256 == scenario.problem.forget_sha256
    assert meta.data_root == str(csv_dataset.resolve())
    assert meta.factory_sha256 in json.loads(trust_file().read_text())
    # the weights are the user's, unchanged
    model, _ = load_checkpoint(original)
    mine = load_file(tmp_path / "mynet-original.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in mine.items())

    # unlearning changed the weights, with DLFD's features taken at the input of the last
    # nn.Linear (mynet's `out`), and kept the factory's provenance
    after = load_file(unlearned)
    unlearned_meta = read_meta(unlearned)
    assert unlearned_meta.factory_sha256 == meta.factory_sha256
    assert unlearned_meta.extra["method"]["info"]["features"] == "out:input"
    assert any(not torch.equal(after[k], v) for k, v in load_file(original).items())

    record = json.loads((runs / "mynet-eval.json").read_text())
    assert record["split_sizes"] == scenario.problem.sizes()
    assert record["split_sizes"]["test"] == len(scenario.problem.split("test")) > 0
    assert [row["role"] for row in record["results"]] == ["original", "unlearned"]
    for row in record["results"]:
        assert 0.0 <= row["metrics"]["test_acc"] <= 1.0

    certificate = json.loads((runs / "mynet-audit" / "certificate.json").read_text())
    verdict_code = {"pass": 0, "fail": 1, "inconclusive": 3}[certificate["verdict"]]
    assert codes["audit"] == verdict_code
    assert (runs / "mynet-audit" / "audit.html").is_file()


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture
def imported(
    tmp_path: Path, csv_dataset: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[str]]:
    """README's mynet.py with untrained weights, imported; returns (checkpoint, import args)."""
    monkeypatch.chdir(tmp_path)
    make_user_files(tmp_path, csv_dataset)
    sys.path.insert(0, str(tmp_path))
    try:
        from mynet import build  # type: ignore[import-not-found]

        save_file(build(2).state_dict(), tmp_path / "w.safetensors")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynet", None)
    args = [
        "import", "--factory", "mynet.py:build", "--weights", "w.safetensors",
        "-d", "csv", "--data-root", str(csv_dataset), "--image-size", "16",
    ]  # fmt: skip
    out = tmp_path / "m.safetensors"
    code, _, err = cli(*args, "--out", out)
    assert code == 0, err
    return out, args


def test_changed_factory_file_is_refused(imported: tuple[Path, list[str]], cli: Cli) -> None:
    out, _ = imported
    source = out.parent / "mynet.py"
    source.write_text(source.read_text() + "\nprint('new code')\n")
    code, _, err = cli("evaluate", "--model", out, "--device", "cpu")
    assert code == 2
    assert "changed since the checkpoint was imported" in err and "dlfd import" in err
    assert "new code" not in err


def test_factory_never_imported_here_is_refused(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = imported
    empty = tmp_path / "other-machine-config"
    empty.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty))
    code, _, err = cli("evaluate", "--model", out, "--device", "cpu")
    assert code == 2 and "has not imported" in err and "dlfd import" in err
    with pytest.raises(CheckpointError, match="has not imported"):
        load_checkpoint(out)


def test_weights_that_do_not_fit_are_refused(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path
) -> None:
    _, args = imported
    state = load_file(tmp_path / "w.safetensors")
    wrong = dict(state)
    wrong["out.weight"] = torch.zeros(3, wrong["out.weight"].shape[1])
    save_file(wrong, tmp_path / "shape.safetensors")
    del state["hidden.bias"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "keys.safetensors")
    new_args = [*args[:4], "shape.safetensors", *args[5:]]
    code, _, err = cli(*new_args, "--out", tmp_path / "x.safetensors")
    assert code == 2 and "out.weight has shape (3, 64)" in err and "(2, 64)" in err
    new_args[4] = "keys.safetensors"
    code, _, err = cli(*new_args, "--out", tmp_path / "x.safetensors")
    assert code == 2 and "missing ['hidden.bias']" in err and "unexpected ['extra.weight']" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.json").exists()


def test_pt_state_dict_is_read_with_weights_only(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path
) -> None:
    _, args = imported
    state = load_file(tmp_path / "w.safetensors")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.pt")
    new_args = [*args[:4], "w.pt", *args[5:]]
    code, _, err = cli(*new_args, "--out", tmp_path / "pt.safetensors")
    assert code == 0, err

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    torch.save({"w": Payload()}, tmp_path / "evil.pt")
    new_args[4] = "evil.pt"
    code, out, err = cli(*new_args, "--out", tmp_path / "evil.safetensors")
    assert code == 2 and "weights_only=True" in err and "unpickled!" not in out + err


def test_factory_returning_a_non_module_is_refused(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path
) -> None:
    _, args = imported
    (tmp_path / "notnet.py").write_text("def build(num_classes):\n    return 'a model'\n")
    new_args = [args[0], "--factory", "notnet.py:build", *args[3:]]
    code, _, err = cli(*new_args, "--out", tmp_path / "x.safetensors")
    assert code == 2 and "returned str, not an nn.Module" in err


def test_model_that_does_not_run_on_the_inputs_is_refused(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path
) -> None:
    _, args = imported
    (tmp_path / "gray.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, num_classes))\n"
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 2))
    save_file(model.state_dict(), tmp_path / "gray.safetensors")
    new_args = [args[0], "--factory", "gray.py:build", "--weights", "gray.safetensors", *args[5:]]
    code, _, err = cli(*new_args, "--out", tmp_path / "x.safetensors")
    assert code == 2 and "fails on a batch of csv's inputs (4x3x16x16" in err


def test_missing_library_says_how_to_install_it(
    imported: tuple[Path, list[str]], cli: Cli, tmp_path: Path
) -> None:
    try:
        import timm  # noqa: F401

        pytest.skip("timm is installed")
    except ImportError:
        pass
    _, args = imported
    new_args = [args[0], "--factory", "timm:resnet18", *args[3:]]
    code, _, err = cli(*new_args, "--out", tmp_path / "x.safetensors")
    assert code == 2 and "pip install timm" in err


# -- training from pretrained weights (--init) -----------------------------------------------


def test_train_starts_from_an_imported_model(
    imported: tuple[Path, list[str]], csv_dataset: Path, cli: Cli
) -> None:
    start, _ = imported
    out = start.parent / "tuned.safetensors"
    common = ["-d", "csv", "--data-root", str(csv_dataset), "--image-size", "16", "--quiet"]
    code, _, err = cli("train", *common, "--epochs", "1", "--init", start, "-o", out)
    assert code == 0, err
    meta, started = read_meta(out), read_meta(start)
    assert meta.arch == started.arch and meta.arch.startswith("factory:")
    assert meta.factory_sha256 == started.factory_sha256
    assert meta.extra["init"] == {"path": str(start), "sha256": sha256_file(start)}
    tuned, initial = load_file(out), load_file(start)
    assert tuned.keys() == initial.keys()
    assert any(not torch.equal(tuned[k], initial[k]) for k in tuned)  # it trained
    # the starting weights are part of the configuration: a rerun is up to date, another
    # start is a different run
    code, _, err = cli("train", *common, "--epochs", "1", "--init", start, "-o", out)
    assert code == 0 and "up to date" in err
    code, _, err = cli("train", *common, "--epochs", "1", "-o", out)
    assert code == 2 and "different configuration" in err


def test_train_init_from_a_state_dict_and_refusals(
    tmp_path: Path, csv_dataset: Path, cli: Cli
) -> None:
    common = ["-d", "csv", "--data-root", str(csv_dataset), "--image-size", "16", "--quiet"]
    common += ["--model", "small_cnn", "--epochs", "1"]
    scratch = tmp_path / "scratch.safetensors"
    assert cli("train", *common, "-o", scratch)[0] == 0
    state = load_file(scratch)
    torch.save(state, tmp_path / "state.pt")
    out = tmp_path / "from-pt.safetensors"
    code, _, err = cli("train", *common, "--init", tmp_path / "state.pt", "-o", out)
    assert code == 0, err
    assert read_meta(out).arch == "small_cnn"
    assert read_meta(out).config_sha256 != read_meta(scratch).config_sha256
    del state[next(iter(state))]
    save_file(state, tmp_path / "partial.safetensors")
    code, _, err = cli(
        "train",
        *common,
        "--init",
        tmp_path / "partial.safetensors",
        "-o",
        tmp_path / "x.safetensors",
    )
    assert code == 2 and "missing" in err.lower()
    code, _, err = cli(
        "train", *common, "--init", tmp_path / "nothing.pt", "-o", tmp_path / "y.safetensors"
    )
    assert code == 2 and "not a file" in err


def test_train_and_bench_a_user_architecture_from_scratch(
    imported: tuple[Path, list[str]], csv_dataset: Path, cli: Cli
) -> None:
    folder = imported[0].parent
    data = ["-d", "csv", "--data-root", str(csv_dataset), "--image-size", "16", "--quiet"]
    out = folder / "scratch.safetensors"
    code, _, err = cli("train", *data, "--model", "mynet.py:build", "--epochs", "1", "-o", out)
    assert code == 0, err
    meta = read_meta(out)
    assert meta.arch == f"factory:{folder / 'mynet.py'}:build"
    assert meta.factory_sha256 == sha256_file(folder / "mynet.py")
    load_checkpoint(out)  # rebuilt through the trust list
    bench = folder / "bench"
    code, _, err = cli(
        "bench", *data, "--set", "recipe.model=mynet.py:build", "--set", "recipe.epochs=1",
        "--methods", "original,retrain,finetune", "--seeds", "0", "--out", bench,
        "--cache-dir", folder / "cache",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads((bench / "results.json").read_text())
    assert sorted(r["method"] for r in rows) == ["finetune", "original", "retrain"]
    cached = sorted((folder / "cache" / "references").glob("*.safetensors"))
    assert len(cached) == 2 and all(read_meta(p).arch == meta.arch for p in cached)
    # a factory this machine never imported is refused before any training (trust follows the
    # file's content: a byte-identical copy would be trusted)
    (folder / "other.py").write_text((folder / "mynet.py").read_text() + "\n# another file\n")
    code, _, err = cli("train", *data, "--model", "other.py:build", "-o", folder / "o.safetensors")
    assert code == 2 and "has not imported" in err


def test_lira_shadows_of_an_imported_model_are_refused(
    imported: tuple[Path, list[str]], csv_dataset: Path
) -> None:
    from dlfd.audit.runner import train_shadows

    meta = read_meta(imported[0])
    scenario = load_scenario("csv", split_seed=0, data_root=csv_dataset, image_size=16)
    with pytest.raises(ConfigError, match="imported without one"):
        train_shadows(scenario, meta, 2, imported[0].parent / "shadows", torch.device("cpu"))


def test_bench_uses_an_imported_original(
    imported: tuple[Path, list[str]], csv_dataset: Path, cli: Cli
) -> None:
    start, _ = imported
    folder = start.parent
    bench = ["bench", "-d", "csv", "--data-root", str(csv_dataset), "--image-size", "16"]
    bench += ["--quiet", "--set", "recipe.epochs=1", "--cache-dir", str(folder / "cache")]
    bench += ["--methods", "original,retrain,finetune", "--original", str(start)]
    code, _, err = cli(*bench, "--seeds", "0", "--out", folder / "b")
    assert code == 0, err
    rows = {r["method"]: r for r in json.loads((folder / "b" / "results.json").read_text())}
    assert sorted(rows) == ["finetune", "original", "retrain"]
    record = json.loads((folder / "b" / "seed-0" / "original.result.json").read_text())
    assert record["config"]["original_config_sha256"] == read_meta(start).weights_sha256
    # the reference was trained by dlfd with the imported model's architecture
    (reference,) = (folder / "cache" / "references").glob("*.safetensors")
    assert read_meta(reference).arch == read_meta(start).arch
    assert read_meta(reference).role == "retrained"
    # another split than the original's is refused, naming the fix
    code, _, err = cli(*bench, "--seeds", "1", "--out", folder / "b1")
    assert code == 2 and "the split of seed 0" in err and "--split-seed" in err
    assert not (folder / "b1").exists()  # refused before the banner and any work
    code, _, err = cli(*bench[:-2], "--reference", str(start), "--out", folder / "b2")
    assert code == 2 and "--reference needs --original" in err
    code, _, err = cli(*bench, "--reference", str(start), "--seeds", "0", "--out", folder / "b3")
    assert code == 2 and "is the original model, not the retrained one" in err
