"""Tokenizers for the corpus analysis.

``words`` (the default): the line is lower-cased with :meth:`str.lower` (Unicode aware;
no other normalisation), then split into maximal runs of word characters (Python's
Unicode ``\\w``: letters, digits, marks and the underscore) and single punctuation or
symbol characters.  Whitespace only separates tokens.  So ``"Don't stop, O'Neil!"``
becomes ``don ' t stop , o ' neil !`` and ``"3.5 GHz"`` becomes ``3 . 5 ghz``.

``subwords``: the pieces of a Hugging Face tokenizer loaded from a local folder (or a
``tokenizer.json`` file), exactly as the tokenizer produces them (no lower-casing of our
own, no special tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from textdistill.errors import UserError

TOKENIZE_MODES = ("words", "subwords")

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def word_tokenize(line: str) -> list[str]:
    """Lower-case and split into word-character runs and single punctuation marks."""
    return _WORD_RE.findall(line.lower())


def load_subword_tokenizer(path: str | Path) -> Callable[[str], list[str]]:
    """A function that splits a line with the HF tokenizer stored at ``path``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer {path} does not exist; give a tokenizer folder or file")
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.name.endswith(".json") and file.is_file():
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - tokenizers comes with transformers
            Tokenizer = None
        if Tokenizer is not None:
            try:
                tok = Tokenizer.from_file(str(file))
            except Exception as exc:
                raise UserError(f"cannot load tokenizer {file}: {exc}") from None

            def fast(line: str) -> list[str]:
                return tok.encode(line, add_special_tokens=False).tokens

            return fast
    if not path.is_dir():
        raise UserError(f"tokenizer {path}: expected a folder with tokenizer files")
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise UserError(f"cannot load a tokenizer from {path}: {exc}") from None

    def slow(line: str) -> list[str]:
        return hf.tokenize(line)

    return slow


def make_tokenizer(mode: str = "words", tokenizer: str | Path | None = None):
    """The tokenizer function for ``mode`` (``words`` or ``subwords``)."""
    if mode == "words":
        if tokenizer is not None:
            raise UserError("--tokenizer is only used with --tokenize subwords")
        return word_tokenize
    if mode == "subwords":
        if tokenizer is None:
            raise UserError("--tokenize subwords needs --tokenizer PATH (a tokenizer folder)")
        return load_subword_tokenizer(tokenizer)
    raise UserError(f"unknown tokenization {mode!r}; choose 'words' or 'subwords'")
