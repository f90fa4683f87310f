"""What every stage run shares: one writer per output folder (a file lock) and ``run.json``,
the record of what ran where (package versions, git commit, hardware, threads, precision)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from textdistill.errors import UserError
from textdistill.paths import atomic_write_json

PACKAGES = ("textdistill", "torch", "transformers", "accelerate", "tokenizers", "datasets",
            "safetensors", "sacrebleu", "numpy", "scikit-learn")
LOCK_FILE = ".textdistill.lock"
RUN_FILE = "run.json"


def _is_main_process() -> bool:
    """Rank 0 of a launched group (``accelerate launch`` sets RANK), or a plain process."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def one_writer(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; another process holding it is a one-line
    error naming the folder and that process. The operating system drops the lock of a process
    that died, so a stale lock is simply taken over."""
    if not _is_main_process():
        yield
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file, not an output folder: choose another path")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror}") from None
    lock = FileLock(folder / LOCK_FILE, timeout=0)
    holder = folder / f"{LOCK_FILE}.pid"
    try:
        lock.acquire()
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() else "unknown"
        raise UserError(f"{folder} is being written by another textdistill process (pid {pid}): "
                        "wait for it to finish or choose another output folder") from None
    try:
        holder.write_text(f"{os.getpid()}\n")
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()
        if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE, RUN_FILE}:
            shutil.rmtree(folder, ignore_errors=True)  # a run that wrote nothing leaves nothing


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}{'+dirty' if dirty else ''}"


def run_info() -> dict[str, Any]:
    """Package versions, git commit, hardware, threads and precision of this process."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": _git_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()
                    or platform.machine(), "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "torch_threads": torch.get_num_threads(),
        "precision": "fp32",
    }


def write_run_info(folder: str | Path) -> None:
    """``folder/run.json`` (main process only)."""
    if _is_main_process():
        atomic_write_json(Path(folder) / RUN_FILE, run_info())
