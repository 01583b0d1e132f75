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
    deletion,
    evaluate,
    import_model,
    listing,
    report,
    serve,
    train,
    unlearn,
)
from dlfd.cli.app import app, err, out, styled
from dlfd.errors import DlfdError

EXIT_USER_ERROR = 2


def _show_version(show: bool) -> None:
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
    """Entry point of ``dlfd``: typer handles usage errors and ``--help`` (exit code 2 / 0);
    dlfd's own errors and OS errors become one red line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="dlfd")
    except (DlfdError, OSError) as exc:
        if "--debug" in args:
            raise
        message = f" {exc}"
        if not isinstance(exc, DlfdError):
            where = f" {exc.filename}:" if exc.filename else ""
            message = f"{where} {exc.strerror or exc}"
        err.print(styled(("error:", "red"), message), highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
