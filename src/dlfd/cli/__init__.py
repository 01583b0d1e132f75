"""Command-line interface. ``main`` turns every expected error into one line and exit code 2."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dlfd import __version__
from dlfd.cli import (  # noqa: F401  (commands register on import)
    audit,
    bench,
    check,
    evaluate,
    listing,
    report,
    train,
    unlearn,
)
from dlfd.cli.app import app, err, out, styled
from dlfd.errors import DlfdError

EXIT_USER_ERROR = 2


def _show_version(show: bool) -> None:
    """``--version``: ``dlfd X.Y.Z`` on stdout, then exit 0."""
    if show:
        out.print(f"dlfd {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[  # handled in main(); declared so --help documents it
        bool, typer.Option("--debug", help="Show the full traceback of an error.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Machine unlearning for image classifiers: train, unlearn, evaluate, audit.

    Use --debug before the command to see full tracebacks of errors.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dlfd`` console script.

    Typer handles usage errors and ``--help`` itself (exit code 2 / 0); dlfd's own errors and
    OS errors (unwritable output, missing file) become one red line and exit code 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        app(args=args, prog_name="dlfd")
    except DlfdError as exc:
        if debug:
            raise
        err.print(styled(("error:", "red"), f" {exc}"), highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        if debug:
            raise
        where = f" {exc.filename}:" if exc.filename else ""
        err.print(
            styled(("error:", "red"), f"{where} {exc.strerror or exc}"),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_USER_ERROR)
