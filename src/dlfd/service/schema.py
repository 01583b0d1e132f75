"""The ledger's tables: erasure requests, model versions and their certificates.

A request moves ``pending -> scheduled -> done | refused | failed``: ``scheduled`` while a
batch works on it (a batch that dies leaves it there; the next run puts it back to pending),
``refused`` when it does not fit the data (the reason in ``error``), ``failed`` after
``MAX_ATTEMPTS`` failed batches. A version's ``parent`` is unique, so two runs can never
publish two versions from the same parent; version 0 is the original model.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dlfd.service import MAX_ATTEMPTS, STATUSES

__all__ = ["MAX_ATTEMPTS", "STATUSES", "Base", "Certificate", "Request", "Version"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """A time read back from the database as UTC (SQLite returns naive datetimes)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class Request(Base):
    """One erasure request: the people (identities) or image paths to forget."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entries: Mapped[list[str]] = mapped_column(JSON)
    requester: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True, default="pending")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    batch: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int | None] = mapped_column(
        ForeignKey("versions.number"), nullable=True, index=True
    )

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON (what ``show`` and the HTTP API return)."""
        return {
            "id": self.id,
            "entries": list(self.entries),
            "requester": self.requester,
            "reason": self.reason,
            "status": self.status,
            "received_at": _iso(self.received_at),
            "decided_at": _iso(self.decided_at),
            "error": self.error,
            "attempts": self.attempts,
            "version": self.version,
        }


class Version(Base):
    """A published model: its weights (relative to the store), what it forgets in total, how
    it was made and its evaluation."""

    __tablename__ = "versions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent: Mapped[int | None] = mapped_column(
        ForeignKey("versions.number"), unique=True, nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    weights: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    forget_entries: Mapped[list[str]] = mapped_column(JSON, default=list)
    forget_images: Mapped[int] = mapped_column(Integer, default=0)
    forget_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str | None] = mapped_column(String(64), nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)

    def to_dict(self, requests: list[int]) -> dict[str, Any]:
        """The version as JSON; ``requests``: the ids of the requests it honours."""
        return {
            "number": self.number,
            "parent": self.parent,
            "created_at": _iso(self.created_at),
            "weights_sha256": self.weights_sha256,
            "forgotten_entries": len(self.forget_entries),
            "forget_images": self.forget_images,
            "forget_sha256": self.forget_sha256,
            "method": self.method,
            "settings": dict(self.settings),
            "seed": self.seed,
            "requests": requests,
            "request_count": len(requests),
            "metrics": dict(self.metrics),
            "verdict": self.verdict,
            "wall_s": self.wall_s,
        }


class Certificate(Base):
    """The audit's certificate of a version (``certificate.json``, as JSON text)."""

    __tablename__ = "certificates"

    version: Mapped[int] = mapped_column(ForeignKey("versions.number"), primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))


def _iso(moment: datetime | None) -> str | None:
    moment = as_utc(moment)
    return None if moment is None else moment.isoformat(timespec="seconds")
