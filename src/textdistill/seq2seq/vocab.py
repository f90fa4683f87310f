"""A joint subword vocabulary for translation (SentencePiece-style, with HF ``tokenizers``).

:func:`train_tokenizer` trains a Unigram (default) or BPE model on the source and target
sides together.  Text is NFC-normalised and every space becomes ``▁`` (Metaspace), so
decoding gives back the input text exactly (multiple spaces included), except that
whitespace at the start of a line is dropped (as in SentencePiece) and characters never
seen in training become ``<unk>``, which :func:`decode` drops.  Special tokens:
``<pad>`` (id 0, also the decoder start), ``</s>`` (id 1, appended to every encoded
sentence), ``<unk>`` (id 2), then optional target-language tags such as ``<2de>``.

The folder is written with ``save_pretrained`` (loads with ``AutoTokenizer``) plus
``textdistill.json``, which records the language pair; :func:`check_languages` compares
it with the data so that a teacher trained for another pair fails with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from textdistill.errors import UserError
from textdistill.paths import atomic_write_json

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
META_FILE = "textdistill.json"
MODEL_TYPES = ("unigram", "bpe")


def lang_tag(lang: str) -> str:
    """The target-language tag token, e.g. ``<2de>``."""
    return f"<2{lang}>"


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | Path | None = None,
    *,
    model_type: str = "unigram",
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    lang_tags: Sequence[str] = (),
    max_length: int = 1024,
):
    """Train a joint subword tokenizer on ``texts`` (source and target sides together).

    Returns a ``transformers.PreTrainedTokenizerFast``; when ``out_dir`` is given it is
    saved there with ``save_pretrained`` and ``textdistill.json`` (languages, vocab size).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers as tk_trainers
    from transformers import PreTrainedTokenizerFast

    if model_type not in MODEL_TYPES:
        raise UserError(f"unknown vocabulary model {model_type!r}; use one of {MODEL_TYPES}")
    tags = [lang_tag(lang) for lang in lang_tags]
    specials = [*SPECIAL_TOKENS, *tags]
    if vocab_size < len(specials) + 10:
        raise UserError(f"vocab_size {vocab_size} is too small; use at least {len(specials) + 10}")
    if model_type == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = tk_trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=UNK, show_progress=False
        )
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = tk_trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    seen = 0

    def counted(items: Iterable[str]):
        nonlocal seen
        for item in items:
            if item.strip():
                seen += 1
                yield item

    tok.train_from_iterator(counted(texts), trainer)
    if seen == 0:
        raise UserError("cannot train a vocabulary on no text: all training lines are empty")
    for i, special in enumerate(specials):
        if tok.token_to_id(special) != i:  # pragma: no cover - the trainers put them first
            raise RuntimeError(f"special token {special} got id {tok.token_to_id(special)}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=tags or None,
        model_max_length=max_length,
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        hf.save_pretrained(str(out_dir))
        write_languages(
            out_dir, src_lang, tgt_lang,
            vocab_size=len(hf), model_type=model_type, lang_tags=list(lang_tags),
        )
    return hf


def load_tokenizer(folder: str | Path):
    """Load a tokenizer folder (``AutoTokenizer``, local files only) or raise UserError."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"{folder} has no tokenizer.json; train one with train_tokenizer")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # any loading failure is a problem with the folder
        raise UserError(f"cannot load the tokenizer in {folder}: {exc}") from None


def decode(tokenizer, ids) -> list[str]:
    """Detokenized text of a batch of id sequences (special tokens dropped), for BLEU."""
    return tokenizer.batch_decode(
        ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
    )


def read_meta(folder: str | Path) -> dict:
    """The record in ``folder/textdistill.json``; ``{}`` if there is none."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); retrain or fix it") from None


def write_languages(
    folder: str | Path, src_lang: str | None, tgt_lang: str | None, **extra
) -> None:
    """Record the language pair (and ``extra`` facts) in ``folder/textdistill.json``."""
    meta = read_meta(folder)
    meta.update({"src_lang": src_lang, "tgt_lang": tgt_lang, **extra})
    atomic_write_json(Path(folder) / META_FILE, meta)


def read_languages(folder: str | Path) -> tuple[str | None, str | None]:
    """The ``(src_lang, tgt_lang)`` recorded in ``folder``; ``(None, None)`` if unrecorded."""
    meta = read_meta(folder)
    return meta.get("src_lang"), meta.get("tgt_lang")


def check_languages(model_dir: str | Path, src_lang: str, tgt_lang: str) -> None:
    """Raise UserError unless ``model_dir`` was trained for ``src_lang`` → ``tgt_lang``."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model folder {model_dir} does not exist")
    have_src, have_tgt = read_languages(model_dir)
    if have_src is None or have_tgt is None:
        raise UserError(
            f"{model_dir} does not record its languages ({META_FILE} with src_lang and "
            f"tgt_lang is missing); it cannot be checked against {src_lang}->{tgt_lang}"
        )
    if (have_src, have_tgt) != (src_lang, tgt_lang):
        raise UserError(
            f"{model_dir} was trained for {have_src}->{have_tgt} but the data is "
            f"{src_lang}->{tgt_lang}; use a teacher (and tokenizer) for {src_lang}->{tgt_lang}"
        )
