"""Decoding speed: an autoregressive (AT) model (greedy, beam 5) against a non-autoregressive
(NAT) one (mask-predict with T = 1, 4, 10), in one run.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_nat_speed.py \
        --at AT_MODEL --nat NAT_MODEL [--sentences 200] [--threads 2]

On the first ``--sentences`` English sources of the l10n test split: latency at batch 1
(median over the sentences, each decoded alone) and throughput at batch 64 (sentences/s over
all of them, length-sorted batches of 64), under the stages' precision (bf16 where the CPU
has it). Also prints each setting's test BLEU and mean output length (words) on those
sentences, so that speed is read next to quality and length (an under-trained AT model that
fails to stop is slow for that reason alone). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", required=True)
    parser.add_argument("--nat", required=True)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tgt-lang", default="de")
    args = parser.parse_args()
    import torch

    from textdistill.config import DecodeConfig
    from textdistill.data.batching import length_batches
    from textdistill.data.parallel import load_l10n_pairs
    from textdistill.metrics import corpus_bleu_chrf
    from textdistill.models.seq2seq import load_seq2seq
    from textdistill.precision import for_inference, resolve_precision
    from textdistill.seq2seq.generate import generate_batch

    torch.set_num_threads(args.threads)
    precision = resolve_precision("auto")
    pairs = load_l10n_pairs("test", args.tgt_lang)[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    settings = [("AT greedy", args.at, DecodeConfig(method="greedy", max_length=128)),
                ("AT beam 5", args.at, DecodeConfig(method="beam", beam=5, max_length=128))]
    settings += [(f"NAT T={t}", args.nat, DecodeConfig(method="greedy", iterations=t,
                                                      length_beam=3, max_length=128))
                 for t in (1, 4, 10)]
    models = {path: load_seq2seq(path) for path in {args.at, args.nat}}
    for model, _ in models.values():
        for_inference(model, precision)
    rows = []
    for name, path, decode in settings:
        model, tok = models[path]
        ids = tok(sources, truncation=True, max_length=128)["input_ids"]
        generate_batch(model, tok, ids[:4], decode)  # warm-up
        latency = []
        for one in ids:
            start = time.perf_counter()
            generate_batch(model, tok, [one], decode)
            latency.append(time.perf_counter() - start)
        hyps = [""] * len(ids)
        start = time.perf_counter()
        for batch in length_batches([len(x) for x in ids], batch_size=64, longest_first=True):
            for i, h in zip(batch, generate_batch(model, tok, [ids[i] for i in batch],
                                                  decode), strict=True):
                hyps[i] = h[0].text
        seconds = time.perf_counter() - start
        rows.append((name, 1000 * statistics.median(latency), len(ids) / seconds,
                     corpus_bleu_chrf(hyps, refs)["bleu"],
                     statistics.mean(len(h.split()) for h in hyps)))
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {precision}, {len(sources)} l10n test sentences")
    print("| decoding | ms/sentence, batch 1 (median) | sentences/s, batch 64 | speed-up "
          "(batch 1) vs AT greedy | vs AT beam 5 | BLEU | words per output |")
    print("|---|---|---|---|---|---|---|")
    for name, ms, rate, bleu, words in rows:
        print(f"| {name} | {ms:.1f} | {rate:.1f} | {rows[0][1] / ms:.2f}× | "
              f"{rows[1][1] / ms:.2f}× | {bleu:.2f} | {words:.1f} |")
    print(f"references: {statistics.mean(len(r.split()) for r in refs):.1f} words")


if __name__ == "__main__":
    main()
