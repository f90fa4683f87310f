"""Decode a corpus with a translation teacher: the distilled data of sequence-level KD.

:func:`generate_corpus` translates every source line with beam search, greedy search or
sampling (plain, top-k, top-p) and writes the hypotheses in the input order:

- **Batches** hold sentences of similar length: the lines are sorted by source token
  count (longest first) and cut into batches by a padded-token budget
  (``batch_tokens``: sentences × longest source) and/or a sentence count.
- **Length cap**: each sentence may produce at most ``min(max_length, ⌊a·len + b⌋)`` tokens
  (``</s>`` included; ``len`` is its source token count), enforced per sentence by
  :class:`RowLengthCap`, so the result of a sentence does not depend on its batch.
- **Shards**: consecutive sorted batches form shards of about ``shard_size`` sentences.
  Each shard is written atomically (temporary file + rename) to
  ``<work_dir>/shard-NNNNN.jsonl`` with its line ids; then the shards are merged, in input
  order, into ``out_path`` (atomically) and ``<out_path>.manifest.json`` records the
  configuration and the counts.  An interrupted run resumes: finished shards are kept.
  A finished output with the same configuration is not generated again.
- **Processes**: under ``accelerate launch --num_processes N``, process ``r`` decodes
  shards ``r, r+N, ...``; the main process merges after ``wait_for_everyone``.
- **Sampling** is seeded per shard (``seed * 1_000_003 + shard``), so a run is reproducible
  whatever the number of processes or interruptions.

Output format (from the suffix of ``out_path`` unless ``out_format`` is given):
``text`` (one hypothesis per line, ``num_return`` must be 1), ``jsonl``
(``{"id", "rank", "score", "text", "logprob", "length"}``) or ``tsv``
(``id<TAB>rank<TAB>score<TAB>text``).  ``score`` is the model's log-probability of the
hypothesis (``</s>`` included) divided by ``length ** length_penalty``, computed by one
teacher-forced pass; rank 0 is the highest score.  Ids are 0-based input line numbers.

Also here: reading k-best lists and the sentence-BLEU selection of Seq-Inter
(:func:`select_by_sentence_bleu`; the metrics are in :mod:`textdistill.metrics`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from textdistill.config import DecodeConfig
from textdistill.data.batching import length_batches, pad
from textdistill.errors import UserError
from textdistill.metrics import sentence_bleu
from textdistill.models.nat import NATModel, mask_predict
from textdistill.models.seq2seq import load_seq2seq
from textdistill.paths import atomic_write_json, atomic_write_text
from textdistill.precision import for_inference

log = logging.getLogger(__name__)

FORMATS = ("text", "jsonl", "tsv")
SHARD_PATTERN = "shard-{:05d}.jsonl"
MANIFEST_VERSION = 2
"""2: reduced precision casts the weights once (``precision.for_inference``), not autocast."""


class Hypothesis(NamedTuple):
    """One output of the teacher for one source line."""

    text: str
    score: float | None = None
    logprob: float | None = None
    length: int | None = None


def generate_kwargs(cfg: DecodeConfig, pad_token_id: int) -> dict[str, Any]:
    """Keyword arguments of ``model.generate`` (besides inputs, caps and processors)."""
    kw: dict[str, Any] = {
        "use_cache": True,
        "num_return_sequences": cfg.num_return,
        "bad_words_ids": [[pad_token_id]],
        "forced_eos_token_id": None,
        "no_repeat_ngram_size": 0,
        "repetition_penalty": 1.0,
        "min_new_tokens": 0,
    }
    if cfg.method == "beam":
        kw.update(do_sample=False, num_beams=cfg.beam, early_stopping=True,
                  length_penalty=cfg.length_penalty)
    elif cfg.method == "greedy":
        kw.update(do_sample=False, num_beams=1)
    else:
        kw.update(do_sample=True, num_beams=1, temperature=cfg.sampling_temperature,
                  top_k=cfg.top_k if cfg.method == "topk" else 0,
                  top_p=cfg.top_p if cfg.method == "topp" else 1.0)
    return kw


def translate(model, tokenizer, sources: list[str], decode: DecodeConfig,
              batch_tokens: int = 4096) -> list[str]:
    """Detokenized best hypothesis for every source, in input order."""
    ids = tokenizer(sources, truncation=True, max_length=decode.max_length)["input_ids"]
    out = [""] * len(sources)
    was_training = model.training
    model.eval()
    for batch in length_batches([len(x) for x in ids], batch_tokens=batch_tokens,
                                longest_first=True):
        hyps = generate_batch(model, tokenizer, [ids[i] for i in batch], decode)
        for i, h in zip(batch, hyps, strict=True):
            out[i] = h[0].text
    model.train(was_training)
    return out


def length_limits(src_lengths: torch.Tensor | Sequence[int], cfg: DecodeConfig,
                  max_positions: int | None = None) -> torch.Tensor:
    """Per-sentence output caps ``min(max_length, ⌊a·len + b⌋)`` (at least 1 token)."""
    lengths = torch.as_tensor(src_lengths, dtype=torch.float64)
    limits = torch.floor(cfg.max_len_a * lengths + cfg.max_len_b).long()
    cap = cfg.max_length if max_positions is None else min(cfg.max_length, max_positions - 1)
    return limits.clamp(min=1, max=cap)


class RowLengthCap(LogitsProcessor):
    """A logits processor that forces ``</s>`` once a sentence has ``limit - 1`` tokens.

    ``limits`` holds one cap per source sentence; the rows of ``input_ids`` (sentences ×
    beams or × returned sequences) are mapped back to their sentence.  Assumes that the
    decoder input starts with one start token.
    """

    def __init__(self, limits: torch.Tensor, eos_token_id: int):
        self.limits = limits
        self.eos = eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        factor = input_ids.shape[0] // self.limits.shape[0]
        limits = self.limits.to(scores.device).repeat_interleave(factor)
        force = input_ids.shape[1] >= limits  # generated so far = shape[1] - 1
        if force.any():
            scores[force] = float("-inf")
            scores[force, self.eos] = 0.0
        return scores


class SelfReorderingCache(EncoderDecoderCache):
    """An encoder-decoder KV cache that beam search reorders without its cross part.

    Beam search reorders the cache rows after every step, but the cross-attention keys
    and values of all beams of a sentence are equal (those of its source), so reordering
    them is wasted copying: about 20% of the time of a batch of long sentences.
    """

    def __init__(self) -> None:
        super().__init__(DynamicCache(), DynamicCache())

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.self_attention_cache.reorder_cache(beam_idx)


def _score(model, input_ids, attention_mask, sequences, num_return: int, eos: int,
           max_elements: int = 1 << 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability and length of each generated sequence (teacher-forced passes)."""
    if num_return > 1:
        input_ids = input_ids.repeat_interleave(num_return, dim=0)
        attention_mask = attention_mask.repeat_interleave(num_return, dim=0)
    dec_in, targets = sequences[:, :-1], sequences[:, 1:]
    is_eos = (targets == eos).long()
    mask = (is_eos.cumsum(1) - is_eos) == 0  # up to and including the first </s>
    rows = max(1, max_elements // max(1, targets.shape[1] * model.config.vocab_size))
    logprob = torch.empty(targets.shape[0], dtype=torch.float32, device=targets.device)
    for start in range(0, targets.shape[0], rows):
        part = slice(start, start + rows)
        logits = model(input_ids=input_ids[part], attention_mask=attention_mask[part],
                       decoder_input_ids=dec_in[part], use_cache=False).logits.float()
        picked = logits.gather(-1, targets[part].unsqueeze(-1)).squeeze(-1)
        token_lp = picked - torch.logsumexp(logits, dim=-1)
        logprob[part] = (token_lp * mask[part]).sum(1)
    return logprob, mask.sum(1)


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    input_ids: Sequence[Sequence[int]],
    cfg: DecodeConfig,
    *,
    with_scores: bool = False,
) -> list[list[Hypothesis]]:
    """Decode one batch of tokenized sources; ``num_return`` hypotheses per source."""
    pad_id = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids, mask = pad(input_ids, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    if isinstance(model, NATModel):
        return _nat_batch(model, tokenizer, ids, mask, cfg)
    if cfg.iterations != 1 or cfg.length_beam != 1:
        raise UserError("iterations and length_beam are for non-autoregressive models; this "
                        "model is autoregressive: choose its search with method and beam")
    limits = length_limits([len(s) for s in input_ids], cfg,
                           getattr(model.config, "max_position_embeddings", None))
    extra = {}
    if cfg.method == "beam" and cfg.beam > 1 and model.config.is_encoder_decoder:
        extra["past_key_values"] = SelfReorderingCache()
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=int(limits.max()),
        logits_processor=LogitsProcessorList([RowLengthCap(limits, eos)]),
        **generate_kwargs(cfg, pad_id),
        **extra,
    )
    texts = tokenizer.batch_decode(out, skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    n = cfg.num_return
    if not with_scores:
        return [[Hypothesis(t) for t in texts[i * n:(i + 1) * n]] for i in range(len(input_ids))]
    logprob, length = _score(model, ids, mask, out, n, eos)
    score = logprob / length.double().pow(cfg.length_penalty).float()
    result = []
    for i in range(len(input_ids)):
        hyps = [
            Hypothesis(texts[j], float(score[j]), float(logprob[j]), int(length[j]))
            for j in range(i * n, (i + 1) * n)
        ]
        result.append(sorted(hyps, key=lambda h: -h.score))  # stable: ties keep model order
    return result


def _nat_batch(model, tokenizer, ids: torch.Tensor, mask: torch.Tensor, cfg: DecodeConfig
               ) -> list[list[Hypothesis]]:
    """Mask-predict decoding (``cfg.iterations``, ``cfg.length_beam``) of one batch: one
    hypothesis per source, scored by its average token log-probability."""
    if cfg.num_return != 1:
        raise UserError("a non-autoregressive model gives one translation per source: use "
                        "num_return 1 (length_beam sets how many lengths it tries)")
    decoded = mask_predict(model, ids, mask, iterations=cfg.iterations,
                           length_beam=cfg.length_beam, max_length=cfg.max_length)
    texts = tokenizer.batch_decode([tokens for tokens, _ in decoded], skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    return [[Hypothesis(text, mean, mean * len(tokens), len(tokens))]
            for text, (tokens, mean) in zip(texts, decoded, strict=True)]


def plan_shards(batches: list[list[int]], shard_size: int) -> list[list[list[int]]]:
    """Consecutive batches grouped into shards of at least ``shard_size`` sentences."""
    if shard_size < 1:
        raise UserError(f"shard_size must be positive, not {shard_size}")
    shards: list[list[list[int]]] = []
    current: list[list[int]] = []
    count = 0
    for batch in batches:
        current.append(batch)
        count += len(batch)
        if count >= shard_size:
            shards.append(current)
            current, count = [], 0
    if current:
        shards.append(current)
    return shards


def shard_seed(seed: int, shard: int) -> int:
    """The sampling seed of one shard."""
    return (seed * 1_000_003 + shard) % (2**63 - 1)


def _model_fingerprint(model_dir: Path) -> dict[str, Any]:
    files = {}
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        path = model_dir / name
        if path.is_file():
            st = path.stat()
            files[name] = [st.st_size, st.st_mtime_ns]
    return {"path": str(model_dir.resolve()), "files": files}


def _source_hash(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _infer_format(out_path: Path, out_format: str | None) -> str:
    if out_format is None:
        out_format = {".jsonl": "jsonl", ".tsv": "tsv"}.get(out_path.suffix, "text")
    if out_format not in FORMATS:
        raise UserError(f"unknown output format {out_format!r}; use one of {FORMATS}")
    return out_format


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _format_output(records: list[list[Hypothesis]], out_format: str) -> str:
    if out_format == "text":
        return "".join(_one_line(hyps[0].text) + "\n" for hyps in records)
    parts = []
    for line_id, hyps in enumerate(records):
        for rank, h in enumerate(hyps):
            if out_format == "jsonl":
                parts.append(json.dumps(
                    {"id": line_id, "rank": rank, "score": h.score, "text": h.text,
                     "logprob": h.logprob, "length": h.length}, ensure_ascii=False) + "\n")
            else:
                score = "" if h.score is None else f"{h.score:.6f}"
                parts.append(f"{line_id}\t{rank}\t{score}\t{_one_line(h.text)}\n")
    return "".join(parts)


def manifest_path(out_path: str | Path) -> Path:
    """Where the manifest of a finished output lives: ``<out_path>.manifest.json``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".manifest.json")


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _is_complete(out_path: Path, config: dict) -> bool | None:
    """True: done with this config; False: nothing there; None: something else there."""
    man = manifest_path(out_path)
    if not out_path.exists():
        return False
    if not man.is_file():
        return None
    try:
        meta = json.loads(man.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    if meta.get("config") != config:
        return None
    ok = (out_path.stat().st_size == meta.get("bytes")
          and _count_lines(out_path) == meta.get("output_lines"))
    return True if ok else None


def _read_shard(path: Path) -> dict[int, list[Hypothesis]]:
    result: dict[int, list[Hypothesis]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        result[rec["id"]] = [Hypothesis(*h) for h in rec["hyps"]]
    return result


def _process_state():
    """Accelerate's process state; CPU-only machines use the gloo backend (MULTI_CPU)."""
    import os

    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=use_cpu or not torch.cuda.is_available())


def _check_work_dir(work: Path, work_manifest: dict, overwrite: bool) -> bool:
    """Whether ``work`` must be emptied first; UserError if it holds other work."""
    manifest = work / "manifest.json"
    if manifest.is_file():
        try:
            same = json.loads(manifest.read_text(encoding="utf-8")) == work_manifest
        except json.JSONDecodeError:
            same = False
        if same:
            return False
        if not overwrite:
            raise UserError(
                f"{work} holds shards of a run with another configuration; pass "
                "overwrite=True to discard them, or delete the folder"
            )
        return True
    if work.exists() and (not work.is_dir() or any(work.iterdir())):
        if not overwrite:
            raise UserError(f"{work} exists and is not a shard folder of textdistill; delete it "
                            "or pass overwrite=True")
        return True
    return False


def generate_corpus(
    model_dir: str | Path,
    src: Sequence[str] | str | Path,
    out_path: str | Path,
    decode: DecodeConfig | None = None,
    *,
    batch_tokens: int | None = 4096,
    batch_size: int | None = None,
    shard_size: int = 1000,
    out_format: str | None = None,
    work_dir: str | Path | None = None,
    overwrite: bool = False,
    keep_shards: bool = False,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    device: str | torch.device | None = None,
    on_shard: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Translate ``src`` (lines, or a file path) with the model in ``model_dir``.

    Writes ``out_path`` (input order) and ``<out_path>.manifest.json``; returns a summary.
    ``on_shard(shard, shards_done_now)`` is called after each shard this process writes;
    ``precision`` (resolved: fp32, bf16, fp16) is that of the forward passes.
    With ``src_lang``/``tgt_lang``, the model folder's recorded languages are checked.
    """
    from textdistill.data.readers import read_lines
    from textdistill.seq2seq.vocab import check_languages

    t0 = time.perf_counter()
    cfg = decode or DecodeConfig()
    num_return = cfg.num_return
    out_path = Path(out_path)
    fmt = _infer_format(out_path, out_format)
    if fmt == "text" and num_return > 1:
        raise UserError(
            f"num_return {num_return} needs a k-best format: write to a .jsonl or .tsv file"
        )
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model folder {model_dir} does not exist")
    if src_lang is not None or tgt_lang is not None:
        if src_lang is None or tgt_lang is None:
            raise UserError("give both src_lang and tgt_lang (or neither)")
        check_languages(model_dir, src_lang, tgt_lang)
    lines = list(read_lines(src) if isinstance(src, str | Path) else src)
    work = Path(work_dir) if work_dir is not None else out_path.with_name(out_path.name + ".parts")
    config = {
        "version": MANIFEST_VERSION,
        "model": _model_fingerprint(model_dir),
        "source": {"lines": len(lines), "sha256": _source_hash(lines)},
        "decode": cfg.model_dump(),
        "batch_tokens": batch_tokens,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "format": fmt,
        "precision": precision,
    }
    complete = _is_complete(out_path, config)
    summary: dict[str, Any] = {"out": str(out_path), "lines": len(lines), "format": fmt}
    if complete:
        log.info("%s is complete with the same configuration: skipped", out_path)
        return {**summary, "skipped": True, "shards": None, "shards_done_now": 0,
                "seconds": time.perf_counter() - t0}
    if complete is None and not overwrite:
        raise UserError(
            f"{out_path} exists but was not made by this configuration (see "
            f"{manifest_path(out_path).name}); pass overwrite=True or choose another "
            "output"
        )

    state = _process_state()
    model, tokenizer = load_seq2seq(model_dir, device if device is not None else state.device)
    for_inference(model, precision)
    max_src = getattr(model.config, "max_position_embeddings", 512)
    encoded = tokenizer(lines, add_special_tokens=True)["input_ids"]
    truncated = sum(1 for ids in encoded if len(ids) > max_src)
    if truncated:  # keep the first max_src - 1 tokens and </s>
        eos = tokenizer.eos_token_id
        encoded = [ids if len(ids) <= max_src else [*ids[: max_src - 1], eos] for ids in encoded]
        log.warning("%d source lines are longer than %d tokens: truncated", truncated, max_src)
    batches = length_batches([len(ids) for ids in encoded], batch_size, batch_tokens,
                             longest_first=True)
    shards = plan_shards(batches, shard_size)
    work_manifest = {**config, "shards": len(shards)}

    manifest = work / "manifest.json"
    wipe = _check_work_dir(work, work_manifest, overwrite)  # every process raises alike
    if state.is_main_process:
        if wipe:
            shutil.rmtree(work) if work.is_dir() else work.unlink()
        work.mkdir(parents=True, exist_ok=True)
        for stale in work.glob(".*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        atomic_write_json(manifest, work_manifest)
    state.wait_for_everyone()

    with_scores = fmt != "text"
    done_now = 0
    for index in range(state.process_index, len(shards), state.num_processes):
        path = work / SHARD_PATTERN.format(index)
        if path.is_file():
            continue
        torch.manual_seed(shard_seed(cfg.seed, index))
        rows = []
        for batch in shards[index]:
            hyps = generate_batch(model, tokenizer, [encoded[i] for i in batch], cfg,
                                  with_scores=with_scores)
            rows.extend(
                json.dumps({"id": i, "hyps": [list(h) for h in hs]}, ensure_ascii=False)
                for i, hs in zip(batch, hyps, strict=True)
            )
        atomic_write_text(path, "".join(r + "\n" for r in rows))
        done_now += 1
        log.info("shard %d/%d written (%d sentences)", index + 1, len(shards), len(rows))
        if on_shard is not None:
            on_shard(index, done_now)
    state.wait_for_everyone()

    if state.is_main_process:
        records: list[list[Hypothesis] | None] = [None] * len(lines)
        for index in range(len(shards)):
            path = work / SHARD_PATTERN.format(index)
            if not path.is_file():
                raise UserError(f"shard {path} is missing after generation; run again to resume")
            for line_id, hyps in _read_shard(path).items():
                if records[line_id] is not None or len(hyps) != num_return:
                    raise UserError(f"shard {path} is inconsistent (line {line_id}); delete "
                                    f"{work} and run again")
                records[line_id] = hyps
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            raise UserError(f"{len(missing)} lines (e.g. {missing[0]}) are in no shard of "
                            f"{work}; delete it and run again")
        text = _format_output(records, fmt)  # type: ignore[arg-type]
        atomic_write_text(out_path, text)
        atomic_write_json(manifest_path(out_path), {
            "config": config,
            "bytes": out_path.stat().st_size,
            "output_lines": text.count("\n"),
            "records": len(lines) * num_return,
            "shards": len(shards),
            "truncated_sources": truncated,
        })
        if not keep_shards:
            shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    seconds = time.perf_counter() - t0
    return {**summary, "skipped": False, "shards": len(shards), "shards_done_now": done_now,
            "records": len(lines) * num_return, "truncated_sources": truncated,
            "seconds": seconds, "processes": state.num_processes}


# -- reading k-best lists and selecting by sentence BLEU -----------------------------------


def read_kbest(path: str | Path) -> list[list[Hypothesis]]:
    """The k-best lists of a ``.jsonl`` or ``.tsv`` output, indexed by line id."""
    from textdistill.data.readers import read_lines

    path = Path(path)
    fmt = _infer_format(path, None)
    if fmt == "text":
        return [[Hypothesis(line)] for line in read_lines(path)]
    by_id: dict[int, list[tuple[int, Hypothesis]]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        try:
            if fmt == "jsonl":
                rec = json.loads(line)
                line_id, rank = int(rec["id"]), int(rec["rank"])
                hyp = Hypothesis(rec["text"], rec.get("score"), rec.get("logprob"),
                                 rec.get("length"))
            else:
                line_id_s, rank_s, score_s, text = line.split("\t", 3)
                line_id, rank = int(line_id_s), int(rank_s)
                hyp = Hypothesis(text, float(score_s) if score_s else None)
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{number} is not a k-best record ({exc})") from None
        by_id.setdefault(line_id, []).append((rank, hyp))
    if sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{path}: line ids are not 0..{len(by_id) - 1}")
    return [[h for _, h in sorted(by_id[i], key=lambda x: x[0])] for i in range(len(by_id))]


def _as_hypothesis(item) -> Hypothesis:
    if isinstance(item, Hypothesis):
        return item
    if isinstance(item, str):
        return Hypothesis(item)
    if isinstance(item, dict):
        return Hypothesis(item["text"], item.get("score"))
    text, score = item[0], item[1] if len(item) > 1 else None
    return Hypothesis(text, score)


def select_by_sentence_bleu(kbest: Sequence[Sequence[Any]], references: Sequence[str]
                            ) -> list[str]:
    """Seq-Inter: from each k-best list the hypothesis closest to the reference.

    Items are :class:`Hypothesis`, ``(text, score)`` tuples, dicts or plain strings.  The
    highest sentence BLEU wins; ties go to the higher model score, then the earlier rank.
    """
    if len(kbest) != len(references):
        raise UserError(f"{len(kbest)} k-best lists but {len(references)} references")
    chosen = []
    for number, (items, ref) in enumerate(zip(kbest, references, strict=True)):
        hyps = [_as_hypothesis(item) for item in items]
        if not hyps:
            raise UserError(f"k-best list {number} is empty")
        best = max(
            enumerate(hyps),
            key=lambda x: (
                sentence_bleu(x[1].text, ref),
                float("-inf") if x[1].score is None else x[1].score,
                -x[0],
            ),
        )
        chosen.append(best[1].text)
    return chosen
