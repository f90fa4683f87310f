"""Sequence-to-sequence (translation): token logits over the target, masked to real tokens,
so word-level KD is ``kd`` on the token mask and label-smoothed NLL is ``hard`` with
smoothing."""

from __future__ import annotations

from torch import Tensor, nn

from textdistill.losses import ModelShape, TaskOutputs


class Seq2SeqTask:
    name = "seq2seq"
    provides = frozenset({"logits"})

    def outputs(self, model: nn.Module, batch: dict[str, Tensor], reads: set[str]
                ) -> TaskOutputs:
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=labels)
                       ).logits
        return TaskOutputs(logits=logits, mask=labels != -100)

    def shape(self, model: nn.Module) -> ModelShape:
        c = model.config
        return ModelShape(c.decoder_layers, c.d_model, c.decoder_attention_heads)
