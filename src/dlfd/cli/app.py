"""The typer application object and the shared consoles (stdout for results, stderr for chatter)."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="dlfd",
    help="Machine unlearning for image classifiers: train, unlearn, evaluate, audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _width(stream: object) -> int | None:
    """Terminal width on a terminal; a wide fixed width in logs so tables are never cut."""
    if os.environ.get("COLUMNS"):
        return None
    isatty = getattr(stream, "isatty", None)
    return None if isatty is not None and isatty() else 160


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))
