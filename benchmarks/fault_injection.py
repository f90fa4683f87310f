"""Kill a tiny distillation with SIGKILL at every crash point, resume it, and check that each
resumed run ends bit-identical to an uninterrupted one.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/fault_injection.py \
        [--work DIR] [--teacher MODEL_DIR] [--only SUBSTRING] [--max-points N]

The run is ``textdistill distill`` (a micro-2 student, kd from a MiniLM teacher fine-tuned on
64 rotten-tomatoes rows, 2 epochs of 4 steps) in real processes. An uninterrupted run lists
every crash point it passes (``TEXTDISTILL_CRASH_LOG``, see ``textdistill.faults``): each
training step, each file written atomically, each stage of every checkpoint and model save
(weights written, best model written, the renames that swap a new version in). For each point
a fresh run is killed there (``TEXTDISTILL_CRASH_AT``), then checked:

- after the kill: no output that looks finished but is not (``model/`` and ``metrics.json``
  appear only as the final ones);
- after ``--resume``: the model folder equals the uninterrupted run's byte for byte, and so do
  ``metrics.json`` (but its timings) and ``logs/metrics.jsonl``; no leftovers of interrupted
  writes remain.

Prints one line per point and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMINGS = ("train_seconds", "train_examples_per_second", "teacher_cache")
"""metrics.json keys that say how long a run took or whether it found the teacher's outputs
cached; the rest must match."""
DATA = ["data.max_length=32", "data.max_train_examples=64", "data.max_eval_examples=32",
        "data.batch_size=16", "data.eval_batch_size=32"]
STUDENT = ["student.preset=micro-2", "phases=[{name: kd, epochs: 2, optim: {lr: 0.001}, "
           "objectives: [{loss: kd, temperature: 2}]}]"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **extra}
    for name in ("TEXTDISTILL_CRASH_AT", "TEXTDISTILL_CRASH_LOG"):
        if name not in extra:
            env.pop(name, None)
    return env


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; ``TEXTDISTILL_CACHE`` (cached teacher outputs) is a folder
    beside the output folder, so a run that builds the cache is killed inside that too."""
    return subprocess.run([sys.executable, "-m", "textdistill.cli", *map(str, args)],
                          capture_output=True, text=True, env=_env(**env), timeout=900)


def make_teacher(work: Path) -> Path:
    """A MiniLM teacher fine-tuned for one epoch on the tiny data (not killed)."""
    out = work / "teacher"
    if not (out / "model" / "config.json").is_file():
        proc = _cli("finetune", "-o", out, "--overwrite", "model=minilm", "epochs=1", *DATA)
        if proc.returncode:
            raise SystemExit(f"teacher fine-tuning failed: {proc.stderr.strip()}")
    return out / "model"


def distill_args(teacher: Path, out: Path) -> list[str]:
    return ["distill", "-o", str(out), f"teacher={teacher}", *STUDENT, *DATA]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metrics(out: Path) -> dict:
    data = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in data.items() if k not in TIMINGS}


def leftovers(out: Path) -> list[str]:
    """Hidden files and folders that interrupted writes leave (the lock files excepted)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*")
                  if not p.name.startswith(".textdistill.lock"))


def reference_run(teacher: Path, work: Path) -> tuple[Path, list[str]]:
    """The uninterrupted run, and every crash point it passed (``NAME:N``) in order."""
    out, log = work / "reference", work / "crash-points.txt"
    log.unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "reference-cache", ignore_errors=True)
    proc = _cli(*distill_args(teacher, out), TEXTDISTILL_CRASH_LOG=str(log),
                TEXTDISTILL_CACHE=str(work / "reference-cache"))
    if proc.returncode:
        raise SystemExit(f"the uninterrupted run failed: {proc.stderr.strip()}")
    return out, log.read_text(encoding="utf-8").splitlines()


def kill_and_resume(teacher: Path, reference: Path, out: Path, point: str) -> list[str]:
    """Kill a fresh run at ``point``, check what it left, resume it, compare; the problems."""
    shutil.rmtree(out, ignore_errors=True)
    cache = str(out.with_name(out.name + "-cache"))
    shutil.rmtree(cache, ignore_errors=True)
    killed = _cli(*distill_args(teacher, out), TEXTDISTILL_CRASH_AT=point, TEXTDISTILL_CACHE=cache)
    if killed.returncode != -signal.SIGKILL:
        return [f"not killed (exit {killed.returncode}): {killed.stderr.strip()[-300:]}"]
    problems = []
    ref_model = files(reference / "model")
    if (out / "model").exists() and files(out / "model") != ref_model:
        problems.append("after the kill, model/ exists but is not the final model")
    if (out / "metrics.json").exists() and (
            not (out / "model").exists() or metrics(out) != metrics(reference)):
        problems.append("after the kill, metrics.json exists before the run finished")
    resumed = _cli(*distill_args(teacher, out), "--resume", TEXTDISTILL_CACHE=cache)
    if resumed.returncode:
        return [*problems, f"--resume failed (exit {resumed.returncode}): "
                           f"{resumed.stderr.strip()[-300:]}"]
    if files(out / "model") != ref_model:
        different = sorted(k for k, v in files(out / "model").items() if ref_model.get(k) != v)
        problems.append(f"model differs from the uninterrupted run's: {different}")
    if metrics(out) != metrics(reference):
        problems.append("metrics.json differs from the uninterrupted run's")
    if (out / "logs" / "metrics.jsonl").read_text() != (
            reference / "logs" / "metrics.jsonl").read_text():
        problems.append("logs/metrics.jsonl differs from the uninterrupted run's")
    if leftovers(out):
        problems.append(f"leftovers of interrupted writes: {leftovers(out)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, help="Work folder (default: a temporary one).")
    parser.add_argument("--teacher", type=Path, help="A fine-tuned teacher's model folder "
                        "(default: fine-tune one on the tiny data).")
    parser.add_argument("--only", default="", help="Only points whose name contains this.")
    parser.add_argument("--max-points", type=int, help="At most this many points, spread "
                        "evenly over the run.")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="textdistill-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teacher = args.teacher or make_teacher(work)
    reference, points = reference_run(teacher, work)
    chosen = [p for p in points if args.only in p]
    if args.max_points and len(chosen) > args.max_points:
        step = len(chosen) / args.max_points
        chosen = [chosen[int(i * step)] for i in range(args.max_points)]
    print(f"{len(points)} crash points in the uninterrupted run; killing at {len(chosen)}",
          flush=True)
    failed = 0
    for i, point in enumerate(chosen):
        problems = kill_and_resume(teacher, reference, work / "killed", point)
        failed += bool(problems)
        print(f"[{i + 1}/{len(chosen)}] {point}: {'; '.join(problems) or 'ok'}", flush=True)
    print(f"{len(chosen) - failed} of {len(chosen)} kill points resumed bit-identical with no "
          f"stale or mixed outputs ({time.perf_counter() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
