"""Training cost of every translation preset on l10n en->de: seconds per step and the epoch
time it implies.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_seq2seq_train.py \
        --presets tiny small base big --steps 4

A joint Unigram vocabulary (``--vocab`` tokens) is trained on the first ``--vocab-rows``
training pairs; the whole training split is batched as ``textdistill train`` batches it
(``--batch-tokens`` padded tokens, sequences cut at ``--max-length``). For each preset, one
warm-up step and then ``--steps`` timed steps (forward, label-smoothed loss, backward,
clipping, fused AdamW) run on the same batches. Printed per preset: parameters, median
seconds per step, target tokens per second, steps per epoch and the implied epoch time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from textdistill.config import Hard, OptimConfig
from textdistill.data.batching import ParallelDataset
from textdistill.data.parallel import load_l10n_pairs
from textdistill.models.common import count_parameters
from textdistill.models.seq2seq import build_seq2seq
from textdistill.objectives import ObjectiveModule
from textdistill.seq2seq.vocab import train_tokenizer
from textdistill.tasks.seq2seq import Seq2SeqTask
from textdistill.trainer import make_adamw


def time_preset(preset: str, tokenizer, batches: list[dict], steps: int) -> dict:
    """Median seconds of a full training step of ``preset`` over ``batches``."""
    model = build_seq2seq(preset, tokenizer, seed=0)
    module = ObjectiveModule(Seq2SeqTask(), model, [[Hard(loss="hard", smoothing=0.1)]]).train()
    opt = make_adamw(module.parameters(), OptimConfig(lr=5e-4))
    times = []
    for i in range(steps + 1):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        loss = module(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches[1:steps + 1]) / steps
    return {"params": count_parameters(model)["params"], "s_per_step": statistics.median(times),
            "tgt_tokens_per_step": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base", "big"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--vocab-rows", type=int, default=24000)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = load_l10n_pairs("train", "de")
    tokenizer = train_tokenizer((s for p in pairs[:args.vocab_rows] for s in p), args.vocab)
    data = ParallelDataset(list(pairs), tokenizer, args.max_length)
    loader = data.loader(args.batch_tokens, shuffle=True, seed=0)
    steps_per_epoch = len(loader.batch_sampler)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) > args.steps:
            break

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.threads} threads; l10n en-de train "
          f"{len(pairs):,} pairs = {steps_per_epoch} steps of {args.batch_tokens} tokens")
    print(f"{'preset':8} {'params':>12} {'s/step':>8} {'tgt tok/s':>10} {'epoch min':>10}")
    for preset in args.presets:
        r = time_preset(preset, tokenizer, batches, args.steps)
        print(f"{preset:8} {r['params']:>12,} {r['s_per_step']:>8.2f} "
              f"{r['tgt_tokens_per_step'] / r['s_per_step']:>10,.0f} "
              f"{r['s_per_step'] * steps_per_epoch / 60:>10.1f}")


if __name__ == "__main__":
    main()
