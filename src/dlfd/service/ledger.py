"""The ledger: a database of erasure requests, model versions and certificates.

SQLite by default (a file in the store, WAL journal, a busy timeout so the service and a
``process`` run can share it); any SQLAlchemy URL (``postgresql+psycopg://...``) for teams. The
schema is created and upgraded by the migrations in ``migrations/`` (Alembic) when the ledger
is opened. Every method is one short transaction: a batch that runs for minutes never holds
the database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dlfd.bench.records import json_safe
from dlfd.errors import ConfigError, DlfdError
from dlfd.io import sha256_bytes
from dlfd.service.schema import (
    MAX_ATTEMPTS,
    STATUSES,
    Certificate,
    Request,
    Version,
    utc_now,
)

MIGRATIONS = Path(__file__).with_name("migrations")
#: Limits of one request (a request names people or images, not a dataset).
MAX_ENTRIES = 10_000
MAX_ENTRY_CHARS = 1_000
MAX_TEXT_CHARS = 2_000


class LedgerError(DlfdError):
    """A ledger operation that cannot be done (unknown request or version, lost race)."""


class NotFound(LedgerError):
    """No request or version of that number."""


class ParentTaken(LedgerError):
    """Another run published a version from the same parent first."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def check_request_text(entries: Sequence[Any], requester: Any, reason: Any) -> list[str]:
    """The request's entries, stripped; :class:`ConfigError` naming what is wrong (empty,
    not strings, too long, too many) before anything is written."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError("a request must name at least one person or image")
    if len(entries) > MAX_ENTRIES:
        raise ConfigError(f"a request may name at most {MAX_ENTRIES} people or images")
    cleaned = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"every entry must be a non-empty string, got {entry!r:.80}")
        if len(entry) > MAX_ENTRY_CHARS or "\x00" in entry:
            raise ConfigError(f"entry {entry[:60]!r}... is not a person id or image path")
        cleaned.append(entry.strip())
    for name, text in (("requester", requester), ("reason", reason)):
        if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            raise ConfigError(f"{name} must be a string of at most {MAX_TEXT_CHARS} characters")
    return list(dict.fromkeys(cleaned))


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


class Ledger:
    """The database behind a store. ``url``: an SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        try:
            self.engine = create_engine(url)
        except (ArgumentError, NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigError(f"cannot open the ledger database {url!r}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        try:
            migrate(self.engine)
        except OperationalError as exc:
            raise ConfigError(f"cannot open the ledger database {url!r}: {exc.orig}") from None
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # requests -----------------------------------------------------------------------------

    def add_request(self, entries: Sequence[str], requester: str = "", reason: str = "") -> Request:
        """Record a pending request (entries already checked against the data)."""
        row = Request(
            entries=check_request_text(entries, requester, reason),
            requester=requester,
            reason=reason,
            status="pending",
            received_at=utc_now(),
            attempts=0,
        )
        with self.session.begin() as session:
            session.add(row)
        return row

    def request(self, request_id: int) -> Request:
        with self.session() as session:
            row = session.get(Request, request_id)
        if row is None:
            raise NotFound(f"no request {request_id}")
        return row

    def requests(self, status: str | None = None, limit: int | None = None) -> list[Request]:
        """Requests, oldest first (only ``status`` ones when given)."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        query = select(Request).order_by(Request.id)
        if status is not None:
            query = query.where(Request.status == status)
        with self.session() as session:
            return list(session.scalars(query.limit(limit)))

    def counts(self) -> dict[str, int]:
        """Requests by status (every status, zero included)."""
        query = select(Request.status, func.count()).group_by(Request.status)
        with self.session() as session:
            found = {status: count for status, count in session.execute(query)}
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def claim(
        self, *, limit: int | None = None, older_than: timedelta | None = None
    ) -> list[Request]:
        """Mark the oldest pending requests scheduled under a new batch id and return them
        (``older_than``: only requests received at least that long ago)."""
        batch = uuid.uuid4().hex
        query = select(Request.id).where(Request.status == "pending").order_by(Request.id)
        if older_than is not None:
            query = query.where(Request.received_at <= utc_now() - older_than)
        with self.session.begin() as session:
            ids = list(session.scalars(query.limit(limit)))
            if ids:
                session.execute(
                    update(Request)
                    .where(Request.id.in_(ids), Request.status == "pending")
                    .values(status="scheduled", batch=batch)
                )
            return list(session.scalars(select(Request).where(Request.batch == batch)))

    def recover(self) -> int:
        """Put requests left ``scheduled`` by a run that died back to pending (call only while
        holding the store's process lock); returns how many."""
        with self.session.begin() as session:
            result = session.execute(
                update(Request)
                .where(Request.status == "scheduled")
                .values(status="pending", batch=None)
            )
        return int(result.rowcount or 0)

    def refuse(self, request_id: int, reason: str) -> None:
        """Mark a request refused (it does not fit the data) with the reason."""
        with self.session.begin() as session:
            session.execute(
                update(Request)
                .where(Request.id == request_id)
                .values(status="refused", error=reason, decided_at=utc_now(), batch=None)
            )

    def release(self, batch_ids: Sequence[int], error: str) -> None:
        """A failed batch: its requests go back to pending with the error (``failed`` after
        :data:`MAX_ATTEMPTS` failed batches)."""
        with self.session.begin() as session:
            for row in session.scalars(select(Request).where(Request.id.in_(list(batch_ids)))):
                row.attempts += 1
                row.error = error
                row.batch = None
                if row.attempts >= MAX_ATTEMPTS:
                    row.status, row.decided_at = "failed", utc_now()
                else:
                    row.status = "pending"

    # versions -----------------------------------------------------------------------------

    def versions(self) -> list[Version]:
        with self.session() as session:
            return list(session.scalars(select(Version).order_by(Version.number)))

    def version(self, number: int) -> Version:
        with self.session() as session:
            row = session.get(Version, number)
        if row is None:
            raise NotFound(f"no version {number}")
        return row

    def current(self) -> Version | None:
        """The newest version (None before the original is registered)."""
        with self.session() as session:
            return session.scalars(select(Version).order_by(Version.number.desc())).first()

    def honoured(self, number: int) -> list[int]:
        """Ids of the requests version ``number`` honours."""
        query = select(Request.id).where(Request.version == number).order_by(Request.id)
        with self.session() as session:
            return list(session.scalars(query))

    def lineage(self) -> list[dict[str, Any]]:
        """Every version as JSON (:meth:`Version.to_dict`, with the ids of the requests it
        honours), oldest first, in two queries."""
        query = select(Request.version, Request.id).where(Request.version.is_not(None))
        with self.session() as session:
            honours: dict[int, list[int]] = {}
            for number, request_id in session.execute(query.order_by(Request.id)):
                honours.setdefault(number, []).append(request_id)
            versions = session.scalars(select(Version).order_by(Version.number))
            return [v.to_dict(honours.get(v.number, [])) for v in versions]

    def certificate(self, number: int) -> dict[str, Any] | None:
        with self.session() as session:
            row = session.get(Certificate, number)
        return None if row is None else json.loads(row.body)

    def publish(
        self,
        version: Version,
        *,
        done: Sequence[int],
        certificate: dict[str, Any] | None = None,
    ) -> Version:
        """Record ``version`` and mark the ``done`` requests honoured by it, in one transaction.
        :class:`ParentTaken` when a version from the same parent exists already."""
        version.created_at = utc_now()
        try:
            with self.session.begin() as session:
                session.add(version)
                session.flush()
                if certificate is not None:
                    body = json.dumps(json_safe(certificate), sort_keys=True, allow_nan=False)
                    session.add(
                        Certificate(
                            version=version.number, body=body, sha256=sha256_bytes(body.encode())
                        )
                    )
                _mark_done(session, done, version.number)
        except IntegrityError:
            raise ParentTaken(
                f"version {version.number} (from version {version.parent}) was published "
                "by another run"
            ) from None
        return version

    def settle(self, done: Sequence[int], number: int) -> None:
        """Mark requests done by an existing version (one that forgets what they ask)."""
        with self.session.begin() as session:
            _mark_done(session, done, number)


def _mark_done(session: Session, ids: Sequence[int], number: int) -> None:
    if ids:
        session.execute(
            update(Request)
            .where(Request.id.in_(list(ids)))
            .values(status="done", version=number, decided_at=utc_now(), error=None, batch=None)
        )
