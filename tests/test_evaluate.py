"""Evaluation in each model's faster precision (``fastest_precision``) and in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch
from conftest import LABELS
from test_prune import tiny_classifier_folder, tiny_data

from textdistill import evaluate as evaluate_mod
from textdistill import precision as precision_mod
from textdistill.config import DataConfig, EvaluateConfig, load_config
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import load_classification
from textdistill.errors import UserError
from textdistill.evaluate import predict_labels, run_evaluate
from textdistill.models.classifier import build_student, load_classifier
from textdistill.onnx_export import OnnxClassifier


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


# -- ONNX Runtime ----------------------------------------------------------------------------

def test_onnx_classifier_gives_the_pytorch_logits(tmp_path):
    """Raw logits, padded batches of two lengths included (the export has dynamic axes)."""
    tokenizer, model = tiny_classifier_folder(tmp_path)
    onnx = OnnxClassifier(model)
    for texts in (["the dog sat on a mat", "a cat"], ["a cat sat"]):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            expected = model(**inputs).logits
        got = onnx(**inputs).logits
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_evaluate_in_onnxruntime_matches_pytorch_fp32(tmp_path):
    tiny_classifier_folder(tmp_path)
    common = [f"models=[{tmp_path / 'classifier'}]", *tiny_data(tmp_path), "latency_examples=2",
              "throughput_batches=1"]
    torch_row = run_evaluate(load_config(EvaluateConfig, None, [*common, "precision=fp32"]),
                             tmp_path / "torch")["models"]["classifier"]
    table = run_evaluate(load_config(EvaluateConfig, None, [*common, "runtime=onnxruntime"]),
                         tmp_path / "onnx")
    row = table["models"]["classifier"]
    assert (table["runtime"], table["precision"], row["precision"]) == ("onnxruntime", "fp32",
                                                                         "fp32")
    assert row["accuracy"] == torch_row["accuracy"] and row["params"] == torch_row["params"]
    assert row["latency_ms_b1"] > 0 and row["throughput_b32"] > 0


@pytest.mark.parametrize("setting", ["precision=bf16", "fastest_precision=true"])
def test_onnxruntime_with_a_precision_it_does_not_run(setting):
    with pytest.raises(UserError, match="runtime onnxruntime evaluates in fp32"):
        load_config(EvaluateConfig, None, ["models=[minilm]", "runtime=onnxruntime", setting])


class DataDependent(torch.nn.Module):
    """A classifier whose Python branch on the input values cannot be exported."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)

    def forward(self, input_ids, attention_mask):
        if input_ids.sum().item() > 10:
            return self.linear(input_ids[:, :1].float())
        return self.linear(attention_mask[:, :1].float())


def test_a_model_that_cannot_be_exported_is_a_one_line_error():
    with pytest.raises(UserError, match="could not export the model to ONNX .*runtime torch"):
        OnnxClassifier(DataDependent())


@pytest.mark.slow
def test_onnxruntime_predicts_like_pytorch_on_rotten_tomatoes():
    """A micro-2 student (random start) on 64 real test snippets: the same predictions."""
    minilm, tokenizer = load_classifier("minilm", LABELS)
    torch.manual_seed(0)
    student = build_student("micro-2", minilm, LABELS)
    corpus = load_classification(DataConfig(corpus="rotten-tomatoes", max_length=64))
    data = TokenizedDataset(corpus.split("test")[:64], tokenizer, 64)
    assert predict_labels(OnnxClassifier(student), data, 16) == predict_labels(student, data, 16)
