"""The GPU run's script: both parts end to end at toy scale on the CPU (--smoke), whole and cut
short by its time budget, and the bundle it carries to the GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_results.py"
sys.path.insert(0, str(SCRIPT.parent))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--smoke", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT, env={**os.environ})


def _rows(run_dir, part: str, table: str) -> list[list[str]]:
    """Run a part's smoke run into ``run_dir``; the cells of its whole table's data rows."""
    proc = _run("--part", part, "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (run_dir / table).read_text()
    assert "not finished" not in text
    return [line.split(" | ") for line in text.splitlines() if line.startswith("| ")][1:]


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
def test_smoke_encoder_part_fills_its_table(tmp_path, data_root):
    rows = _rows(tmp_path, "encoder", "results-gpu-encoder.md")
    assert [r[0][2:] for r in rows] == ["teacher", "student-nogd", "student-tinybert",
                                       "student-minilm", "student-minilmv2"]
    assert [r[1].split(" ")[0] for r in rows] == ["—", "none", "TinyBERT", "MiniLM", "MiniLMv2"]
    assert all(float(r[2].replace(",", "")) > 0 for r in rows[2:])  # GD tokens/s
    assert all(0 <= float(r[6]) <= 1 for r in rows)  # test accuracy
    # each student really starts from its general student
    import yaml
    for name, general in (("student-minilm", tmp_path / "general-minilm" / "model"),
                          ("student-nogd", None)):
        config = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
        assert config["student"]["init_from"] == (general and str(general))


@pytest.mark.slow
def test_smoke_multimodality_part_fills_its_table(tmp_path, data_root):
    rows = _rows(tmp_path, "multimodality", "results-gpu-multimodality.md")
    assert [r[0][2:] for r in rows] == ["at", "nat", "nat-one", "nat-kd"]
    complexity = [float(r[2]) for r in rows]
    assert complexity[0] == complexity[1] > complexity[2] > 0  # three targets > one per source
    assert all(r[4] == "16" for r in rows)  # test outputs
    assert all(0 <= float(r[5].split(" ")[0]) <= 100 for r in rows)
    assert (tmp_path / "modes" / "language_modes.png").stat().st_size > 0


@pytest.mark.slow
def test_smoke_teachers_part_fills_its_table(tmp_path, data_root):
    rows = _rows(tmp_path, "teachers", "results-gpu-teachers.md")
    assert [r[0][2:] for r in rows] == ["teacher-2m", "teacher-6m", "teacher"]
    assert all(len(r) == 9 and all(cell.strip(" |") for cell in r) for r in rows), rows
    assert all(float(r[3]) > 0 and float(r[5]) > 0 for r in rows)  # C(d), F(d)


@pytest.mark.slow
def test_the_bundle_carries_the_same_data_and_teacher(tmp_path, data_root, monkeypatch):
    """The GPU machine's copies: the same l10n and mono-en bytes, rotten-tomatoes with the
    preset's splits, MiniLM's weights rounded to bf16 (and loaded back as fp32)."""
    import filecmp

    import gpu_results
    import torch

    from textdistill.config import DataConfig, Recipe, validate
    from textdistill.data.corpora import load_classification
    from textdistill.models.classifier import load_encoder

    gpu_results.bundle(tmp_path)
    for part, relative in (("mt", "parallel/l10n.train.tsv.gz"), ("mt", "parallel/l10n.test.tsv"),
                           ("encoder", "mono/en.txt.gz")):
        assert filecmp.cmp(tmp_path / part / relative, data_root / relative, shallow=False)
    original, _ = load_encoder("minilm")
    carried, _ = load_encoder(str(tmp_path / "encoder" / "minilm"))
    for (name, a), (_, b) in zip(carried.state_dict().items(), original.state_dict().items(),
                                 strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b.to(torch.bfloat16).float()), name

    monkeypatch.setenv("TEXTDISTILL_DATA", str(tmp_path / "encoder"))
    stages = gpu_results.encoder_stages(smoke=False)
    validate(Recipe, {"name": "gpu-encoder", "stages": stages})
    assert stages[0]["model"] == str(tmp_path / "encoder" / "minilm")
    bundled = load_classification(DataConfig(**stages[0]["data"]))
    preset = load_classification(DataConfig(corpus="rotten-tomatoes", max_length=64))
    assert bundled.labels == preset.labels
    for split in ("train", "dev", "test"):
        assert bundled.split(split) == preset.split(split)


@pytest.mark.slow
def test_a_budget_that_runs_out_keeps_what_finished(tmp_path, data_root):
    proc = _run("--run-dir", str(tmp_path), "--budget", "2")
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


def test_bundle_without_the_data_says_where_to_point(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--bundle", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "TEXTDISTILL_DATA": str(tmp_path / "none")})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: parallel/l10n.train.tsv.gz is missing")
    assert "TEXTDISTILL_DATA" in proc.stderr and proc.stderr.count("\n") == 1
