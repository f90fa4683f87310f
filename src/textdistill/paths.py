"""Where textdistill finds its data and writes files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DATA_ENV = "TEXTDISTILL_DATA"


def data_dir() -> Path:
    """The data directory: ``$TEXTDISTILL_DATA``, else ``~/.cache/textdistill/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "textdistill" / "data"


def current_umask() -> int:
    """The process's file-mode creation mask."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; the file gets the
    permissions of a newly created one (the umask's), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())
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
        new.rename(dest)
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
