"""``dlfd requests``: the ledger of erasure requests of a service store, and its batches.

``init`` makes a store from an original checkpoint; ``add`` records a request (refused, with
the reason and nothing written, when it names people or images the data does not have);
``list``/``show``/``versions`` read the ledger; ``process`` turns the pending requests into the
next model version (see :mod:`dlfd.service.process`).
"""

from __future__ import annotations

import contextlib
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from dlfd.cli import common
from dlfd.cli.app import DlfdTyper, app, err, hint, note, out, styled
from dlfd.cli.progress import RichProgress
from dlfd.config import parse_overrides
from dlfd.data.splits import read_forget_list
from dlfd.errors import ConfigError
from dlfd.service import STATUSES

if TYPE_CHECKING:
    from dlfd.service.store import Store

requests_app = DlfdTyper(
    help="Erasure requests as a service: a ledger, batched unlearning, versioned models.",
    no_args_is_help=True,
)
app.add_typer(requests_app, name="requests")

StoreOpt = Annotated[
    Path,
    common.opt(
        "--store DIR",
        "The service store (a folder; `dlfd requests init` makes one).",
        envvar="DLFD_STORE",
    ),
]
JsonOpt = Annotated[bool, common.opt("--json", "Print JSON instead of a table.")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d`` -> a duration."""
    found = _DURATION.match(text.strip())
    if not found:
        raise ConfigError(f"--older-than {text!r}: expected a number and s, m, h or d (e.g. 12h)")
    return timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2)])


def _open(store: Path) -> Store:
    """The store (the service's modules load only here: they need an optional extra)."""
    from dlfd.service.store import Store

    return Store(store)


@requests_app.command()
def init(
    store: StoreOpt,
    original: Annotated[
        Path, common.opt("--original FILE", "The model in production (a dlfd checkpoint).")
    ],
    method: Annotated[
        str,
        common.opt("--method METHOD", "Unlearning method.", callback=common.known_method),
    ] = "dlfd",
    settings: Annotated[
        list[str] | None, common.opt("--set KEY=VALUE", "Method setting; repeatable.")
    ] = None,
    seed: Annotated[int, common.seed_option("Seed of the versions' methods.")] = 0,
    audit: Annotated[
        bool,
        common.opt(
            "--audit/--no-audit",
            "Audit each version against a model retrained without everything forgotten "
            "(one training run per version).",
        ),
    ] = True,
    database: Annotated[
        str | None,
        common.opt(
            "--database URL",
            "SQLAlchemy URL of the ledger (default: ledger.sqlite in the store), "
            "e.g. postgresql+psycopg://user@host/dlfd.",
        ),
    ] = None,
) -> None:
    """Create a store whose version 0 is ORIGINAL (copied; its scenario, split and data folder
    as its sidecar records them)."""
    from dlfd.service.store import Store

    created = Store.create(
        store,
        original,
        method=method,
        settings=parse_overrides(settings or []),
        seed=seed,
        audit=audit,
        database=database,
    )
    config = created.config
    err.print(
        f"store {store}: {config.scenario} (split seed {config.split_seed}), version 0 = "
        f"{original}; versions by {config.method}" + ("" if config.audit else " (not audited)")
    )
    created.close()
    word = common.shell_word(store)
    hint(f"dlfd requests add --store {word} PERSON ...", f"dlfd requests process --store {word}")


@requests_app.command()
def add(
    store: StoreOpt,
    entries: Annotated[
        list[str] | None,
        typer.Argument(metavar="ENTRY...", help="People (identities) or image paths to forget."),
    ] = None,
    forget: Annotated[
        Path | None, common.opt("--file FILE", "A forget list: one person or image per line.")
    ] = None,
    requester: Annotated[str, common.opt("--requester TEXT", "Who asked.")] = "",
    reason: Annotated[str, common.opt("--reason TEXT", "Why (e.g. GDPR Art. 17).")] = "",
) -> None:
    """Record an erasure request; it is checked against the data first (unknown people or
    images are refused, naming them, and nothing is written)."""
    from dlfd.service.ledger import check_request_text

    named = list(entries or []) + (read_forget_list(forget) if forget is not None else [])
    named = check_request_text(named, requester, reason)
    opened = _open(store)
    try:
        images = opened.check_entries(named)
        row = opened.ledger.add_request(named, requester, reason)
    finally:
        opened.close()
    out.print(row.id)
    err.print(f"request {row.id}: {len(named)} entries ({images} training images), pending")


@requests_app.command(name="list")
def list_requests(
    store: StoreOpt,
    status: Annotated[
        str | None, common.opt("--status STATUS", f"Only these ({', '.join(STATUSES)}).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The requests, oldest first, with their status."""
    opened = _open(store)
    try:
        rows = [r.to_dict() for r in opened.ledger.requests(status)]
        counts = opened.ledger.counts()
    finally:
        opened.close()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "status", "entries", "requester", "received", "version", "error")
    for row in rows:
        entries = ", ".join(row["entries"][:3]) + (" …" if len(row["entries"]) > 3 else "")
        table.add_row(
            str(row["id"]),
            row["status"],
            entries,
            row["requester"],
            row["received_at"],
            "" if row["version"] is None else f"v{row['version']}",
            row["error"] or "",
        )
    out.print(table)
    err.print(", ".join(f"{k} {v}" for k, v in counts.items()))


@requests_app.command()
def show(
    store: StoreOpt,
    request_id: Annotated[int, typer.Argument(metavar="ID", help="The request's number.")],
) -> None:
    """One request as JSON (its entries, status, error, and the version that honours it)."""
    opened = _open(store)
    try:
        out.print_json(json.dumps(opened.ledger.request(request_id).to_dict()))
    finally:
        opened.close()


@requests_app.command()
def versions(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """The published model versions, oldest first: parent, requests honoured, evaluation."""
    from dlfd.bench.records import json_safe

    opened = _open(store)
    try:
        rows = opened.ledger.lineage()
        paths = {v.number: opened.root / v.weights for v in opened.ledger.versions()}
    finally:
        opened.close()
    if as_json:
        out.print_json(json.dumps(json_safe(rows)))
        return
    table = Table("version", "parent", "created", "requests", "forgotten", "verdict", "weights")
    for row in rows:
        table.add_row(
            f"v{row['number']}",
            "" if row["parent"] is None else f"v{row['parent']}",
            row["created_at"],
            ", ".join(map(str, row["requests"])),
            f"{row['forgotten_entries']} entries, {row['forget_images']} images",
            row["verdict"] or ("" if row["number"] == 0 else "not audited"),
            str(paths[row["number"]]),
        )
    out.print(table)


@requests_app.command()
def process(
    store: StoreOpt,
    max_requests: Annotated[
        int | None, common.opt("--max-requests N", "At most N requests, oldest first.", min=1)
    ] = None,
    older_than: Annotated[
        str | None,
        common.opt("--older-than AGE", "Only requests received at least AGE ago (30m, 12h, 7d)."),
    ] = None,
    device: common.DeviceOpt = "auto",
    quiet: common.QuietOpt = False,
) -> None:
    """Turn the pending requests into the next model version: the store's method runs from
    the current version with everything forgotten so far, the result is evaluated (and
    audited) and published atomically. A failed batch publishes nothing and leaves its
    requests pending; an interrupted one is taken up again by the next run. Exit code 3 when
    another run is processing this store."""
    from dlfd.service.process import process_batch
    from dlfd.service.store import Busy

    age = parse_age(older_than) if older_than is not None else None
    opened = _open(store)
    try:
        bar = None if quiet or err.quiet else RichProgress(err, "process", stop_when_done=False)
        with bar or contextlib.nullcontext() as progress:
            outcome = process_batch(
                opened,
                device=device,
                limit=max_requests,
                older_than=age,
                progress=progress,
                say=lambda text: err.print(text, highlight=False),
            )
    except Busy as exc:
        note(str(exc))
        raise typer.Exit(3) from None
    finally:
        opened.close()
    for request_id, reason in outcome.refused.items():
        err.print(styled((f"request {request_id} refused:", "yellow"), f" {reason}"))
    if outcome.version is not None:
        err.print(styled((outcome.message, "bold"), f" (requests {outcome.done})"))
    else:
        err.print(outcome.message)
