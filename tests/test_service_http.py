"""The HTTP service of a store, over real HTTP on 127.0.0.1 with a real SQLite ledger: requests
in, a batch, versions and certificates out; every refusal writes nothing; the token; and
``dlfd serve`` itself (a subprocess)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn

from dlfd.service.app import MAX_BODY_BYTES, create_app
from dlfd.service.store import Store

TOKEN = "test-token-0123456789abcdef"
SETTINGS = {"steps": 2}
#: An image path of the data (ORL: ``sNN/K.pgm``).
IMAGE_PATH = re.compile(r"\bs\d+/\d+\.pgm\b")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def original(tiny_original: Path) -> Path:
    """The session's tiny orl-glasses original (tests/conftest.py)."""
    return tiny_original


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory, original: Path) -> Path:
    """An audited store (version 0 only)."""
    root = tmp_path_factory.mktemp("audited") / "store"
    Store.create(root, original, method="dlfd", settings=SETTINGS, audit=True).close()
    return root


def training_people(root: Path) -> list[str]:
    store = Store(root)
    try:
        problem = store.base_scenario.problem
        return sorted({problem.records.identities[i] for i in problem.train})
    finally:
        store.close()


class Served:
    """An app served by uvicorn in a thread on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def service(store_root: Path) -> Iterator[str]:
    """The audited store's service (batches only on POST /process); its base URL."""
    served = Served(create_app(store_root, token=TOKEN, process_every=None, device="cpu"))
    yield served.url
    served.stop()


