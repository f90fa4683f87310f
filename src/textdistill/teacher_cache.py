"""Teacher outputs computed once and reused by every epoch and every student.

A teacher pass over a training set writes the teacher's logits (classifiers: one row per
example) or its top-k log-probabilities (translation: one row per target token) in safetensors
shards under ``$TEXTDISTILL_CACHE`` (default ``~/.cache/textdistill/teacher``), in
a folder named by the digest of the teacher (its config and weights), the tokenized data and
the precision. A manifest, written last, lists each shard with its SHA-256: a shard that is
missing, truncated or altered, or a manifest of another key, makes the pass run again; a
cache is never used unchecked. Hidden states and attention scores are not cached: for the
quickstart (10,246 rows of at most 64 tokens, MiniLM-L6: 7 hidden states of width 384, 6 × 12
score maps) they would take up to 3.5 GB and 6.0 GB in bf16, so phases that read them keep the
teacher in the loop.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from textdistill.data.batching import ParallelDataset, TokenizedDataset
from textdistill.paths import atomic_write_json, env_dir, new_dir_beside, replace_dir, writing
from textdistill.precision import autocast

CACHE_ENV = "TEXTDISTILL_CACHE"
SHARD_ROWS = 20_000
VERSION = 1


def cache_root() -> Path:
    """``$TEXTDISTILL_CACHE``, else ``~/.cache/textdistill/teacher``."""
    return env_dir(CACHE_ENV, "teacher")


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def cache_key(teacher_dir: Path, what: str, token_ids: object, precision: str) -> str:
    """The digest of the teacher's files, what is cached (``logits``, ``top16``...), the token
    ids it was computed from and the precision."""
    h = hashlib.sha256(f"v{VERSION} {what} {precision}\n".encode())
    for name in sorted(p.name for p in teacher_dir.glob("*.safetensors")) + ["config.json"]:
        h.update(name.encode())
        _file_digest(teacher_dir / name, h)
    h.update(json.dumps(token_ids).encode())
    return h.hexdigest()[:32]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    _file_digest(path, h)
    return h.hexdigest()


def _load(folder: Path, key: str, rows: int) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the cache is absent, of another key, or damaged."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("key") != key or manifest.get("rows") != rows:
            return None
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in manifest["shards"]:
            path = folder / shard["file"]
            if _sha256(path) != shard["sha256"]:
                return None
            for name, tensor in load_file(str(path)).items():
                parts.setdefault(name, []).append(tensor)
        tensors = {name: torch.cat(values) for name, values in parts.items()}
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    if not tensors or any(t.shape[0] != rows for t in tensors.values()):
        return None
    return tensors


def _save(folder: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    rows = next(iter(tensors.values())).shape[0]
    with writing(folder):
        tmp = new_dir_beside(folder)
        try:
            shards = []
            for i, start in enumerate(range(0, rows, SHARD_ROWS)):
                name = f"shard-{i:05d}.safetensors"
                save_file({k: v[start:start + SHARD_ROWS].contiguous()
                           for k, v in tensors.items()}, str(tmp / name))
                shards.append({"file": name, "sha256": _sha256(tmp / name)})
            atomic_write_json(tmp / "manifest.json", {"key": key, "rows": rows,
                                                      "shards": shards})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, folder)


def cached(key: str, rows: int, compute: Callable[[], dict[str, torch.Tensor]]
           ) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors cached under ``key`` (``rows`` rows each) and True, or ``compute()``'s,
    cached first, and False. One process builds a key at a time; others wait for it."""
    folder = cache_root() / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f"{key}.lock"):
        found = _load(folder, key, rows)
        if found is not None:
            return found, True
        tensors = compute()
        _save(folder, key, tensors)
    return tensors, False


@torch.no_grad()
def _classifier_pass(teacher, data: TokenizedDataset, batch_size: int, precision: str
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
    """A classifier teacher's logits for every example of ``data`` (fp32, dataset order) and
    whether they came from the cache."""
    key = cache_key(teacher_dir, "logits", [data.input_ids, data.token_type_ids], precision)
    tensors, hit = cached(key, len(data), lambda: {
        "logits": _classifier_pass(teacher, data, batch_size, precision)})
    return tensors["logits"], hit


@torch.no_grad()
def _seq2seq_pass(teacher, data: ParallelDataset, batch_tokens: int, precision: str, k: int
                  ) -> dict[str, torch.Tensor]:
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    starts = [0]
    for tgt in data.tgt:
        starts.append(starts[-1] + len(tgt))
    values = torch.empty(starts[-1], k)
    indices = torch.empty(starts[-1], k, dtype=torch.int32)
    loader = data.loader(batch_tokens, shuffle=False)
    for idx, batch in zip(loader.batch_sampler, loader, strict=True):
        labels = batch["labels"].to(device)
        with autocast(precision, device):
            logits = teacher(input_ids=batch["input_ids"].to(device),
                             attention_mask=batch["attention_mask"].to(device),
                             decoder_input_ids=teacher.prepare_decoder_input_ids_from_labels(
                                 labels=labels)).logits
        top = torch.log_softmax(logits.float(), -1).topk(k, dim=-1)
        for row, i in enumerate(idx):
            n = starts[i + 1] - starts[i]
            values[starts[i]:starts[i + 1]] = top.values[row, :n].cpu()
            indices[starts[i]:starts[i + 1]] = top.indices[row, :n].cpu().to(torch.int32)
    teacher.train(was_training)
    return {"values": values, "indices": indices}


def teacher_topk(teacher, teacher_dir: Path, data: ParallelDataset, batch_tokens: int,
                 precision: str, k: int) -> tuple[dict[str, torch.Tensor], bool]:
    """A translation teacher's ``k`` most probable tokens and their log-probabilities at every
    target position of ``data`` (teacher forcing on its targets), rows in dataset order, target
    after target; and whether they came from the cache. ``k × 8`` bytes per target token."""
    key = cache_key(teacher_dir, f"top{k}", [data.src, data.tgt], precision)
    return cached(key, sum(len(t) for t in data.tgt),
                  lambda: _seq2seq_pass(teacher, data, batch_tokens, precision, k))
