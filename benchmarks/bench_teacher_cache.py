"""``recipes/presets.yaml`` (one teacher, four students) end to end with and without cached
teacher outputs.

    .venv/bin/python benchmarks/bench_teacher_cache.py [--rows N] [--threads 1] [--parallel]

Runs the recipe twice, each in a fresh process, run folder and cache folder: once with
``teacher_cache: false`` (the teacher runs in every student step) and once with the default
(its logits computed once and reused by all four students). ``--rows N`` cuts every stage's
training data to its first N rows (default: all; epochs, models and schedules are the
recipe's). ``--parallel`` runs the two arms side by side (give each one thread then), so that
both see the same machine. Prints the wall time of each run, the ratio, and
the test accuracy of every model in both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"live": False, "cached": True}
"""Arm name → ``teacher_cache`` of the distill stages."""


def run_arm(arm: str, rows: int | None, work: Path) -> None:
    """One run of the recipe; writes ``work/<arm>.json`` with its wall time and metrics."""
    from textdistill.config import Recipe, load_config
    from textdistill.recipe import run_recipe
    from textdistill.teacher_cache import CACHE_ENV

    recipe = load_config(Recipe, ROOT / "recipes" / "presets.yaml")
    for stage in recipe.stages:
        if rows:
            stage.data.max_train_examples = rows
        if stage.kind == "distill":
            stage.teacher_cache = ARMS[arm]
    os.environ[CACHE_ENV] = str(work / f"cache-{arm}")
    start = time.perf_counter()
    metrics = run_recipe(recipe, work / f"run-{arm}")
    seconds = time.perf_counter() - start
    (work / f"{arm}.json").write_text(json.dumps(
        {"seconds": seconds, "models": metrics["evaluate"]["models"],
         "train_seconds": {k: v.get("train_seconds") for k, v in metrics.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.arm:
        import torch
        torch.set_num_threads(args.threads)
        run_arm(args.arm, args.rows, args.work)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def launch(arm: str) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--arm", arm, "--work", str(work),
               "--threads", str(args.threads)] + (["--rows", str(args.rows)] if args.rows else [])
        return subprocess.Popen(cmd, env=env)

    if args.parallel:
        procs = [launch(arm) for arm in ARMS]
        codes = [p.wait() for p in procs]
    else:
        codes = [launch(arm).wait() for arm in ARMS]
    if any(codes):
        sys.exit(f"an arm failed (exit codes {codes}); its output is above")
    results = {arm: json.loads((work / f"{arm}.json").read_text()) for arm in ARMS}
    import torch
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s) per run, {'side by side' if args.parallel else 'one by one'}"
          f", {args.rows or 'all'} training rows")
    names = list(results["cached"]["models"])
    print("| teacher outputs | wall time (s) | " + " | ".join(f"{n} acc" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for arm, label in (("live", "teacher in the loop"), ("cached", "cached")):
        r = results[arm]
        print(f"| {label} | {r['seconds']:.0f} | "
              + " | ".join(f"{r['models'][n]['accuracy']:.4f}" for n in names) + " |")
    for arm in ARMS:
        print(f"{arm} training seconds per stage: {results[arm]['train_seconds']}")
    print(f"speed-up: {results['live']['seconds'] / results['cached']['seconds']:.2f}×")


if __name__ == "__main__":
    main()
