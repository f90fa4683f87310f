"""The full-size Kim & Rush table on one CUDA GPU, within a time budget (``make gpu-results``).

    make gpu-results                                  # on the GPU machine (see docs/gpu.md)
    .venv/bin/python benchmarks/gpu_results.py --smoke --run-dir /tmp/gpu-smoke   # CPU, toy

On all 105,601 l10n en→de training pairs: a teacher of every preset (``tiny``, ``small``,
``base``, ``big``; epochs per preset in ``EPOCHS``, chosen to fit the budget) with its test
BLEU (greedy and beam 5) and training time, then ``tiny`` students of the ``base`` teacher on
gold data, with word-level KD, on its beam-5 outputs (Seq-KD) and on the k-best hypothesis
closest to the reference (Seq-Inter), and non-autoregressive ``tiny`` students (vanilla NAT
and CMLM, decoded with T mask-predict iterations) on gold and on the Seq-KD corpus. Stages run
in that order as one recipe (the students before the ``big`` teacher, the most expensive
stage, and the NAT students last); when the budget runs out the stage in
flight stops (a checkpoint is saved) and the table holds what finished. Writes the run folder
and ``docs/results-gpu.md`` (``--smoke``: ``RUN_DIR/results-gpu.md``). ``--smoke`` runs the same
script end to end at toy scale (64 pairs, one-layer models of width 32) on the CPU; CI runs it.
Rerunning resumes: finished stages are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = {"tiny": 12, "small": 8, "base": 8, "big": 4}
"""Training epochs per teacher preset on the GPU (students: those of ``base``)."""
STUDENT_TEACHER = "base"
NAT_STUDENTS = {"nat-gold": "all", "nat-kd": "all", "cmlm-gold": "random", "cmlm-kd": "random"}
"""Non-autoregressive students (masking) on gold targets and on the teacher's outputs."""
BUDGET_S = 500
"""Seconds of training and decoding: with start-up and installs the run fits 10 minutes."""


def _settings(smoke: bool) -> dict:
    if smoke:
        return {"data": {"tgt_lang": "de", "max_train_examples": 64, "max_eval_examples": 16,
                         "max_length": 32, "batch_tokens": 512},
                "arch": {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1,
                         "decoder_layers": 1},
                "vocab_size": 400, "epochs": dict.fromkeys(EPOCHS, 1), "beam": 2,
                "iterations": [1, 2],
                "optim": {"lr": 0.001, "warmup_steps": 2, "schedule": "inverse_sqrt"}}
    return {"data": {"tgt_lang": "de", "max_eval_examples": 1000, "batch_tokens": 8192},
            "arch": {}, "vocab_size": 8000, "epochs": EPOCHS, "beam": 5,
            "iterations": [1, 4, 10],
            "optim": {"lr": 0.0007, "warmup_steps": 400, "schedule": "inverse_sqrt"}}


