"""Evaluation: task metrics, model size, CPU latency and throughput, the comparison table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from rich.table import Table

from textdistill.config import DecodeConfig, EvaluateConfig, TranslationEvalConfig, save_config
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import load_classification, subsample
from textdistill.metrics import classification_metrics, corpus_bleu_chrf
from textdistill.models.classifier import load_classifier, resolve_model_path
from textdistill.models.common import count_parameters
from textdistill.paths import atomic_write_json
from textdistill.precision import default_device, for_inference, resolve_precision


@torch.no_grad()
def predict_labels(model: torch.nn.Module, dataset: TokenizedDataset, batch_size: int) -> list[int]:
    """Predicted label ids for every example, in dataset order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device  # no parameters: ONNX, on the CPU
    loader = dataset.loader(batch_size, shuffle=False)
    preds = [0] * len(dataset)
    for idx, batch in zip(loader.batch_sampler, loader, strict=True):
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits
        for i, p in zip(idx, logits.argmax(-1).tolist(), strict=True):
            preds[i] = p
    model.train(was_training)
    return preds


@torch.no_grad()
def batch1_latency_ms(model: torch.nn.Module, dataset: TokenizedDataset, examples: int) -> float:
    """Median time (ms) of one forward pass per example, over the first ``examples`` examples
    one at a time, after five warm-up passes."""
    model.eval()
    n = min(examples, len(dataset))
    for i in range(min(5, n)):
        model(**_inputs(dataset.collate([dataset[i]])))
    times = []
    for i in range(n):
        batch = _inputs(dataset.collate([dataset[i]]))
        start = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.no_grad()
def measure_speed(model: torch.nn.Module, dataset: TokenizedDataset, latency_examples: int,
                  throughput_batches: int, batch_size: int = 32) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-32 throughput (examples/s) on the current device."""
    latency = batch1_latency_ms(model, dataset, latency_examples)
    collate = dataset.collate
    batches = [list(range(s, min(s + batch_size, len(dataset))))
               for s in range(0, len(dataset), batch_size)][:throughput_batches]
    model(**_inputs(collate([dataset[i] for i in batches[0]])))
    start = time.perf_counter()
    count = 0
    for idx in batches:
        model(**_inputs(collate([dataset[i] for i in idx])))
        count += len(idx)
    seconds = time.perf_counter() - start
    return {"latency_ms_b1": latency, "throughput_b32": count / seconds}


def _inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def evaluate_model(path: str, cfg: EvaluateConfig) -> dict:
    """Test-set metrics, size and speed of one classifier folder, and the precision used."""
    corpus = load_classification(cfg.data)
    model, tokenizer = load_classifier(path, corpus.labels)
    rows = subsample(corpus.split(cfg.split), cfg.data.max_eval_examples, seed=0)
    data = TokenizedDataset(rows, tokenizer, cfg.data.max_length)
    size = count_parameters(model)
    precision = "fp32" if cfg.runtime == "onnxruntime" else resolve_precision(cfg.precision,
                                                                                "cpu")
    if cfg.fastest_precision and precision != "fp32":
        precision = fastest_precision(path, corpus.labels, data, precision, cfg.latency_examples)
        model, _ = load_classifier(path, corpus.labels)
    for_inference(model, precision)
    if cfg.runtime == "onnxruntime":
        from textdistill.onnx_export import OnnxClassifier

        model = OnnxClassifier(model)
    metrics = classification_metrics(data.labels,
                                     predict_labels(model, data, cfg.data.eval_batch_size))
    speed = measure_speed(model, data, cfg.latency_examples, cfg.throughput_batches)
    return {**metrics, **size, **speed, "precision": precision}


def fastest_precision(path: str, labels: list[str], data: TokenizedDataset, precision: str,
                      examples: int) -> str:
    """``precision`` or fp32, whichever gives the model at ``path`` the lower batch-1 latency
    (each timed on ``examples`` examples, fp32 first)."""
    latency = {}
    for candidate in ("fp32", precision):
        model, _ = load_classifier(path, labels)
        latency[candidate] = batch1_latency_ms(for_inference(model, candidate), data, examples)
    return min(latency, key=latency.__getitem__)


def display_names(models: list[str]) -> dict[str, str]:
    """How models are named in tables: ``runs/x/student/model`` is ``student`` (the whole path
    where two would share a name)."""
    def short(model: str) -> str:
        path = Path(model)
        return path.parent.name if path.name == "model" and path.parent.name else path.name
    names = [short(m) or m for m in models]
    if len(set(names)) < len(names):
        names = list(models)
    return dict(zip(names, models, strict=True))


def run_evaluate(cfg: EvaluateConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Evaluate models; the first is the reference for retention and speed-up ratios."""
    for path in cfg.models:  # every model is there before any is measured
        resolve_model_path(path)
    save_config(cfg, Path(out_dir) / "config.yaml")
    results = {name: evaluate_model(path, cfg)
               for name, path in display_names(cfg.models).items()}
    ref = results[next(iter(results))]
    for r in results.values():
        r["retention"] = r["accuracy"] / ref["accuracy"] if ref["accuracy"] else float("nan")
        r["size_ratio"] = ref["params"] / r["params"]
        r["speedup_b1"] = ref["latency_ms_b1"] / r["latency_ms_b1"]
    table = {"split": cfg.split, "corpus": cfg.data.corpus or cfg.data.test,
             "precision": "fp32" if cfg.runtime == "onnxruntime"
             else resolve_precision(cfg.precision, "cpu"),
             "runtime": cfg.runtime, "models": results}
    atomic_write_json(Path(out_dir) / "metrics.json", table)
    return table


