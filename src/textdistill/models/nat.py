"""Non-autoregressive translation: vanilla NAT (Gu et al. 2018) and CMLM mask-predict
(Ghazvininejad et al. 2019), as a Hugging Face ``PreTrainedModel``.

The encoder is the Transformer encoder of the autoregressive presets (post-norm, ReLU,
sinusoidal positions, embeddings scaled by sqrt(d_model)).  The decoder sees every target
position at once: non-causal self-attention plus cross-attention to the encoder.  Its inputs
are token embeddings, where masked positions hold a model-internal [MASK] token (row
``vocab_size`` of the one shared embedding, never predicted) or, with ``decoder_input="copy"``,
the embedding of the source token at the same relative position ("uniform copy").  The target
length is a class: the offset target length - source length, clamped to [-M, M] with
M = ``max_length_offset``, predicted from the mean of the encoder states.

Training masks targets with :func:`mask_for_training` ("all" for vanilla NAT, "random" for
CMLM); :func:`mask_predict` decodes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.utils import ModelOutput

from textdistill.errors import UserError
from textdistill.models.seq2seq import Seq2SeqPreset, get_preset

DECODER_INPUTS = ("mask", "copy")
MASK_MODES = ("all", "random")


@strict
class NATConfig(PreTrainedConfig):
    """The shape of a :class:`NATModel`; ``decoder_input`` is "mask" or "copy"."""

    model_type = "textdistill-nat"

    vocab_size: int = 8000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    heads: int = 8
    ffn_dim: int = 2048
    dropout: float | int = 0.1
    max_positions: int = 512
    pad_token_id: int = 0
    eos_token_id: int = 1
    max_length_offset: int = 20
    decoder_input: str = "mask"

    def __post_init__(self, **kwargs):
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"unknown decoder_input {self.decoder_input!r}; "
                             f"use one of {', '.join(DECODER_INPUTS)}")
        super().__post_init__(**kwargs)


@dataclass
class NATOutput(ModelOutput):
    """Token logits (B, T, vocab_size) and target-length logits (B, 2M+1)."""

    logits: torch.Tensor | None = None
    length_logits: torch.Tensor | None = None


def sinusoids(positions: int, dim: int) -> torch.Tensor:
    """The fixed (positions, dim) position table of the Marian presets: sines, then cosines."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angles = pos / 10000 ** (2 * (j // 2) / dim)
    return torch.cat([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=1).float()


class SinusoidalPositions(nn.Module):
    """Sinusoidal position embeddings (a buffer, not saved and not trained)."""

    def __init__(self, positions: int, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoids(positions, dim), persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        if length > len(self.table):
            raise UserError(f"a sequence of {length} tokens is longer than the model's "
                            f"max_positions {len(self.table)}; shorten or filter the data")
        return self.table[:length]


class NATModel(PreTrainedModel):
    """A non-autoregressive encoder-decoder Transformer with a target-length predictor."""

    config_class = NATConfig
    base_model_prefix = "nat"
    main_input_name = "input_ids"

    def __init__(self, config: NATConfig):
        super().__init__(config)
        d = config.d_model
        self.embed_tokens = nn.Embedding(config.vocab_size + 1, d, padding_idx=config.pad_token_id)
        self.embed_positions = SinusoidalPositions(config.max_positions, d)
        self.dropout = nn.Dropout(config.dropout)
        shape = dict(d_model=d, nhead=config.heads, dim_feedforward=config.ffn_dim,
                     dropout=config.dropout, activation="relu", batch_first=True, norm_first=False)
        self.encoder_layers = nn.ModuleList(
            nn.TransformerEncoderLayer(**shape) for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(
            nn.TransformerDecoderLayer(**shape) for _ in range(config.decoder_layers))
        self.length_head = nn.Linear(d, 2 * config.max_length_offset + 1)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, SinusoidalPositions):
            init.copy_(module.table, sinusoids(*module.table.shape))
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=self.config.d_model ** -0.5)
            init.zeros_(module.weight[self.config.pad_token_id])
        else:
            super()._init_weights(module)

    @property
    def mask_token_id(self) -> int:
        """The model-internal [MASK] token: the row after the vocabulary."""
        return self.config.vocab_size

    def _scaled(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(ids) * math.sqrt(self.config.d_model)

    def _with_positions(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.embed_positions(x.shape[1]))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, S, D) of the source."""
        x = self._with_positions(self._scaled(input_ids))
        pad = ~attention_mask.bool()
        for layer in self.encoder_layers:
            x = layer(x, src_key_padding_mask=pad)
        return x

    def length_logits(self, encoder_states: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2M+1) of the length classes, from the mean of the real source states."""
        real = attention_mask.to(encoder_states.dtype)[..., None]
        mean = (encoder_states * real).sum(1) / real.sum(1).clamp(min=1)
        return self.length_head(mean)

    def decoder_inputs(self, decoder_input_ids: torch.Tensor, target_mask: torch.Tensor,
                       input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings (B, T, D) of the decoder input (positions not yet added).

        With ``decoder_input="copy"`` a position j holding [MASK] gets the embedding of source
        token floor(j * S_b / T_b) instead (S_b, T_b: the real lengths of row b).
        """
        x = self._scaled(decoder_input_ids)
        if self.config.decoder_input == "copy":
            src_len = attention_mask.sum(1, keepdim=True)
            tgt_len = target_mask.sum(1, keepdim=True).clamp(min=1)
            j = torch.arange(decoder_input_ids.shape[1], device=x.device)[None]
            index = (j * src_len // tgt_len).clamp(max=input_ids.shape[1] - 1)
            copied = self._scaled(input_ids.gather(1, index))
            x = torch.where((decoder_input_ids == self.mask_token_id)[..., None], copied, x)
        return x

    def decode(self, encoder_states: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor,
               decoder_attention_mask: torch.Tensor) -> torch.Tensor:
        """Token logits (B, T, vocab_size) for every target position at once."""
        x = self._with_positions(self.decoder_inputs(
            decoder_input_ids, decoder_attention_mask, input_ids, attention_mask))
        tgt_pad, src_pad = ~decoder_attention_mask.bool(), ~attention_mask.bool()
        for layer in self.decoder_layers:
            x = layer(x, encoder_states, tgt_key_padding_mask=tgt_pad,
                      memory_key_padding_mask=src_pad)
        return F.linear(x, self.embed_tokens.weight[: self.config.vocab_size])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor, decoder_attention_mask: torch.Tensor) -> NATOutput:
        states = self.encode(input_ids, attention_mask)
        return NATOutput(
            logits=self.decode(states, input_ids, attention_mask, decoder_input_ids,
                               decoder_attention_mask),
            length_logits=self.length_logits(states, attention_mask),
        )

    def length_classes(self, src_lengths: torch.Tensor, tgt_lengths: torch.Tensor) -> torch.Tensor:
        """The length class of each pair: target - source length + M, clamped to [0, 2M]."""
        m = self.config.max_length_offset
        return (tgt_lengths - src_lengths + m).clamp(0, 2 * m).long()

    def lengths_from_classes(self, src_lengths: torch.Tensor,
                             classes: torch.Tensor) -> torch.Tensor:
        """The target lengths that ``classes`` stand for (at least 1)."""
        return (src_lengths + classes - self.config.max_length_offset).clamp(min=1).long()


AutoConfig.register(NATConfig.model_type, NATConfig)
AutoModelForSeq2SeqLM.register(NATConfig, NATModel)  # so that load_seq2seq reads NAT folders


def build_nat(preset: str | Seq2SeqPreset, tokenizer, *, seed: int | None = None,
              decoder_input: str = "mask", **overrides) -> NATModel:
    """A randomly initialised :class:`NATModel` of ``preset`` sized to ``tokenizer``;
    ``overrides`` replace preset fields or config keys (e.g. ``max_length_offset``)."""
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise UserError("the tokenizer needs <pad> and </s> tokens; train it with train_tokenizer")
    if decoder_input not in DECODER_INPUTS:
        raise UserError(f"unknown decoder_input {decoder_input!r}; "
                        f"use one of {', '.join(DECODER_INPUTS)}")
    shape = asdict(get_preset(preset))
    shape.update(overrides)
    if shape["d_model"] % shape["heads"]:
        raise UserError(f"d_model {shape['d_model']} is not divisible by heads {shape['heads']}")
    config = NATConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, decoder_input=decoder_input, **shape)
    if seed is not None:
        torch.manual_seed(seed)
    return NATModel(config)


def _lowest(scores: torch.Tensor, allowed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool (N, T): the ``counts[i]`` lowest-scoring allowed positions of each row i."""
    order = scores.masked_fill(~allowed, math.inf).argsort(dim=1, stable=True)
    return (order.argsort(dim=1) < counts[:, None]) & allowed


def mask_for_training(targets: torch.Tensor, target_mask: torch.Tensor, mode: str, *,
                      mask_token_id: int, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(decoder_input_ids, predict_mask)`` for a batch of gold ``targets`` (B, T).

    ``mode="all"`` masks every real position (vanilla NAT); ``"random"`` (CMLM) draws n
    uniformly in 1..T_b per row and masks n random real positions.  Masked positions hold
    ``mask_token_id``; ``predict_mask`` marks them (the positions whose loss counts).
    """
    if mode not in MASK_MODES:
        raise UserError(f"unknown masking mode {mode!r}; use one of {', '.join(MASK_MODES)}")
    real = target_mask.bool()
    if mode == "all":
        predict = real
    else:
        lengths = real.sum(1)
        draw = torch.rand(lengths.shape, generator=generator, device=targets.device)
        counts = torch.minimum((draw * lengths).long() + 1, lengths)
        scores = torch.rand(real.shape, generator=generator, device=targets.device)
        predict = _lowest(scores, real, counts)
    return targets.masked_fill(predict, mask_token_id), predict


def remask_counts(lengths: torch.Tensor, iteration: int, iterations: int) -> torch.Tensor:
    """How many tokens mask-predict re-masks at ``iteration`` (1..iterations-1; 0 is the first
    pass): floor(T * (iterations - iteration) / iterations) for each length T."""
    return lengths * (iterations - iteration) // iterations


@torch.no_grad()
def mask_predict(model: NATModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                 iterations: int = 1, length_beam: int = 1,
                 max_length: int = 256) -> list[tuple[list[int], float]]:
    """Translate a batch by mask-predict; ``iterations=1`` is vanilla NAT decoding.

    Each source gets its ``length_beam`` most probable lengths (clamped to [1, max_length] and
    to the model's ``max_positions``).  Every candidate is first predicted in full; each later
    iteration re-masks its lowest-probability tokens (a linearly shrinking number, see
    :func:`remask_counts`) and predicts them again.  <pad> is never predicted.  Returns per
    source ``(ids, mean log-probability)`` of its best candidate.  Put the model in eval mode
    first (dropout stays as the model's mode has it).
    """
    if iterations < 1:
        raise UserError(f"mask_predict needs iterations >= 1, got {iterations}")
    if length_beam < 1:
        raise UserError(f"mask_predict needs length_beam >= 1, got {length_beam}")
    if max_length < 1:
        raise UserError(f"mask_predict needs max_length >= 1, got {max_length}")
    cfg = model.config
    states = model.encode(input_ids, attention_mask)
    length_logits = model.length_logits(states, attention_mask)
    beam = min(length_beam, length_logits.shape[1])
    classes = length_logits.topk(beam, dim=1).indices
    lengths = model.lengths_from_classes(attention_mask.sum(1, keepdim=True), classes)
    lengths = lengths.clamp(max=min(max_length, cfg.max_positions)).flatten()
    states, input_ids, attention_mask = (
        t.repeat_interleave(beam, dim=0) for t in (states, input_ids, attention_mask))
    real = torch.arange(int(lengths.max()), device=lengths.device)[None] < lengths[:, None]
    tokens = torch.full(real.shape, cfg.pad_token_id, device=real.device).masked_fill(
        real, model.mask_token_id)
    scores = torch.zeros(real.shape, device=real.device)
    masked = real
    for t in range(iterations):
        if t:
            masked = _lowest(scores, real, remask_counts(lengths, t, iterations))
            if not masked.any():
                continue
            tokens = tokens.masked_fill(masked, model.mask_token_id)
        logits = model.decode(states, input_ids, attention_mask, tokens, real).float()
        logits[..., cfg.pad_token_id] = -math.inf
        best, predicted = logits.log_softmax(-1).max(-1)
        tokens = torch.where(masked, predicted, tokens)
        scores = torch.where(masked, best, scores)
    mean = (scores * real).sum(1) / lengths
    rows = mean.view(-1, beam).argmax(1) + torch.arange(0, len(mean), beam, device=mean.device)
    return [(tokens[r, : lengths[r]].tolist(), mean[r].item()) for r in rows.tolist()]
