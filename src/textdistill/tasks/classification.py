"""Sequence classification: logits per example, hidden states, pre-softmax attention scores
and the queries, keys and values behind them, read from unmodified ``transformers``
encoders."""

from __future__ import annotations

from torch import Tensor, nn

from textdistill.losses import ModelShape, TaskOutputs
from textdistill.taps import AttentionTap, hidden_states


class ClassificationTask:
    name = "classification"
    provides = frozenset({"logits", "hidden_states", "attention_scores", "attention_qkv"})

    def __init__(self) -> None:
        self._taps: dict[int, AttentionTap] = {}

    def outputs(self, model: nn.Module, batch: dict[str, Tensor], reads: set[str]
                ) -> TaskOutputs:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")
                  if k in batch}
        tap = None
        if reads & {"attention_scores", "attention_qkv"}:
            tap = self._taps.get(id(model))
            if tap is None:
                tap = self._taps[id(model)] = AttentionTap(model)
        out = model(**inputs, output_hidden_states="hidden_states" in reads)
        return TaskOutputs(
            logits=getattr(out, "logits", None),
            hidden_states=hidden_states(out) if "hidden_states" in reads else None,
            attention_scores=tap.scores() if "attention_scores" in reads else None,
            attention_qkv=tap.qkv() if "attention_qkv" in reads else None,
            attention_mask=batch["attention_mask"],
        )

    def shape(self, model: nn.Module) -> ModelShape:
        c = model.config
        return ModelShape(c.num_hidden_layers, c.hidden_size, c.num_attention_heads)


class EncoderTask(ClassificationTask):
    """General distillation: a bare encoder on unlabeled text gives hidden states and attention
    scores, no logits."""

    name = "general distillation"
    provides = frozenset({"hidden_states", "attention_scores", "attention_qkv"})
