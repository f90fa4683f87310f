"""Classifier speed by runtime: PyTorch fp32, PyTorch bf16 (weights cast once) and ONNX Runtime
(fp32), for a teacher and its students, in one run.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_classifier_runtimes.py \
        TEACHER STUDENT [STUDENT ...] [--examples 200] [--threads 1]

Median batch-1 latency over the first 100 of ``--examples`` rotten-tomatoes test snippets and
batch-32 throughput over all of them, the ratio to the first model (the teacher) within each
runtime, and whether each runtime's predictions equal PyTorch fp32's. Runtimes alternate model
by model, so a change in the machine's load touches all of them alike.
"""

from __future__ import annotations

import argparse
import platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from textdistill.config import DataConfig
    from textdistill.data.batching import TokenizedDataset
    from textdistill.data.corpora import load_classification, subsample
    from textdistill.evaluate import display_names, measure_speed, predict_labels
    from textdistill.models.classifier import load_classifier
    from textdistill.onnx_export import OnnxClassifier
    from textdistill.precision import for_inference

    torch.set_num_threads(args.threads)
    corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
    rows = subsample(corpus.split("test"), args.examples, seed=0)
    runtimes = {
        "PyTorch fp32": lambda m: m,
        "PyTorch bf16": lambda m: for_inference(m, "bf16"),
        "ONNX Runtime fp32": OnnxClassifier,
    }
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {len(rows)} rotten-tomatoes test snippets")
    results: dict[str, dict[str, dict]] = {}
    models = display_names(args.models)
    for name, path in models.items():
        data = None
        for runtime, wrap in runtimes.items():
            model, tokenizer = load_classifier(path, corpus.labels)
            data = data or TokenizedDataset(rows, tokenizer, 64)
            model = wrap(model.eval())
            speed = measure_speed(model, data, 100, len(rows) // 32 + 1)
            results.setdefault(runtime, {})[name] = {**speed,
                                                     "preds": predict_labels(model, data, 32)}
    print("\n| model | runtime | ms, batch 1 | faster | examples/s, batch 32 | same predictions "
          "as PyTorch fp32 |")
    print("|---|---|---|---|---|---|")
    for runtime, by_model in results.items():
        ref = by_model[next(iter(models))]["latency_ms_b1"]
        for name, r in by_model.items():
            same = sum(a == b for a, b in zip(r["preds"], results["PyTorch fp32"][name]["preds"],
                                              strict=True))
            print(f"| {name} | {runtime} | {r['latency_ms_b1']:.2f} | "
                  f"{ref / r['latency_ms_b1']:.2f}× | {r['throughput_b32']:.0f} | "
                  f"{same} / {len(r['preds'])} |")


if __name__ == "__main__":
    main()