def format_table(table: dict) -> Table:
    """The teacher-vs-students table for the terminal (classification or translation)."""
    if "pair" in table:
        out = Table(title=f"{table['pair']} {table['split']}")
        # every model's columns (autoregressive: per beam; non-autoregressive: per iteration)
        keys = list(dict.fromkeys(k for r in table["models"].values() for k in r))
        out.add_column("model")
        for key in keys:
            out.add_column(key, justify="right")
        for name, r in table["models"].items():
            out.add_row(name, *["–" if k not in r else f"{r[k]:,}" if isinstance(r[k], int)
                                else f"{r[k]:.2f}" for k in keys])
        return out
    runtime = f" ({table['runtime']})" if table.get("runtime", "torch") != "torch" else ""
    out = Table(title=f"{table['corpus']} {table['split']}{runtime}")
    cols = [("accuracy", "acc", ".4f"), ("macro_f1", "macro-F1", ".4f"), ("mcc", "MCC", ".4f"),
            ("retention", "retention", ".3f"), ("params", "params", ","),
            ("size_ratio", "smaller", ".2f"), ("latency_ms_b1", "ms (b=1)", ".2f"),
            ("speedup_b1", "faster", ".2f"), ("throughput_b32", "ex/s (b=32)", ".0f"),
            ("precision", "precision", "s")]
    out.add_column("model")
    for _, title, _ in cols:
        out.add_column(title, justify="right")
    for name, r in table["models"].items():
        out.add_row(name, *[format(r[key], fmt) if key in r else "–" for key, _, fmt in cols])
    return out


def run_evaluate_mt(cfg: TranslationEvalConfig, out_dir: str | Path, resume: bool = False
                    ) -> dict:
    """BLEU and chrF with each beam size (autoregressive models) or number of mask-predict
    iterations (non-autoregressive ones), parameters and sentences per second, per model."""
    from textdistill.data.parallel import load_pairs
    from textdistill.models.nat import NATModel
    from textdistill.models.seq2seq import load_seq2seq
    from textdistill.seq2seq.generate import translate
    from textdistill.seq2seq.vocab import check_languages

    save_config(cfg, Path(out_dir) / "config.yaml")
    models = display_names(cfg.models)

    pairs = load_pairs(cfg.data.model_copy(update={"targets": None}), cfg.split)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    device = default_device()  # translation models are decoded on the GPU when there is one
    precision = resolve_precision(cfg.precision, device)
    results = {}
    for name, path in models.items():
        check_languages(path, cfg.data.src_lang, cfg.data.tgt_lang)
        model, tokenizer = load_seq2seq(path, device)
        row: dict[str, float] = {"params": count_parameters(model)["params"]}
        for_inference(model, precision)
        if isinstance(model, NATModel):
            settings = {f"t{t}": DecodeConfig(method="greedy", iterations=t,
                                              length_beam=cfg.length_beam,
                                              max_length=cfg.data.max_length)
                        for t in cfg.iterations}
        else:
            settings = {f"b{beam}": DecodeConfig(method="greedy" if beam == 1 else "beam",
                                                 beam=beam, max_length=cfg.data.max_length)
                        for beam in cfg.beams}
        for key, decode in settings.items():
            start = time.perf_counter()
            hyps = translate(model, tokenizer, sources, decode, cfg.data.batch_tokens)
            seconds = time.perf_counter() - start
            scores = corpus_bleu_chrf(hyps, references)
            row.update({f"bleu_{key}": scores["bleu"], f"chrf_{key}": scores["chrf"],
                        f"sent_per_s_{key}": len(sources) / seconds})
        results[name] = row
    table = {"split": cfg.split, "pair": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}",
             "precision": precision, "models": results}
    atomic_write_json(Path(out_dir) / "metrics.json", table)
    return table
