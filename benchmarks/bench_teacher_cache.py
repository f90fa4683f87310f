"""``recipes/presets.yaml`` (one teacher, four students) end to end with and without cached
teacher outputs.

    .venv/bin/python benchmarks/bench_teacher_cache.py [--rows 2000] [--threads 1]

Runs the recipe twice in this process, each in a fresh run folder and a fresh cache folder,
with every stage's data cut to the first ``--rows`` training rows (the epochs, models and
schedules are the recipe's): once with ``teacher_cache: false`` (the teacher runs in every
student step) and once with the default (its logits computed once and reused by all four
students). Prints the wall time of each run, the ratio, and the test accuracy of every student
in both runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from textdistill.config import Recipe, load_config
    from textdistill.recipe import run_recipe
    from textdistill.teacher_cache import CACHE_ENV

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    results = {}
    for cached in (False, True):
        recipe = load_config(Recipe, ROOT / "recipes" / "presets.yaml")
        for stage in recipe.stages:
            stage.data.max_train_examples = args.rows
            if stage.kind == "distill":
                stage.teacher_cache = cached
        os.environ[CACHE_ENV] = str(work / f"cache-{cached}")
        start = time.perf_counter()
        metrics = run_recipe(recipe, work / f"run-{cached}")
        results[cached] = (time.perf_counter() - start, metrics["evaluate"]["models"])
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.rows} training rows")
    print("| teacher outputs | wall time (s) | " + " | ".join(
        f"{name} acc" for name in results[True][1]) + " |")
    print("|---|---|" + "---|" * len(results[True][1]))
    for cached, (seconds, models) in results.items():
        print(f"| {'cached' if cached else 'teacher in the loop'} | {seconds:.0f} | "
              + " | ".join(f"{m['accuracy']:.4f}" for m in models.values()) + " |")
    print(f"speed-up: {results[False][0] / results[True][0]:.2f}×")


if __name__ == "__main__":
    main()
