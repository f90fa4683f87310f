"""Inference in bf16: autocast against weights cast once (``precision.for_inference``), and fp32.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_inference_precision.py \
        --at AT_MODEL --nat NAT_MODEL [--classifiers TEACHER STUDENT] [--sentences 64]

Translation: an autoregressive model (greedy, beam 5) and a non-autoregressive one (T = 1, 10;
length beam 3) on the first ``--sentences`` l10n en→de test sentences: ms per sentence at batch
1 (the first 16, each alone) and sentences/s over all of them (batches of up to 4,096 tokens),
with the BLEU of the batched outputs. Classifiers: median batch-1 latency and batch-32
throughput on 200 rotten-tomatoes test snippets. One thread unless ``--threads``; every setting
in the same run (compare ratios on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", required=True)
    parser.add_argument("--nat", required=True)
    parser.add_argument("--classifiers", nargs="*", default=[])
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from textdistill.config import DataConfig, DecodeConfig
    from textdistill.data.batching import TokenizedDataset
    from textdistill.data.corpora import load_classification, subsample
    from textdistill.data.parallel import load_l10n_pairs
    from textdistill.evaluate import measure_speed
    from textdistill.metrics import corpus_bleu_chrf
    from textdistill.models.classifier import load_classifier
    from textdistill.models.seq2seq import load_seq2seq
    from textdistill.precision import autocast, for_inference
    from textdistill.seq2seq.generate import translate

    torch.set_num_threads(args.threads)
    ways = {"fp32": (False, "fp32"), "bf16 autocast": (True, "fp32"),
            "bf16 weights": (False, "bf16")}

    def variants(model):
        for way, (use_autocast, cast) in ways.items():
            m = for_inference(copy.deepcopy(model), cast)
            with torch.inference_mode(), (autocast("bf16") if use_autocast
                                          else contextlib.nullcontext()):
                yield way, m

    pairs = load_l10n_pairs("test", "de")[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {len(sources)} l10n test sentences")
    print("| model | decoding | precision | ms/sentence, batch 1 | sentences/s, batched | BLEU |")
    print("|---|---|---|---|---|---|")
    settings = [(args.at, "greedy", DecodeConfig(method="greedy", max_length=64)),
                (args.at, "beam 5", DecodeConfig(method="beam", beam=5, max_length=64)),
                (args.nat, "T=1", DecodeConfig(method="greedy", iterations=1, length_beam=3,
                                               max_length=64)),
                (args.nat, "T=10", DecodeConfig(method="greedy", iterations=10, length_beam=3,
                                                max_length=64))]
    for path, name, decode in settings:
        model, tok = load_seq2seq(path, "cpu")
        for way, m in variants(model):
            translate(m, tok, sources[:2], decode, batch_tokens=1)  # warm-up
            alone = sources[:16]
            start = time.perf_counter()
            translate(m, tok, alone, decode, batch_tokens=1)
            one = (time.perf_counter() - start) / len(alone) * 1000
            start = time.perf_counter()
            hyps = translate(m, tok, sources, decode, batch_tokens=4096)
            rate = len(sources) / (time.perf_counter() - start)
            print(f"| {path} | {name} | {way} | {one:.1f} | {rate:.1f} | "
                  f"{corpus_bleu_chrf(hyps, refs)['bleu']:.2f} |")

    if args.classifiers:
        corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
        rows = subsample(corpus.split("test"), 200, seed=0)
        print("\n| classifier | precision | ms, batch 1 (median) | examples/s, batch 32 |")
        print("|---|---|---|---|")
        for path in args.classifiers:
            model, tok = load_classifier(path, corpus.labels)
            data = TokenizedDataset(rows, tok, 64)
            for way, m in variants(model):
                speed = measure_speed(m, data, 100, 4)
                print(f"| {path} | {way} | {speed['latency_ms_b1']:.2f} | "
                      f"{speed['throughput_b32']:.0f} |")


if __name__ == "__main__":
    main()
