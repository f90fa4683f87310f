"""Throughput of distilled-corpus generation: ``generate_corpus`` against a plain HF loop.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_generate.py

Builds (once, cached in ``--work-dir``) a joint en+de Unigram vocabulary of ``--vocab``
tokens on the first ``--vocab-rows`` rows of the l10n training split and a randomly
initialised ``--preset`` model (the throughput of a random model is that of a trained one
whose outputs are as long; a random model usually runs to its length cap).  Then it
translates the first ``--sentences`` English lines of l10n dev with beam ``--beam``:

- **baseline**: a plain loop over the lines in corpus order, in fixed batches of
  ``--baseline-batch`` sentences, calling ``model.generate`` (padding to the longest in
  the batch);
- **generate_corpus**: length-sorted batches by a token budget (``--batch-tokens``),
  ``torch.inference_mode``, shards, output in input order.

Both paths cap every sentence at ``⌊1.5·source_tokens + 10⌋`` output tokens (``</s>``
forced there, by the same logits processor) and use the same beam settings, so their
outputs must be identical; the script checks that and prints sentences/s of both and the
ratio (target ≥ 3×).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 3.0


def build_teacher(work: Path, preset: str, vocab: int, rows: int, seed: int) -> Path:
    """Tokenizer + random model in ``work/teacher`` (reused when it is already there)."""
    from textdistill.data.parallel import load_l10n_pairs
    from textdistill.models.seq2seq import build_seq2seq, save_seq2seq
    from textdistill.seq2seq.vocab import train_tokenizer

    folder = work / f"teacher-{preset}-{vocab}-{rows}-{seed}"
    if (folder / "model.safetensors").is_file():
        return folder
    pairs = load_l10n_pairs("train", "de")[:rows]
    tok = train_tokenizer((s for p in pairs for s in p), vocab)
    model = build_seq2seq(preset, tok, seed=seed)
    save_seq2seq(model, tok, folder, "en", "de")
    return folder


def baseline(folder: Path, lines: list[str], beam: int, batch: int) -> tuple[list[str], float]:
    """Plain loop: unsorted fixed-size batches, one ``generate`` call per batch."""
    import torch
    from transformers import LogitsProcessorList

    from textdistill.models.seq2seq import load_seq2seq
    from textdistill.seq2seq.generate import DecodeConfig, RowLengthCap, length_limits

    model, tok = load_seq2seq(folder)
    cfg = DecodeConfig("beam", beam=beam)
    max_pos = model.config.max_position_embeddings
    t0 = time.perf_counter()
    out: list[str] = []
    for start in range(0, len(lines), batch):
        enc = tok(lines[start:start + batch], return_tensors="pt", padding=True,
                  truncation=True, max_length=max_pos)
        limits = length_limits(enc["attention_mask"].sum(1), cfg, max_pos)
        with torch.no_grad():
            ids = model.generate(
                **enc,
                max_new_tokens=int(limits.max()),
                logits_processor=LogitsProcessorList([RowLengthCap(limits, tok.eos_token_id)]),
                **cfg.generate_kwargs(tok.pad_token_id),
            )
        out.extend(tok.batch_decode(ids, skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False))
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--vocab-rows", type=int, default=20000)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=None, help="cache for the teacher and outputs")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch

    from textdistill.data.parallel import load_l10n_pairs
    from textdistill.errors import UserError
    from textdistill.models.common import count_parameters
    from textdistill.seq2seq.generate import generate_corpus

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir or Path(tempfile.gettempdir()) / "textdistill-bench-generate")
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        folder = build_teacher(work, args.preset, args.vocab, args.vocab_rows, args.seed)
        setup_s = time.perf_counter() - t0
        lines = [s for s, _ in load_l10n_pairs("dev", "de")][: args.sentences]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from textdistill.models.seq2seq import load_seq2seq

    model, tok = load_seq2seq(folder)
    src_tokens = [len(ids) for ids in tok(lines)["input_ids"]]
    figures: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
        "preset": args.preset,
        "parameters": count_parameters(model)["params"],
        "vocab": len(tok),
        "sentences": len(lines),
        "source_tokens_mean": round(sum(src_tokens) / len(src_tokens), 1),
        "source_tokens_max": max(src_tokens),
        "beam": args.beam,
        "baseline_batch": args.baseline_batch,
        "batch_tokens": args.batch_tokens,
        "setup_s": round(setup_s, 1),
    }
    del model

    base_out, base_s = baseline(folder, lines, args.beam, args.baseline_batch)
    out = work / "bench.txt"
    summary = generate_corpus(folder, lines, out, "beam", beam=args.beam,
                              batch_tokens=args.batch_tokens, overwrite=True)
    ours_s = summary["seconds"]
    ours_out = out.read_text(encoding="utf-8").split("\n")[:-1]
    same = sum(a == b for a, b in zip(base_out, ours_out, strict=True))
    figures.update({
        "baseline_s": round(base_s, 2),
        "baseline_sent_per_s": round(len(lines) / base_s, 2),
        "generate_corpus_s": round(ours_s, 2),
        "generate_corpus_sent_per_s": round(len(lines) / ours_s, 2),
        "speedup": round(base_s / ours_s, 2),
        "identical_outputs": f"{same}/{len(lines)}",
    })
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    ok = same == len(lines) and base_s / ours_s >= TARGET_RATIO
    print(f"baseline {figures['baseline_sent_per_s']} sent/s, generate_corpus "
          f"{figures['generate_corpus_sent_per_s']} sent/s: {figures['speedup']}x "
          f"(target {TARGET_RATIO}x), outputs identical {same}/{len(lines)}"
          + ("" if ok else "  <-- below target or outputs differ"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
