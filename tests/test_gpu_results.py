"""The GPU run's script end to end at toy scale on the CPU (--smoke), whole and cut short by
its time budget."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_results.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env={**os.environ})


@pytest.mark.slow
def test_smoke_run_fills_the_whole_table(tmp_path, data_root):
    proc = _run("--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "results-gpu.md").read_text()
    assert "not finished" not in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    teachers = [r.split(" | ")[0][2:] for r in rows[1:5]]
    assert teachers == ["tiny", "small", "base", "big"]
    students = [r.split(" | ")[0][2:] for r in rows[6:10]]
    assert students == ["student-gold", "student-wordkd", "student-seqkd", "student-seqinter"]
    nat = [r.split(" | ")[0][2:] for r in rows[11:]]
    assert nat == ["nat-gold (vanilla NAT)", "nat-kd (vanilla NAT)", "cmlm-gold (CMLM)",
                   "cmlm-kd (CMLM)"]
    assert all(float(r.split(" | ")[4]) >= 0 for r in rows[11:])  # BLEU at T=2
    assert all(float(r.split(" | ")[4]) >= 0 for r in rows[1:5])  # BLEU greedy is a number
    assert (tmp_path / "student-seqinter" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_budget_that_runs_out_keeps_what_finished(tmp_path, data_root):
    proc = _run("--run-dir", str(tmp_path), "--budget", "6")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped early" in proc.stdout
    table = (tmp_path / "results-gpu.md").read_text()
    assert "not finished" in table
    assert "Traceback" not in proc.stderr


def test_without_a_gpu_it_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the full run would start")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run-dir", "/nonexistent"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no CUDA GPU here") and proc.stderr.count("\n") == 1
