"""Autoregressive Transformer teachers and students as Hugging Face Marian models.

A preset fixes the shape of an encoder-decoder Transformer (Vaswani et al. 2017: post-norm,
ReLU, sinusoidal positions, embeddings scaled by sqrt(d_model)); the vocabulary comes
from the tokenizer.  Encoder, decoder and output layer share one embedding matrix.  The
models are ``transformers.MarianMTModel``, so ``generate()``, ``save_pretrained`` and
``from_pretrained`` work as usual.

Also here: saving and loading a model folder with its tokenizer and language pair,
initialising a student from a teacher's layers, checkpoint averaging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from textdistill.errors import UserError
from textdistill.models.common import (
    check_model_folder,
    check_vocabulary,
    copy_teacher_layers,
    save_pretrained_atomic,
)
from textdistill.seq2seq.vocab import META_FILE, load_tokenizer, read_meta


@dataclass(frozen=True)
class Seq2SeqPreset:
    """The shape of an encoder-decoder Transformer."""

    d_model: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    ffn_dim: int
    dropout: float = 0.1
    max_positions: int = 512


PRESETS: dict[str, Seq2SeqPreset] = {
    # Parameter counts at an 8,000-token vocabulary: tiny 13.1M, small 35.6M, base 48.2M,
    # big 184.5M (16,000 tokens: 15.2M, 39.7M, 52.3M, 192.7M); see docs/seq2seq.md.
    "tiny": Seq2SeqPreset(d_model=256, encoder_layers=6, decoder_layers=6, heads=4, ffn_dim=1024),
    # A deep encoder and a shallow decoder (Kasai et al. 2021): cheaper to decode.
    "small": Seq2SeqPreset(d_model=512, encoder_layers=6, decoder_layers=3, heads=8, ffn_dim=2048),
    # Transformer base and big (Vaswani et al. 2017).
    "base": Seq2SeqPreset(d_model=512, encoder_layers=6, decoder_layers=6, heads=8, ffn_dim=2048),
    "big": Seq2SeqPreset(
        d_model=1024, encoder_layers=6, decoder_layers=6, heads=16, ffn_dim=4096, dropout=0.3
    ),
}


def get_preset(preset: str | Seq2SeqPreset) -> Seq2SeqPreset:
    """The preset called ``preset`` (or ``preset`` itself), else UserError."""
    if isinstance(preset, Seq2SeqPreset):
        return preset
    if preset not in PRESETS:
        raise UserError(f"unknown seq2seq preset {preset!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def check_arch(arch: dict) -> None:
    """UserError unless every key of ``arch`` is a preset field (``d_model``, ``heads``, ...)."""
    fields = list(Seq2SeqPreset.__dataclass_fields__)
    for key in arch:
        if key not in fields:
            raise UserError(f"unknown arch key {key!r}; use any of {', '.join(fields)}")


def seq2seq_config(
    preset: str | Seq2SeqPreset,
    vocab_size: int,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    **overrides,
):
    """A ``MarianConfig`` for ``preset``; ``overrides`` replace preset fields or config keys."""
    from transformers import MarianConfig

    p = get_preset(preset)
    fields = set(asdict(p))
    p = Seq2SeqPreset(**{**asdict(p), **{k: v for k, v in overrides.items() if k in fields}})
    extra = {k: v for k, v in overrides.items() if k not in fields}
    if p.d_model % p.heads:
        raise UserError(f"d_model {p.d_model} is not divisible by heads {p.heads}")
    return MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size,
        d_model=p.d_model,
        encoder_layers=p.encoder_layers,
        decoder_layers=p.decoder_layers,
        encoder_attention_heads=p.heads,
        decoder_attention_heads=p.heads,
        encoder_ffn_dim=p.ffn_dim,
        decoder_ffn_dim=p.ffn_dim,
        dropout=p.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        activation_function="relu",
        max_position_embeddings=p.max_positions,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=pad_token_id,
        forced_eos_token_id=None,
        bos_token_id=None,
        **extra,
    )


def build_seq2seq(preset: str | Seq2SeqPreset, tokenizer, *, seed: int | None = None,
                  **overrides):
    """A randomly initialised ``MarianMTModel`` of ``preset`` sized to ``tokenizer``."""
    from transformers import MarianMTModel

    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise UserError("the tokenizer needs <pad> and </s> tokens; train it with train_tokenizer")
    config = seq2seq_config(
        preset, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, **overrides
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = MarianMTModel(config)
    gen = model.generation_config
    gen.bad_words_ids = [[tokenizer.pad_token_id]]
    gen.forced_eos_token_id = None
    gen.num_beams = 1
    gen.max_length = None
    return model


def freeze_positions(model: torch.nn.Module) -> torch.nn.Module:
    """Keep the sinusoidal position tables fixed (``from_pretrained`` makes them trainable)."""
    for name, param in model.named_parameters():
        if "embed_positions" in name:
            param.requires_grad_(False)
    return model


def save_seq2seq(model, tokenizer, out_dir: str | Path, src_lang: str | None = None,
                 tgt_lang: str | None = None) -> Path:
    """Save model, tokenizer and the language pair (``textdistill.json``) in one folder,
    atomically; languages left out keep the ones the folder records."""
    meta = read_meta(out_dir)
    meta.update(src_lang=src_lang or meta.get("src_lang"),
                tgt_lang=tgt_lang or meta.get("tgt_lang"))
    return save_pretrained_atomic(model, tokenizer, out_dir, extra={META_FILE: meta})


def load_seq2seq(model_dir: str | Path, device: str | torch.device | None = None):
    """``(model, tokenizer)`` from a folder written by ``save_seq2seq``, in eval mode."""
    from transformers import AutoModelForSeq2SeqLM

    import textdistill.models.nat  # noqa: F401  (registers the NAT model with the Auto classes)

    model_dir = Path(model_dir)
    check_model_folder(model_dir)
    tokenizer = load_tokenizer(model_dir)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir), local_files_only=True,
                                                      use_safetensors=True, dtype=torch.float32)
    except Exception as exc:  # a broken or foreign folder: a problem with the user's input
        raise UserError(f"cannot load a seq2seq model from {model_dir}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    check_vocabulary(model_dir, tokenizer, model.config.vocab_size)  # NAT: + its [MASK] row
    freeze_positions(model)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def _weights_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found (expected a .safetensors file or a folder "
                        "with model.safetensors)")
    return path


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the safetensors state dicts at ``paths`` (files or folders).

    Floating-point tensors are averaged in float64 and cast back to their dtype; other
    tensors must be equal in all checkpoints and are kept.  Keys and shapes must match.
    """
    from safetensors.torch import load_file

    if not paths:
        raise UserError("average_checkpoints needs at least one checkpoint")
    files = [_weights_file(Path(p)) for p in paths]
    first = load_file(str(files[0]))
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for file in files[1:]:
        state = load_file(str(file))
        if state.keys() != first.keys():
            diff = sorted(set(state) ^ set(first))
            raise UserError(f"{file} and {files[0]} hold different weights (e.g. {diff[0]})")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise UserError(
                    f"{file}: {key} has shape {tuple(value.shape)}, but {files[0]} has "
                    f"{tuple(first[key].shape)}"
                )
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, first[key]):
                raise UserError(f"{file}: non-float tensor {key} differs from {files[0]}")
    n = len(files)
    return {
        k: (v / n).to(first[k].dtype) if first[k].is_floating_point() else v
        for k, v in sums.items()
    }


def init_from_teacher(student, teacher, encoder: Sequence[int], decoder: Sequence[int]) -> None:
    """Initialise ``student`` from ``teacher`` ("shrink and fine-tune", Shleifer & Rush 2020):
    the embeddings and every other weight outside the layer stacks, then teacher encoder layers
    ``encoder`` and decoder layers ``decoder`` (1-based, one per student layer, in order).
    Both models must have the same widths and vocabulary."""
    copy_teacher_layers(
        student, teacher,
        stacks={"init_from_teacher.encoder": ("model.encoder.layers", encoder),
                "init_from_teacher.decoder": ("model.decoder.layers", decoder)},
        shared=("",),
        widths=("d_model", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads",
                "decoder_attention_heads", "vocab_size"),
        hint="change only the layer counts in 'arch'",
    )
