"""Evaluation: task metrics, model size, CPU latency and throughput, the comparison table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from rich.table import Table
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from textdistill.config import EvaluateConfig
from textdistill.data.batching import PadCollator, TokenizedDataset, make_loader
from textdistill.data.corpora import load_classification, subsample
from textdistill.models.classifier import count_parameters, load_classifier
from textdistill.paths import atomic_write_json


def classification_metrics(y_true: list[int], y_pred: list[int]) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation (scikit-learn)."""
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


@torch.no_grad()
def predict_labels(model: torch.nn.Module, dataset: TokenizedDataset, batch_size: int) -> list[int]:
    """Predicted label ids for every example, in dataset order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = make_loader(dataset, batch_size, shuffle=False)
    preds = [0] * len(dataset)
    for idx, batch in zip(loader.batch_sampler, loader, strict=True):
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
            preds[i] = p
    model.train(was_training)
    return preds


@torch.no_grad()
def measure_speed(model: torch.nn.Module, dataset: TokenizedDataset, latency_examples: int,
                  throughput_batches: int, batch_size: int = 32) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-32 throughput (examples/s) on the current device."""
    model.eval()
    collate = PadCollator(dataset.pad_id)
    n = min(latency_examples, len(dataset))
    for i in range(min(5, n)):  # warm-up
        model(**_inputs(collate([dataset[i]])))
    times = []
    for i in range(n):
        batch = _inputs(collate([dataset[i]]))
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    batches = [list(range(s, min(s + batch_size, len(dataset))))
               for s in range(0, len(dataset), batch_size)][:throughput_batches]
    model(**_inputs(collate([dataset[i] for i in batches[0]])))
    start = time.perf_counter()
    count = 0
    for idx in batches:
        model(**_inputs(collate([dataset[i] for i in idx])))
        count += len(idx)
    seconds = time.perf_counter() - start
    return {"latency_ms_b1": 1000 * statistics.median(times),
            "throughput_b32": count / seconds}


def _inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def evaluate_model(path: str, cfg: EvaluateConfig) -> dict:
    """Test-set metrics, size and speed of one classifier folder."""
    corpus = load_classification(cfg.data.corpus)
    model, tokenizer = load_classifier(path, corpus.labels)
    rows = subsample(corpus.split(cfg.split), cfg.data.max_eval_examples, seed=0)
    data = TokenizedDataset(rows, tokenizer, cfg.data.max_length)
    metrics = classification_metrics(data.labels,
                                     predict_labels(model, data, cfg.data.eval_batch_size))
    return {**metrics, **count_parameters(model),
            **measure_speed(model, data, cfg.latency_examples, cfg.throughput_batches)}


def run_evaluate(cfg: EvaluateConfig, models: dict[str, str], out_dir: str | Path) -> dict:
    """Evaluate named models; the first is the reference for retention and speed-up ratios."""
    results = {name: evaluate_model(path, cfg) for name, path in models.items()}
    ref = results[next(iter(results))]
    for r in results.values():
        r["retention"] = r["accuracy"] / ref["accuracy"] if ref["accuracy"] else float("nan")
        r["size_ratio"] = ref["params"] / r["params"]
        r["speedup_b1"] = ref["latency_ms_b1"] / r["latency_ms_b1"]
    table = {"split": cfg.split, "corpus": cfg.data.corpus, "models": results}
    atomic_write_json(Path(out_dir) / "metrics.json", table)
    return table


def format_table(table: dict) -> Table:
    """The teacher-vs-students table for the terminal."""
    out = Table(title=f"{table['corpus']} {table['split']}")
    cols = [("accuracy", "acc", ".4f"), ("macro_f1", "macro-F1", ".4f"), ("mcc", "MCC", ".4f"),
            ("retention", "retention", ".3f"), ("params", "params", ","),
            ("size_ratio", "smaller", ".2f"), ("latency_ms_b1", "ms (b=1)", ".2f"),
            ("speedup_b1", "faster", ".2f"), ("throughput_b32", "ex/s (b=32)", ".0f")]
    out.add_column("model")
    for _, title, _ in cols:
        out.add_column(title, justify="right")
    for name, r in table["models"].items():
        out.add_row(name, *[format(r[key], fmt) for key, _, fmt in cols])
    return out
