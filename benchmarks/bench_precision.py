"""Training step time in fp32 vs bf16 (autocast), side by side in one process.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_precision.py \
        [--steps 20] [--repeats 3] [--threads 1]

Three workloads, each a full step through the project's objective runner (teacher forward
without gradients, student forward, losses in fp32, backward, AdamW):

- ``quickstart-kd``: the quickstart's TinyBERT-4-shaped student with soft-target KD from the
  MiniLM-L6 encoder, rotten-tomatoes batches of 32 (max length 128);
- ``tinybert-intermediate``: the same student and teacher with TinyBERT's intermediate-layer
  losses (embedding, hidden states, attention scores);
- ``translation-tiny``: the ``tiny`` translation preset on l10n en→de batches of 4,096 tokens
  (label-smoothed NLL).

Three arms alternate within each repeat over the same batches from the same initial weights:
fp32, bf16 with SDPA attention, bf16 with eager attention (the training stages use eager
under bf16 on a CPU); the figure to read is the ratio of median step times, fp32
to what the stage runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from textdistill.config import KD, Attention, DataConfig, Embedding, Hard, Hidden, OptimConfig
from textdistill.data.batching import ParallelDataset, TokenizedDataset
from textdistill.data.corpora import load_classification
from textdistill.objectives import ObjectiveModule
from textdistill.precision import autocast, cpu_has_bf16
from textdistill.tasks.seq2seq import Seq2SeqTask
from textdistill.trainer import make_adamw


def _classification(losses):
    from textdistill.models.classifier import build_student, load_classifier
    from textdistill.tasks.classification import ClassificationTask

    corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
    teacher, tokenizer = load_classifier("minilm", corpus.labels)
    student = build_student("tinybert-4", teacher, corpus.labels)
    data = TokenizedDataset(corpus.split("train"), tokenizer, 128)
    module = ObjectiveModule(ClassificationTask(), student, [losses], teacher)
    return module, data, 32


def _translation():
    from textdistill.config import ParallelDataConfig
    from textdistill.data.parallel import load_pairs
    from textdistill.models.seq2seq import build_seq2seq
    from textdistill.seq2seq.vocab import train_tokenizer
    pairs = load_pairs(ParallelDataConfig(corpus="l10n", max_train_examples=20000), "train")
    tokenizer = train_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], 8000,
                                src_lang="en", tgt_lang="de")
    model = build_seq2seq("tiny", tokenizer, seed=0)
    module = ObjectiveModule(Seq2SeqTask(), model, [[Hard(loss="hard", smoothing=0.1)]])
    return module, ParallelDataset(pairs, tokenizer, 128), 4096


ARMS = {"fp32": ("fp32", "sdpa"), "bf16 sdpa": ("bf16", "sdpa"),
        "bf16 eager": ("bf16", "eager")}
"""(precision, attention implementation) of each measured arm."""


WORKLOADS = {
    "quickstart-kd": lambda: _classification([KD(loss="kd", temperature=2.0)]),
    "tinybert-intermediate": lambda: _classification(
        [Embedding(loss="embedding"), Hidden(loss="hidden"), Attention(loss="attention")]),
    "translation-tiny": _translation,
}


def step_times(module, batches, precision: str) -> list[float]:
    optimizer = make_adamw([p for p in module.parameters() if p.requires_grad],
                           OptimConfig(lr=1e-4))
    module.train()
    times = []
    for batch in batches:
        start = time.perf_counter()
        with autocast(precision):
            loss = module(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of the bf16 eager arm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), native bf16: {cpu_has_bf16()}")
    print("| workload | fp32 ms/step | bf16 SDPA ms/step | bf16 eager ms/step | speed-up of "
          "what the stage runs |\n|---|---|---|---|---|")
    for name in args.only:
        torch.manual_seed(0)
        module, data, batch_size = WORKLOADS[name]()
        loader = data.loader(batch_size, shuffle=True, seed=42)
        batches = [b for b, _ in zip(loader, range(args.steps + 2), strict=False)]
        initial = copy.deepcopy(module.state_dict())
        medians: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for _ in range(args.repeats):
            for arm, (precision, attention) in ARMS.items():
                module.load_state_dict(initial)
                for model in (module.student, module.teacher):
                    if model is not None:
                        model.set_attn_implementation(attention)
                times = step_times(module, batches, precision)[2:]  # warm-up steps left out
                medians[arm].append(statistics.median(times))
        ms = {arm: 1000 * min(v) for arm, v in medians.items()}
        used = ms["bf16 eager"]  # what the stages run
        print(f"| {name} | {ms['fp32']:.0f} | {ms['bf16 sdpa']:.0f} | {ms['bf16 eager']:.0f} | "
              f"{ms['fp32'] / used:.2f}× |", flush=True)
        if args.profile:  # where a bf16 eager step spends its time (self CPU per operator)
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step_times(module, batches, "bf16")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