def call(
    url: str,
    method: str = "GET",
    *,
    body: Any = None,
    raw: bytes | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """(status, JSON or text, headers) of one HTTP call."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, payload, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, got = exc.code, exc.read(), exc.headers
    if got.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(payload), got
    return status, payload.decode(), got


def wait_for(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def settled(url: str, request_id: int) -> dict[str, Any] | None:
    """The request once no batch runs and it is decided (None before)."""
    if call(f"{url}/health")[1]["processing"]:
        return None
    status, found, _ = call(f"{url}/requests/{request_id}")
    assert status == 200
    return found if found["status"] in ("done", "refused", "failed") else None


@pytest.fixture(scope="module")
def processed(service: str, store_root: Path) -> dict[str, Any]:
    """One request submitted, then two POST /process at once; the batch done."""
    person = training_people(store_root)[2]
    status, request, headers = call(
        f"{service}/requests",
        "POST",
        body={"forget": [person], "requester": "alice", "reason": "GDPR art. 17"},
    )
    assert status == 201, request
    assert headers["Location"] == f"/requests/{request['id']}"
    barrier = threading.Barrier(2)
    answers: list[tuple[int, Any]] = []

    def post() -> None:
        barrier.wait()
        answers.append(call(f"{service}/process", "POST")[:2])

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = wait_for(lambda: settled(service, request["id"]), what="the batch")
    return {"person": person, "submitted": request, "answers": answers, "done": done}


# --- the request's life --------------------------------------------------------------------


def test_a_request_is_processed_into_version_1(processed: dict[str, Any]) -> None:
    submitted, done = processed["submitted"], processed["done"]
    assert submitted["status"] == "pending"
    assert submitted["entries"] == [processed["person"]]
    assert (submitted["requester"], submitted["reason"]) == ("alice", "GDPR art. 17")
    assert done["status"] == "done", done
    assert done["version"] == 1
    assert done["id"] == submitted["id"]


def test_two_process_calls_at_once_run_one_batch(
    processed: dict[str, Any], service: str, store_root: Path
) -> None:
    answers = sorted(processed["answers"], key=lambda a: a[0])
    assert [status for status, _ in answers] == [202, 409]
    assert answers[0][1] == {"status": "started"}
    assert "already running" in answers[1][1]["detail"]
    versions = call(f"{service}/versions", token=None)[1]
    parents = [v["parent"] for v in versions]
    assert len(parents) == len(set(parents))
    assert [v["number"] for v in versions] == [0, 1]


def test_versions_are_public_and_name_nobody(processed: dict[str, Any], service: str) -> None:
    status, versions, headers = call(f"{service}/versions", token=None)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    v0, v1 = versions
    assert (v0["number"], v0["parent"], v0["verdict"]) == (0, None, None)
    assert (v1["number"], v1["parent"]) == (1, 0)
    assert v1["requests"] == [processed["submitted"]["id"]]
    assert v1["forgotten_entries"] == 1 and v1["forget_images"] > 0
    assert v1["verdict"] in ("pass", "inconclusive", "fail")
    assert re.fullmatch(r"[0-9a-f]{64}", v1["weights_sha256"])
    assert all("forget_entries" not in v for v in versions)
    text = json.dumps(versions)
    assert not re.search(rf"\b{processed['person']}\b", text)
    assert not IMAGE_PATH.search(text)


def test_certificate_needs_the_token_and_has_the_verdict(
    processed: dict[str, Any], service: str
) -> None:
    status, found, headers = call(f"{service}/versions/1/certificate", token=None)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    status, certificate, _ = call(f"{service}/versions/1/certificate")
    assert status == 200
    assert certificate["format"] == "dlfd-certificate/1"
    assert certificate["verdict"] in ("pass", "inconclusive", "fail")
    status, versions, _ = call(f"{service}/versions", token=None)
    assert certificate["verdict"] == versions[1]["verdict"]
    # image keys only of the people the versions forget (the request named them)
    images = set(IMAGE_PATH.findall(json.dumps(certificate)))
    assert images and all(i.startswith(f"{processed['person']}/") for i in images)
    status, found, _ = call(f"{service}/versions/0/certificate")
    assert (status, found) == (404, {"detail": "version 0 has no certificate (not audited)"})
    status, found, _ = call(f"{service}/versions/99/certificate")
    assert (status, found) == (404, {"detail": "no version 99"})


def test_dashboard_shows_the_lineage_and_no_names(processed: dict[str, Any], service: str) -> None:
    status, page, headers = call(f"{service}/", token=None)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert page.startswith("<!DOCTYPE html>")
    assert "id='lineage-v0'" in page and "id='lineage-v1'" in page
    assert "<a href='#version-1'>v1</a>" in page
    assert "done: <strong>1</strong>" in page
    assert not re.search(rf"\b{processed['person']}\b", page)
    assert not IMAGE_PATH.search(page)


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="needs Chromium at /usr/bin/chromium"
)
def test_the_served_dashboard_in_a_headless_browser(
    processed: dict[str, Any], service: str
) -> None:
    """The page as served (its Content-Security-Policy applied) shows the lineage v0 -> v1,
    the versions table and the trace, and asks for nothing beyond the page itself."""
    from playwright.sync_api import sync_playwright

    from test_report import BROWSER_ARGS

    asked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: asked.append(request.url))
            page.goto(f"{service}/", wait_until="load")
            lineage = [page.is_visible(f"#lineage-v{n}") for n in (0, 1)]
            rows = page.evaluate("document.querySelectorAll('table.versions tbody tr').length")
            trace = page.evaluate(
                "(() => { const b = document.querySelector('figure.trace svg')"
                ".getBoundingClientRect(); return [b.width, b.height]; })()"
            )
            text = page.inner_text("body")
        finally:
            browser.close()
    assert lineage == [True, True]
    assert rows == 2 and trace[0] > 300 and trace[1] > 100
    assert "v0" in text and "v1" in text and processed["person"] not in text.split()
    assert asked == [f"{service}/"]


def test_health(processed: dict[str, Any], service: str) -> None:
    status, found, _ = call(f"{service}/health", token=None)
    assert (status, found) == (200, {"status": "ok", "current_version": 1, "processing": False})


def test_responses_hold_no_image_bytes(
    processed: dict[str, Any], service: str, store_root: Path
) -> None:
    store = Store(store_root)
    records = store.base_scenario.problem.records
    person = processed["person"]
    index = next(i for i, who in enumerate(records.identities) if who == person)
    pixels = (records.root / records.paths[index]).read_bytes()
    store.close()
    answers = [
        call(f"{service}{path}", token=token)[1]
        for path, token in [
            ("/", None),
            ("/versions", None),
            ("/health", None),
            (f"/requests/{processed['submitted']['id']}", TOKEN),
            ("/versions/1/certificate", TOKEN),
        ]
    ]
    for answer in answers:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        assert pixels[-64:].hex() not in text
        assert "P5\n" not in text  # a PGM header
        assert not re.search(r"[A-Za-z0-9+/=]{400,}", text)  # no base64 blob


# --- refusals ------------------------------------------------------------------------------

REFUSALS = {
    "unknown person": (
        {"forget": ["nobody-42"]},
        422,
        lambda d: "nobody-42" in d,
    ),
    "unknown image": ({"forget": ["s1/99.pgm"]}, 422, lambda d: "s1/99.pgm" in d),
    "empty list": ({"forget": []}, 422, lambda d: "at least one person or image" in d),
    "not a list": ({"forget": "s1"}, 422, lambda d: "at least one person or image" in d),
    "not strings": ({"forget": [12]}, 422, lambda d: "non-empty string" in d),
    "no forget": ({"requester": "bob"}, 422, lambda d: '{"forget"' in d),
    "unknown field": ({"forgot": ["s1"]}, 422, lambda d: "unknown field(s) 'forgot'" in d),
    "not an object": (["s1"], 422, lambda d: "must be a JSON object" in d),
    "long requester": (
        {"forget": ["s1"], "requester": "x" * 5000},
        422,
        lambda d: "requester must be a string" in d,
    ),
    "malformed JSON": (b'{"forget": ["s1"', 400, lambda d: "not valid JSON" in d),
    "NaN": (b'{"forget": ["s1"], "reason": NaN}', 400, lambda d: "not valid JSON" in d),
    "not UTF-8": (b'{"forget": ["\xff"]}', 400, lambda d: "not UTF-8" in d),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_request_writes_nothing(
    case: str, processed: dict[str, Any], service: str, store_root: Path
) -> None:
    body, expected, says = REFUSALS[case]
    store = Store(store_root)
    before = store.ledger.counts()
    raw = body if isinstance(body, bytes) else None
    status, found, _ = call(f"{service}/requests", "POST", body=None if raw else body, raw=raw)
    assert status == expected, found
    assert set(found) == {"detail"} and isinstance(found["detail"], str)
    assert says(found["detail"]), found["detail"]
    assert store.ledger.counts() == before
    store.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_the_limit_is_refused_unread(
    chunked: bool, processed: dict[str, Any], service: str, store_root: Path
) -> None:
    """A declared length past the limit is refused before the body is sent; a chunked body
    once the limit is passed (the rest is never read)."""
    store = Store(store_root)
    before = store.ledger.counts()
    host, port = service.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if chunked:
        chunks = (b"s" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))
        connection.request("POST", "/requests", body=chunks, headers=headers, encode_chunked=True)
    else:
        connection.putrequest("POST", "/requests")
        for key, value in {**headers, "Content-Length": str(MAX_BODY_BYTES + 1)}.items():
            connection.putheader(key, value)
        connection.endheaders()  # and no body
    response = connection.getresponse()
    found = json.loads(response.read())
    connection.close()
    assert response.status == 413
    assert found == {"detail": f"the request body is larger than {MAX_BODY_BYTES} bytes"}
    assert store.ledger.counts() == before
    store.close()


@pytest.mark.parametrize(
    "token, says",
    [(None, "Authorization: Bearer TOKEN"), ("wrong-token-0123456789", "not the service's")],
)
def test_the_token_is_required(
    token: str | None, says: str, processed: dict[str, Any], service: str, store_root: Path
) -> None:
    store = Store(store_root)
    before = store.ledger.counts()
    submitted = processed["submitted"]["id"]
    for method, path, body in [
        ("POST", "/requests", {"forget": [processed["person"]]}),
        ("GET", f"/requests/{submitted}", None),
        ("GET", "/versions/1/certificate", None),
        ("POST", "/process", None),
    ]:
        status, found, headers = call(f"{service}{path}", method, body=body, token=token)
        assert status == 401, (path, found)
        assert headers["WWW-Authenticate"] == "Bearer"
        assert says in found["detail"]
        assert processed["person"] not in json.dumps(found)
    assert store.ledger.counts() == before
    store.close()
    status, _, _ = call(f"{service}/health", headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 200  # public


def test_unknown_requests_are_404(processed: dict[str, Any], service: str) -> None:
    assert call(f"{service}/requests/999")[:2] == (404, {"detail": "no request 999"})
    status, found, _ = call(f"{service}/requests/abc")
    assert (status, found) == (404, {"detail": "no request 'abc'"})
    status, found, _ = call(f"{service}/requests/" + "9" * 30)
    assert status == 404


def test_process_is_refused_while_another_run_holds_the_store(
    processed: dict[str, Any], service: str, store_root: Path
) -> None:
    store = Store(store_root)
    with store.lock():
        status, found, _ = call(f"{service}/process", "POST")
    store.close()
    assert status == 409
    assert "another run is processing" in found["detail"]


# --- dlfd serve ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dlfd_serve(*args: str | Path, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "dlfd", "serve", *map(str, args)]
    full_env = {k: v for k, v in os.environ.items() if k != "DLFD_TOKEN"}
    full_env.update({"OMP_NUM_THREADS": "1", "COLUMNS": "200", **env})
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.Popen(command, env=full_env, text=True, **pipes)


def wait_until_serving(process: subprocess.Popen[str], url: str) -> None:
    """Wait for ``dlfd serve`` to answer (failing at once if it exits)."""

    def ready() -> bool:
        assert process.poll() is None, process.communicate()
        try:
            return call(f"{url}/health", token=None)[0] == 200
        except OSError:
            return False

    wait_for(ready, 60, "dlfd serve")


def test_serve_refuses_a_public_address_without_a_token(store_root: Path) -> None:
    process = dlfd_serve("--store", store_root, "--host", "0.0.0.0", "--port", free_port(), env={})
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 2
    assert "refusing to serve on 0.0.0.0 without a token: set DLFD_TOKEN or --token-file" in err


def test_serve_with_a_token_file_processes_every_second(tmp_path: Path, original: Path) -> None:
    """The real command: a token file, the periodic worker (no POST /process), Ctrl+C."""
    root = tmp_path / "store"
    Store.create(root, original, method="dlfd", settings=SETTINGS, audit=False).close()
    person = training_people(root)[0]
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    token_file.chmod(0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = dlfd_serve(
        "--store", root, "--port", port, "--token-file", token_file,
        "--process-every", "0.5", "--device", "cpu", env={},
    )  # fmt: skip
    try:
        wait_until_serving(process, url)
        status, found, _ = call(f"{url}/requests", "POST", body={"forget": [person]}, token=None)
        assert status == 401
        status, request, _ = call(f"{url}/requests", "POST", body={"forget": [person]})
        assert status == 201, request
        done = wait_for(lambda: settled(url, request["id"]), 120, "the periodic batch")
        assert (done["status"], done["version"]) == ("done", 1)
        status, found, _ = call(f"{url}/versions/1/certificate")
        assert (status, found) == (404, {"detail": "version 1 has no certificate (not audited)"})
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"serving {root} on {url}/" in err
    assert f"token: {token_file}" in err
    assert TOKEN not in out + err
    assert "published version 1" in err


def test_serve_takes_the_token_from_the_environment(tmp_path: Path, original: Path) -> None:
    root = tmp_path / "store"
    Store.create(root, original, method="dlfd", settings=SETTINGS, audit=False).close()
    other = tmp_path / "other-token"
    other.write_text("another-token-that-is-not-used\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = dlfd_serve(
        "--store", root, "--port", port, "--process-every", "0", "--token-file", other,
        env={"DLFD_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        wait_until_serving(process, url)
        assert call(f"{url}/process", "POST")[:2] == (202, {"status": "started"})
        assert call(f"{url}/process", "POST", token="another-token-that-is-not-used")[0] == 401
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "token: DLFD_TOKEN" in err
    assert f"--token-file {other} is ignored: DLFD_TOKEN is set" in err
    assert "batches: on POST /process" in err
    assert TOKEN not in out + err
    assert not (root / "serve-token").exists()


def test_serve_generates_a_private_token_on_loopback(
    tmp_path: Path,
    original: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    root = tmp_path / "store"
    Store.create(root, original, method="dlfd", settings=SETTINGS, audit=False).close()
    monkeypatch.delenv("DLFD_TOKEN", raising=False)
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app, **kwargs))
    port = free_port()
    code, out, err = cli("serve", "--store", root, "--port", port, "--process-every", "0")
    assert code == 0, err
    assert (served["host"], served["port"], served["log_level"]) == ("127.0.0.1", port, "warning")
    path = root / "serve-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    assert f"token: generated, in {path} (mode 0600)" in err
    assert token not in out + err
    running = Served(served["app"])
    try:
        assert call(f"{running.url}/process", "POST", token=token)[0] == 202
        assert call(f"{running.url}/process", "POST", token=TOKEN)[0] == 401
        wait_for(lambda: not call(f"{running.url}/health")[1]["processing"], 60, "the batch")
    finally:
        running.stop()


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["--token-file", "short"], {}, "must be at least 16 characters"),
        ([], {"DLFD_TOKEN": "has spaces in the token"}, "printable ASCII without spaces"),
        (["--token-file", "missing"], {}, "token file not found"),
        (["--device", "tpu"], {"DLFD_TOKEN": TOKEN}, "tpu"),
    ],
)
def test_serve_refuses_bad_tokens_and_settings(
    args: list[str],
    env: dict[str, str],
    says: str,
    tmp_path: Path,
    store_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    (tmp_path / "short").write_text("abc\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLFD_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served"))
    code, _, err = cli("serve", "--store", store_root, "--port", free_port(), *args)
    assert code == 2
    assert says in err
