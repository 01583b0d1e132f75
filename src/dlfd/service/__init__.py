"""Deletion requests as a service: a ledger of erasure requests, batched unlearning into
versioned models with their evidence, and an HTTP service with a dashboard.

The layers: :mod:`~dlfd.service.schema` (tables) and :mod:`~dlfd.service.ledger` (the database:
SQLite by default, any SQLAlchemy URL, migrations in ``migrations/``), :mod:`~dlfd.service.store`
(a folder: configuration, the ledger, published versions), :mod:`~dlfd.service.process` (one
batch: pending requests -> version N+1), :mod:`~dlfd.service.app` (HTTP) and
:mod:`~dlfd.service.dashboard` (the HTML page). SQLAlchemy, Alembic, FastAPI and uvicorn are the
optional extra ``dlfd[service]``.
"""

from __future__ import annotations

from dlfd.errors import ConfigError

#: A request's states: ``pending -> scheduled -> done | refused | failed``.
STATUSES = ("pending", "scheduled", "done", "refused", "failed")
#: Batches a request may fail in before it is marked failed.
MAX_ATTEMPTS = 3
#: How to get the service's dependencies.
INSTALL_HINT = "pip install 'dlfd[service]'"


def require(module: str) -> None:
    """Raise a :class:`ConfigError` saying how to install the extra when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"the deletion-request service needs {module}: {INSTALL_HINT}")
