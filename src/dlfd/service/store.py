"""A service store: one folder holding the configuration, the ledger and the published versions.

```
STORE/
  dlfd-service.json         what every version is made with (scenario, method, settings, audit)
  ledger.sqlite             the ledger (unless the configuration names another database)
  versions/v0000-original/  the original model (version 0)
  versions/v0001-<batch>/   model.safetensors + model.json, evaluation.json, certificate.json
  references/               retrained references of the audits (cached by configuration)
  process.lock              held by the one run that processes a batch
```
A version's folder is written under a hidden name, renamed when complete, and counts as
published only once the ledger records it: a folder no version row names is what a run left
when it died, and the next run removes it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dlfd.checkpoint import (
    CheckpointMeta,
    check_weights_path,
    read_meta,
    read_weights_bytes,
    sidecar_path,
)
from dlfd.errors import CheckpointError, ConfigError, DlfdError
from dlfd.io import (
    atomic_write_bytes,
    atomic_write_json,
    file_lock,
    read_file_bytes,
    read_json_file,
)
from dlfd.methods import get_method
from dlfd.runs.scenario import load_scenario, scenario_for_checkpoint
from dlfd.scenarios import Scenario
from dlfd.service import require

CONFIG_NAME = "dlfd-service.json"
STORE_FORMAT = "dlfd-service/1"
WEIGHTS_NAME = "model.safetensors"
#: Names of version folders (published, or being written: a leading dot).
_VERSION_DIR = re.compile(r"^\.?v\d{4,}-[0-9a-z-]+$")


class Busy(DlfdError):
    """Another run is processing a batch of this store."""


@dataclass(frozen=True)
class StoreConfig:
    """What every version of a store is made with. ``database``: an SQLAlchemy URL (None:
    ``ledger.sqlite`` in the store)."""

    scenario: str
    split_seed: int
    data_root: str | None
    image_size: int | None
    options: dict[str, str]
    method: str = "dlfd"
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    audit: bool = True
    database: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": STORE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> StoreConfig:
        if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
            raise ConfigError(f"{source} is not a dlfd service configuration")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format"})
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None


class Store:
    """An opened store; :meth:`create` makes one from an original checkpoint."""

    def __init__(self, root: str | Path) -> None:
        require("sqlalchemy")
        require("alembic")
        self.root = Path(root)
        path = self.root / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(
                f"{self.root} is not a service store (no {CONFIG_NAME}); "
                "create one with `dlfd requests init`"
            )
        self.config = StoreConfig.from_dict(read_json_file(path, "service configuration"), path)
        from dlfd.service.ledger import Ledger, sqlite_url

        self.ledger = Ledger(self.config.database or sqlite_url(self.root / "ledger.sqlite"))

    @classmethod
    def create(
        cls,
        root: str | Path,
        original: str | Path,
        *,
        method: str = "dlfd",
        settings: dict[str, Any] | None = None,
        seed: int = 0,
        audit: bool = True,
        database: str | None = None,
    ) -> Store:
        """A new store whose version 0 is a copy of ``original`` (its scenario, split and data
        folder as its sidecar records them). Refuses a folder that holds a store already."""
        require("sqlalchemy")
        require("alembic")
        root = Path(root)
        if (root / CONFIG_NAME).exists():
            raise ConfigError(f"{root} holds a service store already")
        if (root / "ledger.sqlite").exists() and database is None:
            raise ConfigError(
                f"{root} has a ledger but no {CONFIG_NAME} (a creation was interrupted); "
                "remove the folder and create the store again"
            )
        original = check_weights_path(original)
        meta = read_meta(original)
        data = read_weights_bytes(original, meta)  # verified before anything is written
        sidecar = read_file_bytes(
            sidecar_path(original), "checkpoint sidecar", error=CheckpointError
        )
        get_method(method).make_params(dict(settings or {}))  # refuse bad settings first
        if audit and not meta.recipe:
            raise ConfigError(
                f"{original} records no training recipe, so no reference can be retrained to "
                "audit the versions; create the store with --no-audit"
            )
        scenario = scenario_for_checkpoint(original)
        size = meta.input_spec.size
        config = StoreConfig(
            scenario=scenario.name,
            split_seed=scenario.problem.split_seed,
            data_root=meta.data_root,
            image_size=size[0] if size[0] == size[1] else None,
            options=dict(scenario.options),
            method=method,
            settings=dict(settings or {}),
            seed=seed,
            audit=audit,
            database=database,
        )
        from dlfd.service.ledger import Ledger, sqlite_url
        from dlfd.service.schema import Version

        root.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(database or sqlite_url(root / "ledger.sqlite"))
        try:
            if ledger.current() is not None:
                raise ConfigError(f"the database {database} holds a ledger already")
            folder = root / "versions" / "v0000-original"
            weights = folder / WEIGHTS_NAME
            atomic_write_bytes(sidecar_path(weights), sidecar)
            atomic_write_bytes(weights, data)
            copied = read_meta(weights)
            ledger.publish(
                Version(
                    number=0,
                    parent=None,
                    weights=str(weights.relative_to(root)),
                    weights_sha256=copied.weights_sha256,
                    forget_entries=[],
                    forget_images=0,
                    settings={},
                    metrics={},
                ),
                done=[],
            )
        finally:
            ledger.close()
        atomic_write_json(root / CONFIG_NAME, config.to_dict())  # last: the store exists now
        return cls(root)

    def close(self) -> None:
        self.ledger.close()

    # scenario ----------------------------------------------------------------------------

    @cached_property
    def base_scenario(self) -> Scenario:
        """The store's scenario with its default forget set (requests replace it)."""
        return self.scenario(None)

    def scenario(self, entries: list[str] | None) -> Scenario:
        """The scenario whose forget set is what ``entries`` name (None: the default split's)."""
        c = self.config
        return load_scenario(
            c.scenario,
            split_seed=c.split_seed,
            data_root=Path(c.data_root) if c.data_root else None,
            image_size=c.image_size,
            options=[f"{k}={v}" for k, v in c.options.items()],
            forget_entries=entries,
        )

    def check_entries(self, entries: list[str]) -> int:
        """How many training images ``entries`` name; :class:`~dlfd.errors.SplitError` naming
        what does not fit the data (unknown people or images, images outside train, part of
        a person in an identity-level scenario)."""
        from dlfd.data.splits import apply_forget_request

        return len(apply_forget_request(self.base_scenario.problem, entries).forget)

    # versions ----------------------------------------------------------------------------

    def weights(self, number: int) -> Path:
        """The weights file of published version ``number``."""
        return self.root / self.ledger.version(number).weights

    def original_meta(self) -> CheckpointMeta:
        return read_meta(self.weights(0))

    def new_version_dir(self, number: int, batch: str) -> Path:
        """The hidden folder a version is written to before it is renamed and published."""
        return self.root / "versions" / f".v{number:04d}-{batch[:12]}"

    def remove_unpublished(self) -> list[str]:
        """Remove the version folders no published version names (left by a run that died);
        call only while holding :meth:`lock`. Returns their names."""
        published = {Path(v.weights).parent.name for v in self.ledger.versions()}
        removed = []
        folder = self.root / "versions"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_dir() and _VERSION_DIR.match(path.name) and path.name not in published:
                shutil.rmtree(path)
                removed.append(path.name)
        return removed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store's process lock (one batch at a time); :class:`Busy` when held."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(file_lock(self.root / "process.lock", wait=False))
        except BlockingIOError:
            raise Busy(f"another run is processing a batch of {self.root}; try later") from None
        with held:
            yield
