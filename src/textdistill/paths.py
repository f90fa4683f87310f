"""Where textdistill finds its data and writes files."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textdistill.errors import UserError
from textdistill.faults import crash_point

DATA_ENV = "TEXTDISTILL_DATA"


def env_dir(variable: str, default_name: str) -> Path:
    """The folder ``$variable``, else ``~/.cache/textdistill/default_name`` (XDG_CACHE_HOME
    respected)."""
    env = os.environ.get(variable)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "textdistill" / default_name


def data_dir() -> Path:
    """The data directory: ``$TEXTDISTILL_DATA``, else ``~/.cache/textdistill/data``."""
    return env_dir(DATA_ENV, "data")


def current_umask() -> int:
    """The process's file-mode creation mask."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


ADVICE = {
    errno.ENOSPC: "no space left on the device: free space there or choose another folder",
    errno.EDQUOT: "disk quota exceeded: free space there or choose another folder",
    errno.EFBIG: "file too large for the file system or for this process's limit (ulimit -f): "
                 "raise the limit or choose another folder",
    errno.EACCES: "permission denied: fix the permissions or choose a folder you can write to",
    errno.EPERM: "operation not permitted: fix the permissions or choose another folder",
    errno.EROFS: "read-only file system: choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder, not a file: choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EIO: "input/output error: check the disk",
}
"""What to do about the operating-system errors that input and output files meet."""


def io_error_line(exc: OSError, path: str | Path | None = None) -> str | None:
    """One line for a file-system error (the path, the cause, what to do), or None for an
    error that is not about the user's files and folders."""
    if exc.errno not in ADVICE:
        return None
    where = path if path is not None else exc.filename
    return f"cannot write {where}: {ADVICE[exc.errno]}" if path is not None else (
        f"{where}: {ADVICE[exc.errno]}")


def _write_errno(exc: BaseException) -> int | None:
    """The errno behind a failed write by safetensors, which raises no OSError but says
    ``os error N`` (checkpoints write torch.save's bytes through Python for the same reason)."""
    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found else None


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (a file or a folder), by Python or by a library, into a
    one-line UserError naming it; other errors pass through."""
    path = Path(path)
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        line = io_error_line(exc, path)
        if line is None:
            raise
        raise UserError(line) from None
    except Exception as exc:
        code = _write_errno(exc)
        if code is None or code not in ADVICE:
            raise
        raise UserError(io_error_line(OSError(code, os.strerror(code)), path)) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; the file gets the
    permissions of a newly created one (the umask's), not the temporary file's 0600."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~current_umask())
            crash_point(f"write {path.name}")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp"


def new_dir_beside(dest: str | Path) -> Path:
    """An empty private folder beside ``dest`` to write its next version into."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=_tmp_prefix(dest)))


def replace_dir(complete: Path, dest: str | Path) -> None:
    """Make the complete folder ``complete`` (from :func:`new_dir_beside`) the new ``dest``.

    After finishing any earlier interrupted swap, ``complete`` is renamed ``.dest.new``; then
    ``dest`` becomes ``.dest.old``, ``.dest.new`` becomes ``dest`` and ``.dest.old`` is
    deleted. Every step is one rename, so a process killed at any point leaves a state that
    :func:`recover_dir` completes: the newest complete version is never lost."""
    dest = Path(dest)
    recover_dir(dest, keep=complete)
    give_normal_permissions(complete)
    crash_point(f"replace {dest.name}: complete")
    complete.rename(dest.with_name(f".{dest.name}.new"))
    recover_dir(dest)


def recover_dir(dest: str | Path, keep: Path | None = None) -> None:
    """Finish a :func:`replace_dir` that was interrupted (a complete ``.dest.new`` becomes
    ``dest``; without either, ``.dest.old`` is put back) and delete what interrupted writes
    left (``.dest.tmp*`` folders but ``keep``, and a superseded ``.dest.old``)."""
    dest = Path(dest)
    new, old = dest.with_name(f".{dest.name}.new"), dest.with_name(f".{dest.name}.old")
    if new.is_dir():
        if dest.exists():
            if old.exists():
                shutil.rmtree(dest)
            else:
                dest.rename(old)
                crash_point(f"replace {dest.name}: old moved aside")
        new.rename(dest)
        crash_point(f"replace {dest.name}: new in place")
    elif not dest.exists() and old.is_dir():
        old.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    if dest.parent.is_dir():
        for leftover in dest.parent.glob(_tmp_prefix(dest) + "*"):
            if keep is None or leftover.resolve() != Path(keep).resolve():
                shutil.rmtree(leftover, ignore_errors=True)


def give_normal_permissions(folder: Path) -> None:
    """The modes of newly created files and folders (the umask's) for ``folder`` and all in it:
    ``mkdtemp`` makes the folder private (0700), and safetensors weights arrive as 0600."""
    umask = current_umask()
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def link_tree(src: Path, dest: Path) -> None:
    """Make ``dest`` a copy of the folder ``src`` by hard links (files are never rewritten in
    place, only replaced), falling back to copies where links are not supported."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
