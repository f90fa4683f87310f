"""What every stage run shares: one writer per output folder (a file lock) and ``run.json``,
the record of what ran where (package versions, git commit, hardware, threads, precision)."""

from __future__ import annotations

import fnmatch
import json
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

import yaml
from filelock import FileLock, Timeout
from pydantic import BaseModel

from textdistill.errors import UserError
from textdistill.paths import atomic_write_json

PACKAGES = ("textdistill", "torch", "transformers", "accelerate", "tokenizers", "datasets",
            "safetensors", "sacrebleu", "numpy", "scikit-learn")
LOCK_FILE = ".textdistill.lock"
RUN_FILE = "run.json"
BOOKKEEPING = {LOCK_FILE, f"{LOCK_FILE}.pid", RUN_FILE}
"""Files in an output folder that are not outputs of a run."""


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
        for stale in folder.glob(".*.tmp"):  # files a killed writer left (atomic_write_*)
            if stale.is_file():
                stale.unlink(missing_ok=True)
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


def run_info(precision: str | None = None) -> dict[str, Any]:
    """Package versions, git commit, hardware, threads and the stage's precision (resolved:
    fp32, bf16 or fp16; None for a stage that runs no model)."""
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
        "precision": precision,
    }


def write_run_info(folder: str | Path, precision: str | None = None) -> None:
    """``folder/run.json`` (main process only)."""
    if _is_main_process():
        atomic_write_json(Path(folder) / RUN_FILE, run_info(precision))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{dotted key: leaf}`` (list items by index; None left out)."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {} if value is None else {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def training_record(cfg: BaseModel) -> dict[str, Any]:
    """What a checkpoint records of the config that made it: every set key, dotted (the stage's
    ``name`` left out: renaming a stage changes nothing)."""
    flat = _flatten(cfg.model_dump(mode="json", exclude_none=True))
    flat.pop("name", None)
    return flat


def _recorded(folder: Path) -> dict[str, Any] | None:
    """The config an earlier run in ``folder`` recorded: its checkpoint's, else the
    ``config.yaml`` it wrote when it started; None when there is neither."""
    state = folder / "checkpoint" / "state.json"
    try:
        if state.is_file():
            recorded = json.loads(state.read_text(encoding="utf-8")).get("config")
            if recorded is not None:
                return recorded
        if (folder / "config.yaml").is_file():
            flat = _flatten(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")))
            flat.pop("name", None)
            return flat
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"the earlier run's record in {folder} cannot be read ({exc}): rerun "
                        "with --overwrite to start anew") from None
    return None


def training_changes(folder: str | Path, cfg: BaseModel) -> list[str]:
    """The keys whose values differ between ``cfg`` and the config of the earlier run in
    ``folder``, except those ``--resume`` may change (``resume_may_change``)."""
    recorded = _recorded(Path(folder))
    if recorded is None:
        return []
    now = training_record(cfg)
    allowed = getattr(cfg, "resume_may_change", ())
    return sorted(key for key in recorded.keys() | now.keys()
                  if recorded.get(key) != now.get(key)
                  and not any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed))


def prepare_output(folder: str | Path, cfg: BaseModel, resume: bool, overwrite: bool) -> None:
    """Check that a run may write into ``folder`` (whose lock the caller holds).

    ``resume``: the earlier run's training config must equal ``cfg`` but for the keys that
    may change on resume. Otherwise a folder holding an earlier run's outputs is refused unless
    ``overwrite``, and then they are removed first, so no old output survives under a new
    config."""
    folder = Path(folder)
    if not _is_main_process() or not folder.is_dir():
        return
    held = sorted(p.name for p in folder.iterdir() if p.name not in BOOKKEEPING)
    if not held:
        return
    if resume:
        changed = training_changes(folder, cfg)
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more"
                                               if len(changed) > 6 else "")
            raise UserError(f"--resume: the run in {folder} was made with other settings of "
                            f"{shown}: resume with the same ones, or use --overwrite to start "
                            "anew")
        return
    if not overwrite:
        raise UserError(f"{folder} holds the outputs of an earlier run ({', '.join(held[:4])}"
                        f"{', ...' if len(held) > 4 else ''}): add --resume to continue it, "
                        "--overwrite to replace them, or choose another folder")
    if "config.yaml" not in held and RUN_FILE not in {p.name for p in folder.iterdir()}:
        raise UserError(f"{folder} holds files that textdistill did not write ({held[0]}, ...): "
                        "--overwrite only replaces a textdistill run; choose an empty or new "
                        "folder")
    for name in held:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
