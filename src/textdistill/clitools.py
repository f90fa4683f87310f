"""What every command shares: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import functools

import typer

from textdistill.errors import UserError


def user_errors(fn):
    """Print a UserError as ``error: ...`` (one line, stderr) and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None

    return wrapper
