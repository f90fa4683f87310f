"""Data-parallel training: ``accelerate launch`` with two CPU processes (gloo).

``accelerate launch --cpu`` starts a single process unless MPI is set up, so the test uses the
torchrun-based launcher (``--multi_gpu``); without CUDA the trainer asks Accelerate for the
CPU, so each rank takes the MULTI_CPU path with the gloo backend (offline, one machine).

What must hold compared with one process on the same settings: the batches of an epoch are
dealt out between the two ranks, so each rank takes half the optimizer steps (and every
gradient is averaged over both ranks' batches); evaluation runs once per epoch on the main
process over the whole dev subset, so the same epochs are evaluated, a single set of logs and
one model are written, and the saved model reproduces the logged dev accuracy. The runs do not
see identical batches (2 x 4 rows per step instead of 4), so the dev accuracy may differ a
little, but both runs start from the same weights and see the same rows for the same number of
epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, cli_command, dev_accuracy, distill_config, free_port, read_jsonl

from textdistill.distill import run_distill

pytestmark = pytest.mark.slow

ARGS = [
    "student.preset=micro-2", "data.max_length=32", "data.max_train_examples=128",
    "data.max_eval_examples=64", "data.batch_size=4",
    "phases=[{name: kd, epochs: 1, optim: {lr: 0.001}, objectives: [{loss: kd, temperature: 2}]}]",
]


def test_two_processes_train_and_evaluate_like_one(tmp_path, teacher):
    args = [f"teacher={teacher}", *ARGS]
    cfg = distill_config(*args)
    single = run_distill(cfg, tmp_path / "one")
    assert single["steps"] == 32  # 128 rows in batches of 4

    out = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
              "--main_process_port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launch, *cli_command("distill", "-o", out, *args)[1:]],
                          capture_output=True, text=True, timeout=420, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == single["steps"] // 2  # two ranks shared the epoch's batches
    assert summary["train_rows"] == single["train_rows"] == 128
    assert (out / "model" / "model.safetensors").is_file()

    records = read_jsonl(out / "logs" / "metrics.jsonl")
    one_records = read_jsonl(tmp_path / "one" / "logs" / "metrics.jsonl")
    train = [r["step"] for r in records if r["kind"] == "train"]
    assert train == [10, 16]  # logged once (by the main process), not once per rank
    evals = [r for r in records if r["kind"] == "eval"]
    one_evals = [r for r in one_records if r["kind"] == "eval"]
    assert [(r["phase"], r["epoch"]) for r in evals] == \
        [(r["phase"], r["epoch"]) for r in one_evals] == [(0, 1)]
    assert evals[0]["step"] == 16
    assert set(evals[0]) == set(one_evals[0])

    best = summary["best_dev"]
    assert best == evals[0]
    # Evaluated on the full dev subset with the model that was saved.
    assert dev_accuracy(out / "model", cfg) == best["accuracy"]
    # Same init, rows and epochs, different batching and dropout: 64 dev rows, a few may flip
    # (at this tiny scale both students often still predict mostly the majority class).
    assert abs(best["accuracy"] - single["best_dev"]["accuracy"]) <= 0.15
