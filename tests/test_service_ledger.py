"""The deletion-request service's core: the ledger (a real SQLite file, its migrations),
batches that publish versions, and what survives failures, ``kill -9`` and concurrent runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import torch

from dlfd.checkpoint import load_checkpoint
from dlfd.recipe import TrainRecipe
from dlfd.runs.method_run import unlearn_on_scenario
from dlfd.service import MAX_ATTEMPTS
from dlfd.service.ledger import Ledger, ParentTaken, sqlite_url
from dlfd.service.process import BatchFailed, method_seed, process_batch
from dlfd.service.schema import Base, Version
from dlfd.service.store import Busy, Store

SETTINGS = {"steps": 2}


@pytest.fixture(scope="module")
def original(tiny_original: Path) -> Path:
    """The session's tiny orl-glasses original (tests/conftest.py)."""
    return tiny_original


def make_store(
    root: Path, original: Path, *, audit: bool = False, database: str | None = None
) -> Store:
    kw = {"method": "dlfd", "settings": SETTINGS, "audit": audit, "database": database}
    return Store.create(root, original, **kw)


def training_people(store: Store) -> list[str]:
    problem = store.base_scenario.problem
    return sorted({problem.records.identities[i] for i in problem.train})


def state_digest(model: torch.nn.Module) -> list[tuple[str, bytes]]:
    return [(k, v.detach().cpu().numpy().tobytes()) for k, v in model.state_dict().items()]


#: A PostgreSQL database the ``postgres`` tests may empty and use (none: they skip).
POSTGRES_URL = os.environ.get("DLFD_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty ledger database: an SQLite file, or the PostgreSQL database of
    ``DLFD_TEST_POSTGRES_URL`` with every table dropped."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ledger.sqlite")
    if not POSTGRES_URL:
        pytest.skip("set DLFD_TEST_POSTGRES_URL=postgresql+psycopg://... to test PostgreSQL")
    pytest.importorskip("psycopg")
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(POSTGRES_URL)
    tables = MetaData()
    tables.reflect(engine)
    tables.drop_all(engine)
    engine.dispose()
    return POSTGRES_URL


