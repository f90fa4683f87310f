"""What every command shares: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import functools

import typer

from textdistill.errors import UserError
from textdistill.paths import io_error_line


def user_errors(fn):
    """Print a UserError, or a file-system error with a path (disk full, permission denied, a
    file where a folder should be), as ``error: ...`` (one line, stderr) and exit 2, without a
    traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except OSError as exc:
            line = io_error_line(exc)
            if line is None or exc.filename is None:
                raise
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(2) from None

    return wrapper
