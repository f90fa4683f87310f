"""Evaluation in each model's faster precision (``fastest_precision``)."""

from __future__ import annotations

import pytest
import torch
from test_prune import tiny_classifier_folder, tiny_data

from textdistill import evaluate as evaluate_mod
from textdistill import precision as precision_mod
from textdistill.config import EvaluateConfig, load_config
from textdistill.evaluate import run_evaluate


def evaluate_tiny(tmp_path, monkeypatch, faster: str | None, *settings: str) -> tuple[dict, list]:
    """Evaluate the tiny classifier with bf16 available and batch-1 latency faked: 1 ms in the
    ``faster`` dtype, 2 ms in the other; returns its row and the dtypes timed, in order."""
    tiny_classifier_folder(tmp_path)
    monkeypatch.setattr(precision_mod, "cpu_has_bf16", lambda: True)
    timed = []

    def fake_latency(model, dataset, examples):
        dtype = next(model.parameters()).dtype
        timed.append(dtype)
        return 1.0 if dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}.get(faster) else 2.0

    monkeypatch.setattr(evaluate_mod, "batch1_latency_ms", fake_latency)
    cfg = load_config(EvaluateConfig, None, [
        f"models=[{tmp_path / 'classifier'}]", *tiny_data(tmp_path), "latency_examples=1",
        "throughput_batches=1", *settings])
    return run_evaluate(cfg, tmp_path / "out")["models"]["classifier"], timed


@pytest.mark.parametrize(("faster", "dtype"), [("fp32", torch.float32),
                                               ("bf16", torch.bfloat16)])
def test_fastest_precision_times_both_and_evaluates_in_the_faster(tmp_path, monkeypatch, faster,
                                                                  dtype):
    row, timed = evaluate_tiny(tmp_path, monkeypatch, faster, "fastest_precision=true")
    assert timed == [torch.float32, torch.bfloat16, dtype]  # fp32, bf16, then the measurement
    assert row["precision"] == faster
    assert row["latency_ms_b1"] == 1.0


def test_without_the_option_the_configured_precision_is_used_and_recorded(tmp_path, monkeypatch):
    row, timed = evaluate_tiny(tmp_path, monkeypatch, "fp32")
    assert timed == [torch.bfloat16]  # auto is bf16 here, even though fp32 would be faster
    assert row["precision"] == "bf16"


def test_fastest_precision_with_fp32_times_nothing_more(tmp_path, monkeypatch):
    row, timed = evaluate_tiny(tmp_path, monkeypatch, "bf16", "fastest_precision=true",
                               "precision=fp32")
    assert timed == [torch.float32]
    assert row["precision"] == "fp32"
