"""``dlfd serve``: the HTTP service and dashboard of a deletion-request store.

The token that guards the endpoints naming people comes from ``DLFD_TOKEN``, else from
``--token-file``; on a loopback address without either, one is generated into the store
(``serve-token``, readable by its owner only). Any other address needs a token.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Annotated

from dlfd.cli import common
from dlfd.cli.app import app, err, hint, note
from dlfd.cli.deletion import StoreOpt
from dlfd.errors import ConfigError
from dlfd.io import read_file_text

TOKEN_ENV = "DLFD_TOKEN"
TOKEN_NAME = "serve-token"
MIN_TOKEN_CHARS = 16
#: What a bearer token may hold: visible ASCII (it travels in an HTTP header).
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str, source: str) -> str:
    """``token`` when it is long enough and fits in an HTTP header; :class:`ConfigError`
    naming ``source`` otherwise (never the token itself)."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"the token in {source} must be at least {MIN_TOKEN_CHARS} characters")
    if not _TOKEN_TEXT.fullmatch(token):
        raise ConfigError(f"the token in {source} must be printable ASCII without spaces")
    return token


def service_token(host: str, token_file: Path | None) -> tuple[str | None, str]:
    """The token and where it comes from; (None, why) when one is to be generated (loopback
    only: any other host without a token is refused)."""
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        if token_file is not None:
            note(f"--token-file {token_file} is ignored: {TOKEN_ENV} is set")
        return check_token(from_env, TOKEN_ENV), TOKEN_ENV
    if token_file is not None:
        text = read_file_text(token_file, "token file", limit=4096, error=ConfigError)
        if os.name == "posix" and token_file.stat().st_mode & 0o077:
            note(f"{token_file} is readable by others; chmod 600 it")
        return check_token(text.strip(), str(token_file)), str(token_file)
    if not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without a token: set {TOKEN_ENV} or --token-file"
        )
    return None, "generated"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only (mode 0600), in
    place of what was there."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, path)


def check_port(host: str, port: int) -> None:
    """:class:`ConfigError` when nothing can listen on ``host:port`` (in use, no such
    address), before anything else is done."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host.strip("[]"), port), family=family):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@app.command()
def serve(
    store: StoreOpt,
    host: Annotated[
        str,
        common.opt(
            "--host HOST",
            f"Address to listen on; any but a loopback one needs {TOKEN_ENV} or --token-file.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, common.opt("--port PORT", "Port to listen on.", min=1, max=65535)] = 8000,
    token_file: Annotated[
        Path | None,
        common.opt(
            "--token-file FILE",
            f"File holding the bearer token (at least {MIN_TOKEN_CHARS} characters); "
            f"{TOKEN_ENV} takes precedence.",
        ),
    ] = None,
    process_every: Annotated[
        float,
        common.opt(
            "--process-every SECONDS",
            "Process the pending requests every SECONDS (0: only on POST /process).",
            min=0,
        ),
    ] = 3600,
    device: common.DeviceOpt = "auto",
) -> None:
    """Serve a store over HTTP: erasure requests in, model versions and evidence out.

    Endpoints: POST /requests (JSON {"forget": [PERSON or IMAGE, ...], "requester": "...",
    "reason": "..."}), GET /requests/ID, GET /versions/N/certificate and POST /process (a batch
    now) need the bearer token (Authorization: Bearer TOKEN); GET /versions, GET /health and the
    dashboard at / are public and name no people.

    The token comes from DLFD_TOKEN, else --token-file; without either, on a loopback address,
    one is generated into DIR/serve-token (mode 0600). Any other address without a token is
    refused.
    """
    from dlfd.service import require

    require("fastapi")
    require("uvicorn")
    import uvicorn

    from dlfd.service.app import create_app

    if not math.isfinite(process_every):
        raise ConfigError(f"--process-every must be a number of seconds, not {process_every}")
    token, source = service_token(host, token_file)
    generated = token is None
    if token is None:
        token = secrets.token_urlsafe(32)
    every = process_every if process_every > 0 else None
    service = create_app(store, token=token, process_every=every, device=device)
    check_port(host, port)
    if generated:
        source = str(store / TOKEN_NAME)
        write_private(Path(source), token + "\n")
        source = f"generated, in {source} (mode 0600)"
    where = f"[{host.strip('[]')}]" if ":" in host else host
    err.print(f"serving {store} on http://{where}:{port}/ (Ctrl+C to stop)", highlight=False)
    err.print(f"token: {source}", highlight=False)
    batches = f"every {process_every:g}s and on POST /process" if every else "on POST /process"
    err.print(f"batches: {batches}", highlight=False)
    if generated:
        hint(
            f'curl -H "Authorization: Bearer $(cat {common.shell_word(store / TOKEN_NAME)})" '
            f'-d \'{{"forget": ["PERSON"]}}\' http://{where}:{port}/requests'
        )
    uvicorn.run(service, host=host.strip("[]"), port=port, log_level="warning")
