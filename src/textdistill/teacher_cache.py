"""Teacher outputs computed once and reused by every epoch and every student.

A teacher pass over a training set writes the teacher's logits, one row per example, in
safetensors shards under ``$TEXTDISTILL_CACHE`` (default ``~/.cache/textdistill/teacher``), in
a folder named by the digest of the teacher (its config and weights), the tokenized data and
the precision. A manifest, written last, lists each shard with its SHA-256: a shard that is
missing, truncated or altered, or a manifest of another key, makes the pass run again; a
cache is never used unchecked. Hidden states and attention scores are not cached: for the
quickstart's data they would take ``rows × layers × tokens × width`` values (about 6 GB for
rotten-tomatoes with MiniLM in bf16), so phases that read them keep the teacher in the loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from textdistill.data.batching import TokenizedDataset
from textdistill.paths import atomic_write_json, new_dir_beside, replace_dir, writing
from textdistill.precision import autocast

CACHE_ENV = "TEXTDISTILL_CACHE"
SHARD_ROWS = 20_000
VERSION = 1


def cache_root() -> Path:
    """``$TEXTDISTILL_CACHE``, else ``~/.cache/textdistill/teacher``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "textdistill" / "teacher"


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def cache_key(teacher_dir: Path, data: TokenizedDataset, precision: str) -> str:
    """The digest of the teacher's files, the token ids (and segment ids) and the precision."""
    h = hashlib.sha256(f"v{VERSION} logits {precision}\n".encode())
    for name in sorted(p.name for p in teacher_dir.glob("*.safetensors")) + ["config.json"]:
        h.update(name.encode())
        _file_digest(teacher_dir / name, h)
    h.update(json.dumps([data.input_ids, data.token_type_ids]).encode())
    return h.hexdigest()[:32]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    _file_digest(path, h)
    return h.hexdigest()


def _load(folder: Path, key: str, rows: int) -> torch.Tensor | None:
    """The cached logits, or None when the cache is absent, of another key, or damaged."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("key") != key or manifest.get("rows") != rows:
            return None
        parts = []
        for shard in manifest["shards"]:
            path = folder / shard["file"]
            if _sha256(path) != shard["sha256"]:
                return None
            parts.append(load_file(str(path))["logits"])
        logits = torch.cat(parts)
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    return logits if logits.shape[0] == rows else None


@torch.no_grad()
def _teacher_pass(teacher, data: TokenizedDataset, batch_size: int, precision: str
                  ) -> torch.Tensor:
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    out = torch.empty(len(data), teacher.config.num_labels)
    loader = data.loader(batch_size, shuffle=False)
    for idx, batch in zip(loader.batch_sampler, loader, strict=True):
        inputs = {k: v.to(device) for k, v in batch.items()
                  if k in ("input_ids", "attention_mask", "token_type_ids")}
        with autocast(precision, device):
            out[idx] = teacher(**inputs).logits.float().cpu()
    teacher.train(was_training)
    return out


def teacher_logits(teacher, teacher_dir: Path, data: TokenizedDataset, batch_size: int,
                   precision: str) -> tuple[torch.Tensor, bool]:
    """The teacher's logits for every example of ``data`` (fp32, in dataset order) and whether
    they came from the cache; computed and cached when they did not."""
    key = cache_key(teacher_dir, data, precision)
    folder = cache_root() / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f"{key}.lock"):  # students built side by side wait here
        cached = _load(folder, key, len(data))
        if cached is not None:
            return cached, True
        logits = _teacher_pass(teacher, data, batch_size, precision)
        _save(folder, key, logits)
    return logits, False


def _save(folder: Path, key: str, logits: torch.Tensor) -> None:
    with writing(folder):
        tmp = new_dir_beside(folder)
        try:
            shards = []
            for i, start in enumerate(range(0, len(logits), SHARD_ROWS)):
                name = f"logits-{i:05d}.safetensors"
                save_file({"logits": logits[start:start + SHARD_ROWS].contiguous()},
                          str(tmp / name))
                shards.append({"file": name, "sha256": _sha256(tmp / name)})
            atomic_write_json(tmp / "manifest.json", {"key": key, "rows": len(logits),
                                                      "classes": logits.shape[1],
                                                      "shards": shards})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, folder)
