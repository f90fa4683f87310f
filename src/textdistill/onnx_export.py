"""Classifiers in ONNX Runtime: exported by ``torch.onnx`` and run by an ``InferenceSession``,
behind the same call as the PyTorch model, so evaluation measures both the same way.

At batch 1 a small student's time in PyTorch is mostly per-operation overhead (a two-layer
model spends ~1.5 ms where its arithmetic needs microseconds); ONNX Runtime fuses the graph
and dispatches each operation in microseconds, which is how a distilled model is deployed.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from textdistill.errors import UserError

INPUTS = ("input_ids", "attention_mask")


def export_classifier(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model`` (a Hugging Face sequence classifier, fp32) as ONNX to ``path``: inputs
    ``input_ids`` and ``attention_mask`` of any batch size and length, output the logits."""
    path = Path(path)
    example = {name: torch.ones(2, 8, dtype=torch.long) for name in INPUTS}
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    dims = {name: {0: batch, 1: length} for name in INPUTS}
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    try:  # the exporter's warnings are about its own internals, not the user's model
        onnx_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval().float(), (), kwargs=example, f=str(path),
                              dynamic_shapes=dims, dynamo=True, verbose=False,
                              output_names=["logits"])
    except Exception as e:  # the exporter raises many kinds; one line says which model
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not export the model to ONNX ({reason}); evaluate it with "
                        "runtime torch") from e
    finally:
        onnx_log.setLevel(level)
    return path


class OnnxClassifier(torch.nn.Module):
    """An exported classifier in an ONNX Runtime session, called like the PyTorch model
    (``model(input_ids=..., attention_mask=...).logits``); CPU, fp32, as many threads as
    torch uses."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = export_classifier(model, Path(tmp) / "model.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(onnx_path), options,
                                                providers=["CPUExecutionProvider"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feed = {"input_ids": input_ids.cpu().numpy(),
                "attention_mask": attention_mask.cpu().numpy()}
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))
