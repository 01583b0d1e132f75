"""The command line: the happy path end to end, and one clear line for every user mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FAST_TRAIN
from dlfd.cli import main

FAST = FAST_TRAIN


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``dlfd ARGS`` in-process; returns (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    paths = {}
    for role in ("original", "retrained"):
        out = root / f"{role}.safetensors"
        with pytest.MonkeyPatch.context():
            try:
                main(
                    ["train", "--dataset", "orl-glasses", "--role", role, "--out", str(out), *FAST]
                )
            except SystemExit as exc:
                assert not exc.code, f"training {role} failed"
        paths[role] = out
    return paths


def test_train_writes_checkpoint_and_sidecar(trained: dict[str, Path]) -> None:
    for role, path in trained.items():
        assert path.is_file() and path.with_suffix(".json").is_file()
        assert json.loads(path.with_suffix(".json").read_text())["role"] == role


def test_train_again_is_a_no_op(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    before = trained["original"].stat().st_mtime_ns
    code, _, err = run(
        capsys, "train", "--dataset", "orl-glasses", "--out", str(trained["original"]), *FAST
    )
    assert code == 0 and "up to date" in err
    assert trained["original"].stat().st_mtime_ns == before


def test_evaluate_writes_json_and_prints_table(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    code, stdout, _ = run(
        capsys,
        "evaluate",
        "--model",
        str(trained["original"]),
        "--model",
        str(trained["retrained"]),
        "--reference",
        str(trained["retrained"]),
        "--json",
        str(out),
        "--device",
        "cpu",
    )
    assert code == 0
    assert "nomus" in stdout and "original" in stdout
    record = json.loads(out.read_text())
    assert record["dataset"] == "orl-glasses" and record["split_sizes"]["forget"] == 60
    assert record["versions"]["torch"].startswith("2.") and "platform" in record["hardware"]
    original, retrained = record["results"]
    for key in (
        "test_acc",
        "mia_acc",
        "forgetting_score",
        "nomus",
        "avg_gap",
        "kl_to_reference_forget",
        "kl_to_reference_test",
    ):
        assert key in original["metrics"], key
    assert "test_top2" not in original["metrics"]  # binary task: top-2 is meaningless
    assert retrained["metrics"]["avg_gap"] == 0.0
    m = original["metrics"]
    assert m["forgetting_score"] == pytest.approx(abs(m["mia_acc"] - 0.5))
    assert m["nomus"] == pytest.approx(0.5 * m["test_acc"] + 0.5 * (1 - 2 * m["forgetting_score"]))


def test_listing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(capsys, "datasets")
    assert code == 0 and "orl-glasses" in stdout and "orl-identity" in stdout
    code, stdout, _ = run(capsys, "models")
    assert code == 0 and "resnet18_mlp" in stdout
    code, stdout, _ = run(capsys, "data", "info", "--dataset", "orl-identity")
    assert code == 0
    rows = {
        line.split()[1]: line.split()[2:4]
        for line in stdout.splitlines()
        if line.startswith("│") and len(line.split()) > 4
    }
    assert rows["forget"] == ["│", "80"] and rows["retain"] == ["│", "200"]


def _assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert fragment in err, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1


def test_unknown_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "train", "--dataset", "mnist", "--out", str(tmp_path / "m.safetensors"), *FAST
    )
    _assert_one_line_error(code, err, "unknown dataset 'mnist'")
    assert not list(tmp_path.iterdir())


def test_missing_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "evaluate", "--model", str(tmp_path / "nope.safetensors"))
    _assert_one_line_error(code, err, "sidecar not found")


def test_forget_file_naming_unknown_people(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    forget = tmp_path / "forget.txt"
    forget.write_text("s3\ns99  # no such person\n")
    code, _, err = run(
        capsys, "train", "--out", str(tmp_path / "m.safetensors"), "--forget", str(forget), *FAST
    )
    _assert_one_line_error(code, err, "'s99'")
    assert not (tmp_path / "m.safetensors").exists()


def test_class_count_mismatch(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "e.json"
    code, _, err = run(
        capsys,
        "evaluate",
        "--dataset",
        "orl-identity",
        "--model",
        str(trained["original"]),
        "--json",
        str(out),
    )
    _assert_one_line_error(code, err, "predicts 2 classes but orl-identity has 40")
    assert not out.exists()


def test_bad_setting_and_bad_output_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "train", "--out", str(tmp_path / "m.safetensors"), *FAST, "--set", "lr=fast"
    )
    _assert_one_line_error(code, err, "lr must be float")
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "m.pt"), *FAST)
    _assert_one_line_error(code, err, ".safetensors")


def test_debug_flag_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from dlfd.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--dataset", "mnist", "--out", str(tmp_path / "m.safetensors")])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "mps"], "unsupported device 'mps'"),
        (["--set", "augment.degrees=nan"], "finite"),
        (["--set", "lr=inf"], "finite"),
        (["--set", "augment.crop_padding=40"], "smaller than the image size"),
        (["--option", "level=instance"], "has no option 'level'"),
    ],
)
def test_bad_training_settings_fail_before_any_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], fragment: str
) -> None:
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "m.safetensors"), *FAST, *args)
    _assert_one_line_error(code, err, fragment)
    assert not list(tmp_path.iterdir())


def test_negative_seed_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "train", "--out", str(tmp_path / "m.safetensors"), "--seed", "-1")
    assert code == 2 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_json_output_may_not_clobber_an_input(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path]
) -> None:
    sidecar = trained["original"].with_suffix(".json")
    before = sidecar.read_bytes()
    code, _, err = run(
        capsys, "evaluate", "--model", str(trained["original"]), "--json", str(sidecar)
    )
    _assert_one_line_error(code, err, "is also an input")
    assert sidecar.read_bytes() == before
    code, _, err = run(
        capsys, "evaluate", "--model", str(trained["original"]), "--json", str(sidecar.parent)
    )
    _assert_one_line_error(code, err, "is a folder")


def test_forget_request_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    forget = tmp_path / "forget.txt"
    forget.write_text("# people who asked to be forgotten\ns1\ns2\n")
    out = tmp_path / "identity.safetensors"
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "orl-identity",
        "--forget",
        str(forget),
        "--out",
        str(out),
        *FAST,
    )
    assert code == 0, err
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert len(sidecar["forget_keys"]) == 14  # 7 training photos of each of s1 and s2
    assert {k.split("/")[0] for k in sidecar["forget_keys"]} == {"s1", "s2"}
    report = tmp_path / "e.json"
    code, _, err = run(capsys, "evaluate", "--model", str(out), "--json", str(report))
    assert code == 0, err
    record = json.loads(report.read_text())
    assert record["split_sizes"]["forget"] == 14  # the model's own forget set, from its sidecar
    assert record["forget_sha256"] == sidecar["forget_sha256"]


def test_reference_for_another_forget_set_is_refused(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    forget = tmp_path / "forget.txt"
    forget.write_text("s1\n")
    other = tmp_path / "other.safetensors"
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "orl-identity",
        "--role",
        "retrained",
        "--forget",
        str(forget),
        "--out",
        str(other),
        *FAST,
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        "evaluate",
        "--dataset",
        "orl-identity",
        "--model",
        str(other),
        "--reference",
        str(other),
        "--split-seed",
        "1",
    )
    _assert_one_line_error(code, err, "different forget set")


def test_partial_person_on_identity_level_scenario(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from dlfd.scenarios import get_scenario

    problem = get_scenario("orl-glasses", split_seed=0).problem
    image = problem.records.paths[problem.retain[0]]
    forget = tmp_path / "forget.txt"
    forget.write_text(image + "\n")
    code, _, err = run(
        capsys, "train", "--out", str(tmp_path / "m.safetensors"), "--forget", str(forget), *FAST
    )
    _assert_one_line_error(code, err, "forgets whole people")
