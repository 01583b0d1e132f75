"""The command line: the happy path end to end, and one clear line for every user mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlfd.cli import main

FAST = [
    "--model",
    "small_cnn",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--quiet",
    "--set",
    "batch_size=64",
]


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
    original, retrained = record["results"]
    for key in (
        "test_acc",
        "test_top2",
        "mia_acc",
        "forgetting_score",
        "nomus",
        "avg_gap",
        "kl_to_reference_forget",
    ):
        if key != "test_top2":
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
    assert code == 0 and "forget" in stdout and "80" in stdout


def _assert_one_line_error(code: int, err: str, fragment: str) -> None:
    assert code == 2, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert err.strip().startswith("error:")


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
