"""The typer application and the shared consoles (stdout for results, stderr for chatter).

Both consoles print text literally (``markup=False``): paths, method names and forget-list
lines are user text, and ``[/]`` in a file name must print as typed, not as a style tag. Styled
words go through :func:`styled`, never through markup strings.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def unwrap_help(text: str | None) -> str | None:
    """``text`` with each paragraph's line breaks made spaces, so ``--help`` wraps docstrings to
    the terminal; a paragraph that starts with ``\\b`` keeps its lines."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


def _hide_raw_types(params: list[Any]) -> None:
    """No ``<bool>`` or ``<path>`` in ``--help``: a flag takes no value (an empty metavar), and
    an argument with a metavar is named by it already (no type column)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar:
            param.display_type_rich = lambda ctx: None


class _HelpRules:
    """dlfd's help rules for a command or a group: help unwrapped, no raw types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["help"] = unwrap_help(kwargs.get("help"))
        super().__init__(*args, **kwargs)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        _hide_raw_types(params)
        return params


class DlfdCommand(_HelpRules, TyperCommand):
    pass


class DlfdGroup(_HelpRules, TyperGroup):
    pass


class DlfdTyper(typer.Typer):
    """A typer application whose groups and commands follow dlfd's help rules."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", DlfdGroup)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("rich_markup_mode", "rich")
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        kwargs.setdefault("cls", DlfdCommand)
        return super().command(*args, **kwargs)


app = DlfdTyper(
    name="dlfd",
    help="Machine unlearning for image classifiers: train, unlearn, evaluate, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


def warn(message: str, label: str = "warning:") -> None:
    """``warning: MESSAGE`` on stderr (the message printed literally)."""
    err.print(styled((label, "yellow"), " ", message), highlight=False)


def note(message: str) -> None:
    """``note: MESSAGE`` on stderr."""
    warn(message, "note:")


def hint(*commands: str) -> None:
    """``next: COMMAND`` on stderr, dim, one line per command, never wrapped (to copy)."""
    for k, command in enumerate(commands):
        lead = "next: " if k == 0 else "      "
        err.print(styled((lead + command, "dim")), highlight=False, soft_wrap=True)


class _TerminalHandler(logging.Handler):
    """The library's log on stderr: INFO as the message itself, WARNING and up as warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            warn(message)
        else:
            err.print(message, highlight=False, markup=False)


logging.getLogger("dlfd").setLevel(logging.INFO)
logging.getLogger("dlfd").addHandler(_TerminalHandler())
