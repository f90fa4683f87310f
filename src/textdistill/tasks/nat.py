"""Non-autoregressive translation: the target tokens are masked (all of them for vanilla NAT, a
random number for CMLM) and predicted at once; the losses count the masked positions only, and
the model's length prediction feeds the ``length`` loss."""

from __future__ import annotations

from torch import Tensor, nn

from textdistill.losses import ModelShape, TaskOutputs
from textdistill.models.nat import mask_for_training


class NATTask:
    name = "non-autoregressive seq2seq"
    provides = frozenset({"logits", "length_logits"})

    def __init__(self, masking: str) -> None:
        self.masking = masking

    def outputs(self, model: nn.Module, batch: dict[str, Tensor], reads: set[str]
                ) -> TaskOutputs:
        labels = batch["labels"]
        real = labels != -100
        targets = labels.masked_fill(~real, model.config.pad_token_id)
        decoder_input_ids, predict = mask_for_training(
            targets, real, self.masking, mask_token_id=model.mask_token_id)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    decoder_input_ids=decoder_input_ids, decoder_attention_mask=real)
        length_labels = model.length_classes(batch["attention_mask"].sum(1), real.sum(1))
        return TaskOutputs(logits=out.logits, mask=predict, length_logits=out.length_logits,
                           length_labels=length_labels)

    def shape(self, model: nn.Module) -> ModelShape:
        c = model.config
        return ModelShape(c.decoder_layers, c.d_model, c.heads)
