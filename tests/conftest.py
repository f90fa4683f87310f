"""Shared fixtures: a tiny teacher fine-tuned once per session, tiny stage settings, helpers.

Everything is sized for a busy 2-core CPU: MiniLM teachers see 64 examples of 32 tokens, the
students are the 2-layer ``micro-2``/``tiny-2`` presets. Corpora are read only through the
project (package corpora, or ``$TEXTDISTILL_DATA`` for l10n/mono).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# One thread per process: on two shared cores, two torch threads per process contend with the
# other jobs and make small matmuls several times slower. Subprocesses inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Cached teacher outputs of this session's runs go to a private folder (subprocesses too).
os.environ.setdefault("TEXTDISTILL_CACHE", tempfile.mkdtemp(prefix="textdistill-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))

from textdistill.config import DistillConfig, FinetuneConfig, load_config  # noqa: E402
from textdistill.paths import DATA_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart.yaml"

TINY_DATA = [
    "data.max_length=32",
    "data.max_train_examples=64",
    "data.max_eval_examples=32",
    "data.batch_size=16",
    "data.eval_batch_size=32",
]
"""Data overrides for a tiny run: 64 training rows in 4 batches, 32 dev rows."""

MICRO = ["student.preset=micro-2", *TINY_DATA]
"""A tiny student run: micro-2 (2 layers, hidden 128, 2 heads) on the tiny data."""


def phases(*objectives: str, epochs: float = 1, name: str = "train", lr: float = 1e-3) -> str:
    """A ``phases=[...]`` override with one phase of the given losses."""
    objs = ", ".join(f"{{loss: {o}}}" for o in objectives)
    return f"phases=[{{name: {name}, epochs: {epochs}, optim: {{lr: {lr}}}, objectives: [{objs}]}}]"


def distill_config(*overrides: str) -> DistillConfig:
    return load_config(DistillConfig, None, list(overrides))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cli_command(*args: str) -> list[str]:
    """The real ``textdistill`` command, run by this interpreter."""
    return [sys.executable, "-m", "textdistill.cli", *map(str, args)]


def run_cli(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a real subprocess (stdout and stderr captured separately)."""
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


LABELS = ["rotten", "fresh"]


def dev_accuracy(model_dir: Path, cfg) -> float:
    """Accuracy of a saved rotten-tomatoes model on a run's dev subset, recomputed from disk."""
    from textdistill.config import DataConfig
    from textdistill.data.batching import TokenizedDataset
    from textdistill.data.corpora import load_classification, subsample
    from textdistill.evaluate import predict_labels
    from textdistill.metrics import classification_metrics
    from textdistill.models.classifier import load_classifier

    model, tokenizer = load_classifier(str(model_dir), LABELS)
    rows = subsample(load_classification(DataConfig(corpus="rotten-tomatoes")).split("dev"),
                     cfg.data.max_eval_examples, cfg.seed)
    data = TokenizedDataset(rows, tokenizer, cfg.data.max_length)
    return classification_metrics(data.labels, predict_labels(model, data, 32))["accuracy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data directory for l10n/mono; skips when ``$TEXTDISTILL_DATA`` is not usable."""
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is unset: point it at the shared data folder "
                    "(../shared/data) to run the l10n/mono tests")
    path = Path(value).expanduser()
    if not (path / "parallel").is_dir() or not (path / "mono").is_dir():
        pytest.skip(f"{DATA_ENV}={value} does not hold parallel/ and mono/: point it at the "
                    "shared data folder (../shared/data) to run the l10n/mono tests")
    return path


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory) -> Path:
    """A MiniLM teacher fine-tuned on 64 rotten-tomatoes rows for one epoch (run folder)."""
    from textdistill.distill import run_finetune

    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config(FinetuneConfig, None, ["model=minilm", "epochs=1", *TINY_DATA])
    run_finetune(cfg, out)
    return out


@pytest.fixture(scope="session")
def teacher(teacher_run) -> Path:
    """The teacher's model folder (a 2-label rotten-tomatoes classifier)."""
    return teacher_run / "model"


@pytest.fixture(scope="session")
def kd_run(tmp_path_factory, teacher) -> tuple[Path, DistillConfig, dict]:
    """A micro-2 student distilled with the kd loss for one epoch: (run folder, config, summary)."""
    from textdistill.distill import run_distill

    out = tmp_path_factory.mktemp("kd")
    cfg = distill_config(f"teacher={teacher}", *MICRO, phases("kd, temperature: 2"))
    summary = run_distill(cfg, out)
    return out, cfg, summary
