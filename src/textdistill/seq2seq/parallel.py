"""Parallel data: aligned plain-text files, TSV columns, and the l10n corpus.

Every reader returns a :class:`ParallelPairs` (a ``list`` of ``(source, target)`` tuples
with a ``skipped`` attribute).  Problems in the input are one-line :class:`UserError`\\ s
that name the file and, where it applies, the line number (1-based):

- a missing file, or a folder where a file was expected;
- bytes that are not UTF-8 (``FILE:LINE is not valid UTF-8 ...``);
- two files with different line counts (both files and both counts are named);
- an empty (whitespace-only) line on either side.  With ``skip_empty=True`` such pairs
  are dropped instead; their 1-based line numbers are kept in ``pairs.skipped`` and their
  count is logged (logger ``textdistill.seq2seq.parallel``).

Lines are split on ``\\n`` only (a trailing ``\\r`` is removed), so Unicode line
separators inside a line stay inside it.  Files ending in ``.gz`` are decompressed.
"""

from __future__ import annotations

import csv
import gzip
import logging
import random
from pathlib import Path

from textdistill.errors import UserError

log = logging.getLogger(__name__)

L10N_SOURCE_LANG = "en"


class ParallelPairs(list[tuple[str, str]]):
    """``(source, target)`` pairs; ``skipped`` lists the 1-based line numbers left out."""

    def __init__(self, pairs=(), skipped: list[int] | None = None):
        super().__init__(pairs)
        self.skipped: list[int] = list(skipped or [])
        self.langs: list[str] | None = None  # per pair, for a multi-target corpus


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, without line ends (a final newline adds no line)."""
    path = Path(path)
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path}:{number} is not valid UTF-8 (byte {exc.start + 1} of the line); "
                    "convert the file to UTF-8, e.g. with iconv"
                ) from None
        raise  # pragma: no cover - the whole file failed, so one line must fail
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _pair_up(
    src: list[str],
    tgt: list[str],
    names: tuple[str, str],
    skip_empty: bool,
    line_offset: int = 0,
) -> ParallelPairs:
    pairs, skipped = [], []
    for i, (s, t) in enumerate(zip(src, tgt, strict=True), start=1 + line_offset):
        if not s.strip() or not t.strip():
            if not skip_empty:
                name = names[0] if not s.strip() else names[1]
                raise UserError(
                    f"{name}:{i} is empty; remove the pair or pass skip_empty=True to skip "
                    "empty lines"
                )
            skipped.append(i)
            continue
        pairs.append((s, t))
    if skipped:
        log.warning(
            "skipped %d of %d pairs with an empty side (%s / %s)",
            len(skipped), len(src), *names,
        )
    return ParallelPairs(pairs, skipped)


def read_parallel_files(
    src_path: str | Path, tgt_path: str | Path, *, skip_empty: bool = False
) -> ParallelPairs:
    """Pairs from two line-aligned UTF-8 files (source and target, one sentence per line)."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: parallel files "
            "must be aligned line by line"
        )
    return _pair_up(src, tgt, (str(src_path), str(tgt_path)), skip_empty)


def read_parallel_tsv(
    path: str | Path, src_col: str | int, tgt_col: str | int, *, skip_empty: bool = False
) -> ParallelPairs:
    """Pairs from two columns of a tab-separated file (no quoting; ``.gz`` allowed).

    Columns given by name (``"en"``) are looked up in the header line, which is then not
    data; columns given by 0-based index read every line as data.
    """
    path = Path(path)
    lines = read_lines(path)
    by_name = isinstance(src_col, str) or isinstance(tgt_col, str)
    if isinstance(src_col, str) != isinstance(tgt_col, str):
        raise UserError("read_parallel_tsv: give both columns by name or both by index")
    offset = 0
    if by_name:
        if not lines:
            raise UserError(f"{path} is empty: expected a header line with column names")
        header = lines[0].split("\t")
        for col in (src_col, tgt_col):
            if col not in header:
                raise UserError(f"{path} has no column {col!r}; its columns are {header}")
        src_idx, tgt_idx = header.index(src_col), header.index(tgt_col)
        lines, offset = lines[1:], 1
    else:
        src_idx, tgt_idx = int(src_col), int(tgt_col)
    need = max(src_idx, tgt_idx) + 1
    src, tgt = [], []
    for number, row in enumerate(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)):
        if len(row) < need:
            raise UserError(
                f"{path}:{number + 1 + offset} has {len(row)} columns; expected at least {need}"
            )
        src.append(row[src_idx])
        tgt.append(row[tgt_idx])
    return _pair_up(src, tgt, (f"{path} column {src_col}", f"{path} column {tgt_col}"),
                    skip_empty, line_offset=offset)


def l10n_languages() -> tuple[str, ...]:
    """The target languages of the l10n corpus (its source is English)."""
    from textdistill.data.corpora import L10N_LANGS

    return tuple(L10N_LANGS)


def l10n_target_langs(tgt_lang: str) -> tuple[str, ...]:
    """The languages of ``tgt_lang``: one of ``de``, ``fr``, ``es``, or a ``+`` set of them
    (``de+fr+es``, the multi-target corpus), in the corpus's order; else UserError."""
    valid = l10n_languages()
    langs = tgt_lang.split("+")
    unknown = [lang for lang in langs if lang not in valid]
    if unknown or len(set(langs)) != len(langs):
        problem = f"no target language {unknown[0]!r}" if unknown else f"{tgt_lang!r} repeats one"
        raise UserError(
            f"l10n has {problem}; use one of {', '.join(valid)} or a '+' set such as "
            f"{'+'.join(valid)} (the source is always {L10N_SOURCE_LANG})"
        )
    return tuple(lang for lang in valid if lang in langs)


def load_l10n_pairs(split: str, tgt_lang: str, *, skip_empty: bool = True) -> ParallelPairs:
    """English → ``tgt_lang`` pairs of an l10n split.

    With a set of languages (``de+fr+es``) every English string is paired with its
    translation into one of them, drawn uniformly with a generator seeded by the split and the
    set, so the corpus has several valid translation "modes" (Zhou, Gu & Neubig 2020); the
    drawn language of each pair is in ``pairs.langs``.
    """
    from textdistill.data.corpora import read_l10n

    langs = l10n_target_langs(tgt_lang)
    rows = read_l10n(split, langs)
    rng = random.Random(f"l10n:{split}:{'+'.join(langs)}")
    chosen = [langs[0] if len(langs) == 1 else rng.choice(langs) for _ in rows]
    src = [r[L10N_SOURCE_LANG] for r in rows]
    tgt = [r[lang] for r, lang in zip(rows, chosen, strict=True)]
    pairs = _pair_up(src, tgt, (f"l10n {split} en", f"l10n {split} {tgt_lang}"), skip_empty,
                     line_offset=1)
    dropped = {i - 2 for i in pairs.skipped}  # 1-based file lines after the header
    pairs.langs = [lang for i, lang in enumerate(chosen) if i not in dropped]
    return pairs