def recipe_stages(smoke: bool) -> list[dict]:
    """The stages, in the order they run."""
    s = _settings(smoke)
    train = {"kind": "train", "data": s["data"], "optim": s["optim"]}
    test = {**s["data"], "max_eval_examples": s["data"].get("max_eval_examples") if smoke
            else None}
    teacher = f"teacher-{STUDENT_TEACHER}"

    def a_teacher(preset: str) -> list[dict]:
        return [{**train, "name": f"teacher-{preset}", "preset": preset, "arch": s["arch"],
                 "vocab_size": s["vocab_size"], "epochs": s["epochs"][preset]},
                {"kind": "evaluate-mt", "name": f"eval-teacher-{preset}",
                 "models": [f"teacher-{preset}"], "data": test, "beams": [1, s["beam"]]}]

    def student(name: str, **extra) -> dict:
        return {**train, "name": name, "preset": "tiny", "arch": s["arch"],
                "epochs": s["epochs"][STUDENT_TEACHER], **extra}

    stages = [*a_teacher("tiny"), *a_teacher("small"), *a_teacher("base")]
    stages += [
        student("student-gold", tokenizer=teacher),
        student("student-wordkd", teacher=teacher, objectives=[
            {"loss": "kd", "alpha": 1.0, "weight": 0.5},
            {"loss": "hard", "smoothing": 0.1, "weight": 0.5}]),
        {"kind": "generate", "name": "distilled", "model": teacher, "data": s["data"],
         "split": "train", "method": "beam", "beam": s["beam"], "num_return": s["beam"]},
        student("student-seqkd", tokenizer=teacher,
                data={**s["data"], "targets": "distilled"}),
        {"kind": "generate", "name": "seqinter", "model": teacher, "data": s["data"],
         "split": "train", "kbest_from": "distilled", "select": "sentence_bleu"},
        student("student-seqinter", tokenizer=teacher,
                data={**s["data"], "targets": "seqinter"}),
        {"kind": "evaluate-mt", "name": "eval-students",
         "models": ["student-gold", "student-wordkd", "student-seqkd", "student-seqinter"],
         "data": test, "beams": [1, s["beam"]]},
        *a_teacher("big"),
    ]
    for name, masking in NAT_STUDENTS.items():  # non-autoregressive students, last
        nat = {"masking": masking} | ({"decoder_input": "copy"} if masking == "all" else {})
        data = {**s["data"], "targets": "distilled"} if name.endswith("-kd") else s["data"]
        stages.append(student(name, tokenizer=teacher, nat=nat, data=data))
    stages.append({"kind": "evaluate-mt", "name": "eval-nat", "models": list(NAT_STUDENTS),
                   "data": test, "iterations": s["iterations"]})
    return stages


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def results_table(run_dir: Path, smoke: bool) -> str:
    """``results-gpu.md``: what finished, with the settings it finished under."""
    s = _settings(smoke)
    beam = s["beam"]
    info = _read(run_dir / "teacher-tiny" / "run.json") or {}
    lines = ["# Kim & Rush on one GPU: every teacher preset, and students of the "
             f"`{STUDENT_TEACHER}` teacher", "",
             "Written by `benchmarks/gpu_results.py`" + (" --smoke (toy scale, CPU)" if smoke
                                                          else "") + f" on "
             f"{(info.get('machine') or {}).get('cuda') or 'CPU'}, precision "
             f"{info.get('precision', '?')}, torch {(info.get('packages') or {}).get('torch')}. "
             "l10n en→de: all training pairs" + (" (smoke: 64)" if smoke else "") +
             "; test BLEU/chrF (sacreBLEU) on the test split"
             + (" (smoke: 16 sentences)" if smoke else "") + ". Stages missing below did not "
             "finish within the time budget.", "",
             f"| teacher | params | epochs | train time (s) | BLEU greedy | BLEU beam {beam} | "
             f"chrF beam {beam} |", "|---|---|---|---|---|---|---|"]
    for preset in EPOCHS:
        trained = _read(run_dir / f"teacher-{preset}" / "metrics.json")
        table = _read(run_dir / f"eval-teacher-{preset}" / "metrics.json")
        if trained is None or table is None:
            lines.append(f"| {preset} | — | {s['epochs'][preset]} | not finished | | | |")
            continue
        row = next(iter(table["models"].values()))
        lines.append(f"| {preset} | {row['params']:,} | {s['epochs'][preset]} | "
                     f"{trained['train_seconds']:.0f} | {row['bleu_b1']:.2f} | "
                     f"{row[f'bleu_b{beam}']:.2f} | {row[f'chrf_b{beam}']:.2f} |")
    lines += ["", f"| student (`tiny`, {s['epochs'][STUDENT_TEACHER]} epochs) | trained on | "
                  f"train time (s) | BLEU greedy | BLEU beam {beam} | sentences/s greedy |",
              "|---|---|---|---|---|---|"]
    about = {"student-gold": "gold targets", "student-wordkd": "gold + word-level KD",
             "student-seqkd": f"teacher's beam-{beam} outputs (Seq-KD)",
             "student-seqinter": "k-best closest to the reference (Seq-Inter)"}
    table = _read(run_dir / "eval-students" / "metrics.json")
    for name, data in about.items():
        trained = _read(run_dir / name / "metrics.json")
        if table is None or trained is None or name not in table["models"]:
            lines.append(f"| {name} | {data} | not finished | | | |")
            continue
        row = table["models"][name]
        lines.append(f"| {name} | {data} | {trained['train_seconds']:.0f} | "
                     f"{row['bleu_b1']:.2f} | {row[f'bleu_b{beam}']:.2f} | "
                     f"{row['sent_per_s_b1']:.0f} |")
    steps = s["iterations"]
    lines += ["", f"| NAT student (`tiny`, {s['epochs'][STUDENT_TEACHER]} epochs) | trained on | "
                  "train time (s) | " + " | ".join(f"BLEU T={t}" for t in steps)
              + f" | sentences/s T={steps[0]} |", "|---|---|---|" + "---|" * (len(steps) + 1)]
    table = _read(run_dir / "eval-nat" / "metrics.json")
    for name, masking in NAT_STUDENTS.items():
        kind = "vanilla NAT" if masking == "all" else "CMLM"
        data = "teacher's outputs" if name.endswith("-kd") else "gold targets"
        trained = _read(run_dir / name / "metrics.json")
        if table is None or trained is None or name not in table["models"]:
            lines.append(f"| {name} ({kind}) | {data} | not finished |" + " |" * (len(steps) + 1))
            continue
        row = table["models"][name]
        lines.append(f"| {name} ({kind}) | {data} | {trained['train_seconds']:.0f} | "
                     + " | ".join(f"{row[f'bleu_t{t}']:.2f}" for t in steps)
                     + f" | {row[f'sent_per_s_t{steps[0]}']:.0f} |")
    decoded = _read(run_dir / "distilled" / "metrics.json")
    if decoded is not None and "seconds" in decoded:
        lines += ["", f"The `{STUDENT_TEACHER}` teacher decoded {decoded['sources']:,} training "
                      f"sources with beam {beam} in {decoded['seconds']:.0f} s; its outputs score "
                      f"{decoded.get('bleu_vs_real', float('nan')):.2f} BLEU against the real "
                      "targets."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="Toy scale on the CPU.")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "gpu-results")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="Seconds before the stage in flight is stopped.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from textdistill.config import Recipe, validate
    from textdistill.errors import UserError
    from textdistill.recipe import run_recipe

    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA GPU here: run on a GPU machine, or add --smoke for the toy run "
              "on the CPU", file=sys.stderr)
        return 2
    recipe = validate(Recipe, {"name": "gpu-results", "stages": recipe_stages(args.smoke)})
    timer = threading.Timer(args.budget, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    stopped = None
    try:
        run_recipe(recipe, args.run_dir, resume=True)
    except (UserError, KeyboardInterrupt) as exc:  # the budget ran out (or a stage failed)
        stopped = str(exc) or "interrupted"
    finally:
        timer.cancel()
    out = args.run_dir / "results-gpu.md" if args.smoke else ROOT / "docs" / "results-gpu.md"
    from textdistill.paths import atomic_write_text

    atomic_write_text(out, results_table(args.run_dir, args.smoke))
    print(f"wrote {out} after {time.perf_counter() - started:.0f} s"
          + (f"; stopped early: {stopped}" if stopped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
