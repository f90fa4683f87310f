"""Distillation step overhead: textdistill's Trainer + ObjectiveModule vs a minimal hand-written
PyTorch loop doing the same computation (teacher forward without gradients, student forward,
Hinton KD loss mixed with the hard-label loss, backward, clipping, fused AdamW, linear
schedule).

    python benchmarks/bench_distill_step.py --steps 60 --repeats 3

Both run the same batches from the same initial weights, alternately, in one process; the
figure to read is the ratio of median step times measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from transformers import get_linear_schedule_with_warmup

from textdistill.config import KD, DataConfig, OptimConfig
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import load_classification
from textdistill.models.classifier import build_student, load_classifier
from textdistill.objectives import ObjectiveModule
from textdistill.tasks.classification import ClassificationTask
from textdistill.trainer import PhaseSpec, Trainer

T, ALPHA, LR = 2.0, 0.5, 1e-4


def hand_loop(student, teacher, data, batch_size, steps) -> list[float]:
    """The reference: the same computation written directly in PyTorch, over the same
    length-bucketed batches (fetching and collating them is timed in both paths)."""
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.01, fused=True)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    student.train()
    times = []
    start = time.perf_counter()
    for b, _ in zip(data.loader(batch_size, shuffle=True, seed=42), range(steps), strict=False):
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        with torch.no_grad():
            t_logits = teacher(**inputs).logits
        s_logits = student(**inputs).logits
        soft = F.kl_div(F.log_softmax(s_logits / T, -1), F.log_softmax(t_logits / T, -1),
                        reduction="batchmean", log_target=True) * T * T
        loss = ALPHA * soft + (1 - ALPHA) * F.cross_entropy(s_logits, b["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
    return times


def ours(student, teacher, data, batch_size, steps, seed) -> list[float]:
    optim = OptimConfig(lr=LR)
    kd = KD(loss="kd", temperature=T, alpha=ALPHA)
    module = ObjectiveModule(ClassificationTask(), student, [[kd]], teacher)
    epochs = steps / -(-len(data) // batch_size)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(module, data, batch_size,
                          [PhaseSpec("kd", epochs, optim, select=False)], out,
                          evaluate_fn=lambda m: {"accuracy": 0.0}, save_fn=lambda m, f: None,
                          seed=seed)
        trainer.train()
    return trainer.step_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--preset", default="tinybert-4")
    ap.add_argument("--teacher", default="minilm")
    args = ap.parse_args()
    torch.manual_seed(0)
    corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
    teacher, tok = load_classifier(args.teacher, corpus.labels)
    teacher.eval()
    fresh = build_student(args.preset, teacher, corpus.labels)
    rows = corpus.split("train")[: args.steps * args.batch_size]
    data = TokenizedDataset(rows, tok, max_length=64)
    ours_t, hand_t = [], []
    for _ in range(args.repeats):
        ours_t += ours(copy.deepcopy(fresh), teacher, data, args.batch_size, args.steps, 42)[5:]
        hand_t += hand_loop(copy.deepcopy(fresh), teacher, data, args.batch_size, args.steps)[5:]
    o, h = statistics.median(ours_t), statistics.median(hand_t)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}")
    print(f"student {args.preset}, batch {args.batch_size}, {args.steps} steps x {args.repeats}")
    print(f"hand-written loop: median step {1000 * h:.1f} ms")
    print(f"textdistill:       median step {1000 * o:.1f} ms")
    print(f"overhead: {100 * (o / h - 1):+.1f}%")


if __name__ == "__main__":
    main()