def test_migrations_create_exactly_the_tables_the_code_declares(database: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    ledger = Ledger(database)
    with ledger.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        revision = MigrationContext.configure(connection).get_current_revision()
    assert diffs == []
    assert revision == "0001"
    ledger.close()
    Ledger(database).close()  # reopening migrates nothing


def test_request_lifecycle_and_refusals(database: str) -> None:
    ledger = Ledger(database)
    first = ledger.add_request([" s1 ", "s1", "s2"], "alice", "GDPR")
    second = ledger.add_request(["s3"])
    assert first.entries == ["s1", "s2"]  # stripped, repeats dropped
    for bad in ([], [""], [3], "s1", ["x" * 2000]):
        with pytest.raises(ValueError):
            ledger.add_request(bad)  # type: ignore[arg-type]
    assert ledger.counts() == {"pending": 2, "scheduled": 0, "done": 0, "refused": 0, "failed": 0}

    batch = ledger.claim(limit=1)
    assert [r.id for r in batch] == [first.id] and batch[0].status == "scheduled"
    assert ledger.claim(limit=5, older_than=__import__("datetime").timedelta(hours=1)) == []
    ledger.refuse(second.id, "unknown person 's3'")
    assert ledger.request(second.id).error == "unknown person 's3'"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        ledger.release([first.id], f"boom {attempt}")
        row = ledger.request(first.id)
        assert row.attempts == attempt and row.error == f"boom {attempt}"
        assert row.status == ("failed" if attempt == MAX_ATTEMPTS else "pending")
    assert ledger.counts()["failed"] == 1 and ledger.counts()["refused"] == 1


def test_two_versions_from_one_parent_are_refused_by_the_database(database: str) -> None:
    ledger = Ledger(database)

    def version(number: int, parent: int | None) -> Version:
        return Version(
            number=number, parent=parent, weights=f"v{number}", weights_sha256="0" * 64,
            forget_entries=[], forget_images=0, settings={}, metrics={},
        )  # fmt: skip

    request = ledger.add_request(["s1"])
    ledger.publish(version(0, None), done=[])
    ledger.publish(version(1, 0), done=[])
    with pytest.raises(ParentTaken):
        ledger.publish(version(2, 0), done=[request.id])  # a second child of version 0
    with pytest.raises(ParentTaken):
        ledger.publish(version(1, 0), done=[request.id])  # the same number again
    assert [v.number for v in ledger.versions()] == [0, 1]
    assert ledger.request(request.id).status == "pending"  # the failed publish changed nothing


def test_versions_are_the_method_from_the_current_version_with_everything_forgotten(
    tmp_path: Path, original: Path
) -> None:
    """Version k = the method run from version k-1 with the union of all requests so far."""
    store = make_store(tmp_path / "store", original)
    people = training_people(store)
    a = store.ledger.add_request([people[0]], "alice")
    unknown = store.ledger.add_request(["nobody"], "mallory")  # added directly: refused later
    assert process_batch(store, device="cpu").version == 1
    b = store.ledger.add_request([people[1], people[2]])
    again = store.ledger.add_request([people[0]])
    outcome = process_batch(store, device="cpu")
    assert outcome.version == 2 and outcome.done == [b.id, again.id]
    assert process_batch(store, device="cpu").message == "no pending requests"

    rows = {r.id: r for r in store.ledger.requests()}
    assert rows[a.id].version == 1 and rows[b.id].version == 2 and rows[again.id].version == 2
    assert rows[unknown.id].status == "refused" and "'nobody'" in rows[unknown.id].error
    v1, v2 = store.ledger.version(1), store.ledger.version(2)
    assert v1.forget_entries == [people[0]] and v2.parent == 1
    assert v2.forget_entries == [people[0], people[1], people[2]]
    assert v2.forget_images == 30 and store.ledger.honoured(2) == [b.id, again.id]
    lineage = store.ledger.lineage()
    assert [(v["number"], v["parent"], v["requests"]) for v in lineage] == [
        (0, None, []), (1, 0, [a.id]), (2, 1, [b.id, again.id])
    ]  # fmt: skip

    # the same computation by hand, from version 1's weights
    model, _ = load_checkpoint(store.weights(1), device=torch.device("cpu"))
    scenario = store.scenario(v2.forget_entries)
    assert scenario.problem.forget_sha256 == v2.forget_sha256
    expected = unlearn_on_scenario(
        model,
        scenario,
        "dlfd",
        seed=method_seed(0, 2),
        device=torch.device("cpu"),
        hparams=SETTINGS,
        recipe=TrainRecipe.from_dict(store.original_meta().recipe),
    )
    published, _ = load_checkpoint(store.weights(2), device=torch.device("cpu"))
    assert state_digest(published) == state_digest(expected.model)
    assert v2.metrics["forget_acc"] is not None and v2.verdict is None  # not audited
    evaluation = (store.weights(2).parent / "evaluation.json").read_text()
    assert v2.forget_sha256 in evaluation


def test_a_request_for_what_is_forgotten_already_is_settled_without_a_new_version(
    tmp_path: Path, original: Path, database: str
) -> None:
    store = make_store(tmp_path / "store", original, database=database)
    person = training_people(store)[3]
    store.ledger.add_request([person])
    process_batch(store, device="cpu")
    repeat = store.ledger.add_request([person])
    outcome = process_batch(store, device="cpu")
    assert outcome.version is None and outcome.done == [repeat.id]
    assert store.ledger.request(repeat.id).version == 1
    assert [v.number for v in store.ledger.versions()] == [0, 1]


def test_a_failed_batch_publishes_nothing_and_keeps_its_requests(
    tmp_path: Path, original: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(tmp_path / "store", original)
    request = store.ledger.add_request([training_people(store)[0]])

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr("dlfd.service.process.unlearn_on_scenario", explode)
    with pytest.raises(BatchFailed, match="out of memory"):
        process_batch(store, device="cpu")
    row = store.ledger.request(request.id)
    assert row.status == "pending" and row.attempts == 1 and "out of memory" in row.error
    assert [v.number for v in store.ledger.versions()] == [0]
    assert sorted(p.name for p in (store.root / "versions").iterdir()) == ["v0000-original"]
    monkeypatch.undo()
    assert process_batch(store, device="cpu").version == 1
    assert store.ledger.request(request.id).error is None


def test_a_second_run_is_refused_while_one_holds_the_store(tmp_path: Path, original: Path) -> None:
    store = make_store(tmp_path / "store", original)
    store.ledger.add_request([training_people(store)[0]])
    with store.lock(), pytest.raises(Busy):
        process_batch(store, device="cpu")
    assert store.ledger.counts()["pending"] == 1


def test_folders_of_unpublished_versions_are_removed(tmp_path: Path, original: Path) -> None:
    store = make_store(tmp_path / "store", original)
    for name in (".v0001-abc", "v0001-abc"):  # being written / renamed but not published
        (store.root / "versions" / name).mkdir()
        (store.root / "versions" / name / "model.safetensors").write_bytes(b"half")
    store.ledger.add_request([training_people(store)[0]])
    outcome = process_batch(store, device="cpu")
    assert sorted(outcome.removed) == [".v0001-abc", "v0001-abc"]
    names = sorted(p.name for p in (store.root / "versions").iterdir())
    assert names == ["v0000-original", Path(store.ledger.version(1).weights).parent.name]


def _dlfd(*args: str | Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dlfd", *map(str, args)]
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    return subprocess.Popen(command, env=env, text=True, **output)


def _wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize("moment", ["claimed", "writing"])
def test_kill_9_mid_batch_loses_nothing_and_a_rerun_completes(
    tmp_path: Path, original: Path, moment: str
) -> None:
    """``claimed``: right after the batch took the requests; ``writing``: while the new
    version's folder is being written (the audit trains the reference then)."""
    root = tmp_path / "store"
    store = make_store(root, original, audit=moment == "writing")
    people = training_people(store)
    ids = [store.ledger.add_request([p]).id for p in people[:2]]
    worker = _dlfd("requests", "process", "--store", root, "--device", "cpu", "--quiet")
    if moment == "claimed":
        _wait_for(lambda: store.ledger.counts()["scheduled"] == 2)
    else:
        _wait_for(lambda: any((root / "versions").glob(".v0001-*/model.safetensors")))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert [store.ledger.request(i).status for i in ids] == ["scheduled", "scheduled"]
    assert [v.number for v in store.ledger.versions()] == [0]

    rerun = _dlfd("requests", "process", "--store", root, "--device", "cpu", "--quiet")
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    assert "2 request(s) an interrupted run left are pending again" in output
    assert [store.ledger.request(i).status for i in ids] == ["done", "done"]
    assert [(v.number, v.parent) for v in store.ledger.versions()] == [(0, None), (1, 0)]
    assert store.ledger.version(1).forget_entries == people[:2]
    assert not list((root / "versions").glob(".*"))  # no half-written folder left
    if moment == "writing":
        certificate = store.ledger.certificate(1)
        assert certificate["verdict"] in ("pass", "inconclusive", "fail")
        paths = {name: m["path"] for name, m in certificate["models"].items()}
        assert paths["unlearned"] == store.ledger.version(1).weights  # as published
        assert all(not Path(p).is_absolute() and (root / p).is_file() for p in paths.values())
        # the version's numbers (read off the audit's pass) are what `dlfd evaluate` computes
        from dlfd.data.loaders import ProblemLoaders
        from dlfd.evaluation import evaluate_model

        cpu = torch.device("cpu")
        unlearned, meta = load_checkpoint(root / paths["unlearned"], device=cpu)
        reference, _ = load_checkpoint(root / paths["reference"], device=cpu)
        version = store.ledger.version(1)
        loaders = ProblemLoaders(store.scenario(version.forget_entries).problem, meta.input_spec)
        again = evaluate_model(unlearned, loaders, device=cpu, reference=reference, attacks=True)
        assert version.metrics == {k: again[k] for k in version.metrics}


def test_two_concurrent_process_runs_publish_one_version(tmp_path: Path, original: Path) -> None:
    root = tmp_path / "store"
    store = make_store(root, original)
    store.ledger.add_request([training_people(store)[0]])
    runs = [_dlfd("requests", "process", "--store", root, "--device", "cpu") for _ in range(2)]
    results = [(run.wait(timeout=300), run.stdout.read()) for run in runs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 3]), results
    if codes == [0, 3]:
        assert any("another run is processing" in text for _, text in results)
    versions = store.ledger.versions()
    assert [(v.number, v.parent) for v in versions] == [(0, None), (1, 0)]
    assert store.ledger.counts()["done"] == 1


def test_without_the_extra_the_commands_say_how_to_install_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sqlalchemy" else real(name, *a),
    )
    code, _, err = cli("requests", "list", "--store", tmp_path)
    assert code == 2
    assert "needs sqlalchemy: pip install 'dlfd[service]'" in err


def test_a_store_is_refused_an_original_that_does_not_match_its_sidecar(
    tmp_path: Path, original: Path
) -> None:
    from dlfd.errors import CheckpointError

    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(original.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    damaged.with_suffix(".json").write_bytes(original.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        make_store(tmp_path / "store", damaged)
    assert not (tmp_path / "store").exists()  # nothing written
