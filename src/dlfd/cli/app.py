"""The typer application object and the shared consoles (stdout for results, stderr for chatter).

Both consoles print text literally (``markup=False``): paths, method names and forget-list
lines are user text, and ``[/]`` in a file name must print as typed, not as a style tag. Styled
words go through :func:`styled` (or ``rich.text.Text``), never through markup strings.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.text import Text

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


out = Console(width=_width(sys.stdout), markup=False)
err = Console(stderr=True, width=_width(sys.stderr), markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of literal text; a ``(text, style)`` part is styled (e.g. ``("error:", "red")``)."""
    return Text.assemble(*parts)


def warn(message: str) -> None:
    """``warning: MESSAGE`` on stderr (the message printed literally)."""
    err.print(styled(("warning:", "yellow"), " ", message), highlight=False)


def note(message: str) -> None:
    """``note: MESSAGE`` on stderr (the message printed literally)."""
    err.print(styled(("note:", "yellow"), " ", message), highlight=False)
