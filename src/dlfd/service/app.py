"""The HTTP service of a store: erasure requests in, versions and their evidence out.

```
POST /requests                    token  {"forget": [...], "requester": "", "reason": ""} -> 201
GET  /requests/{id}               token  the request (it names people)
GET  /versions                    public every version: numbers, hashes, verdicts (no names)
GET  /versions/{n}/certificate    token  the audit certificate (it names the forgotten people)
POST /process                     token  one batch now, in the worker thread -> 202 (409: busy)
GET  /health                      public {"status": "ok", "current_version": N}
GET  /                            public the dashboard (HTML, no names)
```
Errors are ``{"detail": "message"}``. The token is a bearer token (``Authorization: Bearer
TOKEN``), compared in constant time. A request is checked against the data before it is
written, so a refused one leaves nothing in the ledger. One worker thread runs the batches:
on ``POST /process`` and, when ``process_every`` is set, every that many seconds; the store's
lock keeps it from running beside a ``process`` run of another process.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Header, HTTPException
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from dlfd.bench.records import json_safe
from dlfd.errors import ConfigError, DataError, SplitError
from dlfd.io import parse_json
from dlfd.runtime import resolve_device
from dlfd.service.dashboard import render_dashboard
from dlfd.service.ledger import NotFound, check_request_text
from dlfd.service.process import BatchFailed, process_batch
from dlfd.service.store import Busy, Store

log = logging.getLogger("dlfd.service")

#: Largest request body read (a request names people or images, not a dataset).
MAX_BODY_BYTES = 1024 * 1024
#: How long shutdown waits for a running batch before leaving it (its requests stay
#: scheduled and the next run takes them up again).
SHUTDOWN_GRACE_S = 60.0
#: Shortest token accepted.
MIN_TOKEN_CHARS = 16
#: Fields of a submitted request.
REQUEST_FIELDS = ("forget", "requester", "reason")
#: Largest id looked up (SQLite integers are 64-bit).
_MAX_ID = 2**63 - 1
#: The dashboard loads nothing from elsewhere; the page may not either.
_DASHBOARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

Authorization = Annotated[str | None, Header()]


class BatchWorker:
    """The thread that processes batches: on demand (:meth:`start_batch`) and every ``every``
    seconds when set. One batch at a time: ``_guard`` within this process, the store's lock
    against other processes."""

    def __init__(self, store: Store, *, every: float | None, device: str) -> None:
        self.store = store
        self.every = every
        self.device = device
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether a batch is running or about to (asked for and not yet finished)."""
        return self._running

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dlfd-batches", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> bool:
        """Stop the thread, waiting up to ``grace`` seconds for a running batch; False when
        it was still running (left to die with the process)."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        if self._running:
            log.info("waiting up to %gs for the running batch to finish", grace)
        self._thread.join(grace)
        if self._thread.is_alive():
            log.warning(
                "the running batch is left unfinished; its requests stay scheduled and the "
                "next run takes them up again"
            )
            return False
        return True

    def start_batch(self) -> str | None:
        """Start a batch now; None when it was started, else why it was not (one is running
        here, or another process holds the store)."""
        with self._guard:
            if self._running:
                return "a batch is already running; try later"
            try:
                with self.store.lock():  # only another process can hold it now
                    pass
            except Busy as exc:
                return str(exc)
            self._running = True
            self._wake.set()
        return None

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.every)
            if self._stop.is_set():
                return
            with self._guard:
                self._wake.clear()
                self._running = True
            try:
                self._run_once()
            finally:
                with self._guard:
                    self._running = False

    def _run_once(self) -> None:
        try:
            outcome = process_batch(self.store, device=self.device, say=_say)
        except Busy:
            log.debug("another run is processing a batch; skipped")
        except BatchFailed as exc:
            log.error("%s", exc)
        except Exception:
            log.exception("the batch failed")
        else:
            if outcome.done or outcome.refused:
                _say(outcome.message)


def _say(message: str) -> None:
    """A batch's progress in the log, with the time (a service runs for days)."""
    log.info("%s %s", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"), message)


def dashboard_state(store: Store) -> dict[str, Any]:
    """The dashboard's state of ``store``: its setup, requests by status and every version
    (numbers only: no names of people)."""
    ledger, config = store.ledger, store.config
    return json_safe(
        {
            "title": "dlfd service",
            "store": str(store.root),
            "scenario": config.scenario,
            "method": config.method,
            "settings": config.settings,
            "audit": config.audit,
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "requests": ledger.counts(),
            "versions": ledger.lineage(),
        }
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=dict(headers or {}))


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(json_safe(data), status_code=status, headers=dict(headers or {}))


def _number(text: str, what: str) -> int:
    """A path's id as an int; 404 naming it when it is not one."""
    if not text.isascii() or not text.isdigit() or int(text) > _MAX_ID:
        raise _error(404, f"no {what} {text[:40]!r}")
    return int(text)


async def _read_body(request: HttpRequest) -> bytes:
    """The request's body, refused (413) past :data:`MAX_BODY_BYTES` without reading it all."""
    too_large = _error(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _submission(body: bytes) -> tuple[Any, Any, Any]:
    """The forget list, requester and reason of a body (400: not JSON; 422: not the shape)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(400, "the request body is not UTF-8 text") from None
    try:
        data = parse_json(text, "the request body", error=DataError)
    except (DataError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, DataError) else "the request body is too deep"
        raise _error(400, message) from None
    shape = 'the request body must be a JSON object: {"forget": ["PERSON or IMAGE", ...]}'
    if not isinstance(data, dict):
        raise _error(422, shape)
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise _error(422, f"unknown field(s) {names}; expected {', '.join(REQUEST_FIELDS)}")
    if "forget" not in data:
        raise _error(422, shape)
    requester, reason = data.get("requester"), data.get("reason")
    return data["forget"], "" if requester is None else requester, "" if reason is None else reason


def create_app(
    store_root: Path, *, token: str, process_every: float | None, device: str = "auto"
) -> FastAPI:
    """The service of the store at ``store_root``: requests need ``token``; a batch runs every
    ``process_every`` seconds (None: only on ``POST /process``) on ``device``."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the service token must be at least {MIN_TOKEN_CHARS} characters")
    if process_every is not None and not 0 < process_every <= threading.TIMEOUT_MAX:
        raise ConfigError(f"process_every must be a positive number of seconds: {process_every}")
    resolve_device(device)  # refuse a device that cannot run before serving
    store = Store(store_root)
    worker = BatchWorker(store, every=process_every, device=device)
    expected = token.encode()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            if await anyio.to_thread.run_sync(worker.stop, SHUTDOWN_GRACE_S):
                store.close()

    app = FastAPI(
        title="dlfd service",
        summary="Erasure requests, batched unlearning and versioned models with evidence.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.worker = worker

    def authorized(authorization: str | None) -> None:
        """401 unless ``authorization`` is ``Bearer TOKEN`` with the service's token."""
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise _error(
                401, "this needs the service token: Authorization: Bearer TOKEN", challenge
            )
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise _error(401, "the bearer token is not the service's token", challenge)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return _json({"detail": "; ".join(problems) or "invalid request"}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(_: HttpRequest, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        return _json({"detail": "internal error (see the service's log)"}, 500)

    @app.middleware("http")
    async def _headers(request: HttpRequest, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def add_request(entries: Any, requester: Any, reason: Any) -> dict[str, Any]:
        """Check the request (text, then against the data) and only then record it."""
        try:
            cleaned = check_request_text(entries, requester, reason)
            store.check_entries(cleaned)
        except (ConfigError, SplitError) as exc:
            raise _error(422, str(exc)) from None
        return store.ledger.add_request(cleaned, requester, reason).to_dict()

    @app.post("/requests", status_code=201)
    async def submit_request(request: HttpRequest, authorization: Authorization = None) -> Any:
        """Record an erasure request: {"forget": [...], "requester": "", "reason": ""}."""
        authorized(authorization)
        entries, requester, reason = _submission(await _read_body(request))
        row = await run_in_threadpool(add_request, entries, requester, reason)
        return _json(row, 201, {"Location": f"/requests/{row['id']}"})

    @app.get("/requests/{request_id}")
    def get_request(request_id: str, authorization: Authorization = None) -> Any:
        """One request: its entries, status and the version that honours it."""
        authorized(authorization)
        try:
            return _json(store.ledger.request(_number(request_id, "request")).to_dict())
        except NotFound as exc:
            raise _error(404, str(exc)) from None

    @app.get("/versions")
    def list_versions() -> Any:
        """Every version: numbers, hashes, verdicts and request ids (no names of people)."""
        return _json(store.ledger.lineage())

    @app.get("/versions/{number}/certificate")
    def get_certificate(number: str, authorization: Authorization = None) -> Any:
        """A version's audit certificate (it names the forgotten people)."""
        authorized(authorization)
        n = _number(number, "version")
        try:
            store.ledger.version(n)
        except NotFound as exc:
            raise _error(404, str(exc)) from None
        certificate = store.ledger.certificate(n)
        if certificate is None:
            raise _error(404, f"version {n} has no certificate (not audited)")
        return _json(certificate)

    @app.post("/process", status_code=202)
    def start_processing(authorization: Authorization = None) -> Any:
        """Process the pending requests now, in the worker thread."""
        authorized(authorization)
        refusal = worker.start_batch()
        if refusal is not None:
            raise _error(409, refusal)
        return _json({"status": "started"}, 202)

    @app.get("/health")
    def health() -> Any:
        """Whether the service answers, its current version and whether a batch runs."""
        current = store.ledger.current()
        return _json(
            {
                "status": "ok",
                "current_version": None if current is None else current.number,
                "processing": worker.running,
            }
        )

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> Any:
        """The dashboard page: requests by status, the lineage and every version."""
        page = render_dashboard(dashboard_state(store))
        return HTMLResponse(page, headers={"Content-Security-Policy": _DASHBOARD_CSP})

    return app
