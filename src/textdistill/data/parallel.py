"""Parallel data: the readers (aligned plain-text files, TSV columns, the l10n corpus) and the
pairs of a config (the l10n preset or the user's files, with several target languages sampled
or all kept, example limits, and training targets from a distilled corpus).

Every reader returns a :class:`ParallelPairs` (a ``list`` of ``(source, target)`` tuples
with a ``skipped`` attribute).  Problems in the input are one-line :class:`UserError`\\ s
that name the file and, where it applies, the line number (1-based):

- a missing file, or a folder where a file was expected;
- bytes that are not UTF-8 (``FILE:LINE is not valid UTF-8 ...``);
- two files with different line counts (both files and both counts are named);
- an empty (whitespace-only) line on either side.  With ``skip_empty=True`` such pairs
  are dropped instead; their 1-based line numbers are kept in ``pairs.skipped`` and their
  count is logged (logger ``textdistill.data.parallel``).

Lines are split on ``\\n`` only (a trailing ``\\r`` is removed), so Unicode line
separators inside a line stay inside it.  Files ending in ``.gz`` are decompressed.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Callable
from pathlib import Path

from textdistill.config import ParallelDataConfig
from textdistill.data.readers import read_lines, read_table
from textdistill.errors import UserError

log = logging.getLogger(__name__)

L10N_SOURCE_LANG = "en"


class ParallelPairs(list[tuple[str, str]]):
    """``(source, target)`` pairs; ``skipped`` lists the 1-based line numbers left out."""

    def __init__(self, pairs=(), skipped: list[int] | None = None):
        super().__init__(pairs)
        self.skipped: list[int] = list(skipped or [])
        self.langs: list[str] | None = None  # per pair, for a multi-target corpus


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


SPLITS = ("train", "dev", "test")


def _combine(sources: list[str], targets: dict[str, list[str]], cfg: ParallelDataConfig,
             seed: str, where: Callable[[str, int], str] | None) -> ParallelPairs:
    """Pairs of every source with one seeded draw of its target languages (``sample``, the same
    draw whatever the order of ``tgt_lang``) or with each of them in ``tgt_lang`` order
    (``all``). An empty side is an error naming ``where(lang, i)``; without ``where`` the pair
    is left out and its 1-based row kept in ``skipped``."""
    langs, draw_from = cfg.target_langs, sorted(cfg.target_langs)
    rng = random.Random(seed)
    pairs, chosen, skipped = [], [], []
    for i, src in enumerate(sources):
        if cfg.multi_target == "all":
            row_langs = langs
        else:
            row_langs = [langs[0] if len(langs) == 1 else rng.choice(draw_from)]
        for lang in row_langs:
            tgt = targets[lang][i]
            if not src.strip() or not tgt.strip():
                if where is None:
                    skipped.append(i + 1)
                    continue
                side = cfg.src_lang if not src.strip() else lang
                raise UserError(f"{where(side, i)} is empty: fill it in or remove the pair")
            pairs.append((src, tgt))
            chosen.append(lang)
    out = ParallelPairs(pairs, skipped)
    out.langs = chosen
    return out


def _l10n(cfg: ParallelDataConfig, split: str) -> ParallelPairs:
    if cfg.src_lang != L10N_SOURCE_LANG:
        raise UserError(f"l10n translates from {L10N_SOURCE_LANG}: set src_lang to "
                        f"{L10N_SOURCE_LANG} (not {cfg.src_lang!r})")
    if cfg.columns:
        raise UserError("l10n has its own columns (en, de, fr, es): remove data.columns, or give "
                        "your own data.train/dev/test files")
    if cfg.multi_target == "sample":
        return load_l10n_pairs(split, cfg.tgt_lang)
    from textdistill.data.corpora import read_l10n

    rows = read_l10n(split, l10n_target_langs(cfg.tgt_lang))
    targets = {lang: [r[lang] for r in rows] for lang in cfg.target_langs}
    pairs = _combine([r["en"] for r in rows], targets, cfg, "", None)
    pairs.skipped = [i + 1 for i in pairs.skipped]  # file lines, after the header
    return pairs


def _from_table(path: str, cfg: ParallelDataConfig, split: str) -> ParallelPairs:
    rows = read_table(path)
    have = list(dict.fromkeys(k for row in rows for k in row))
    columns = {lang: cfg.columns.get(lang, lang) for lang in (cfg.src_lang, *cfg.target_langs)}
    for lang, col in columns.items():
        if col not in have:
            raise UserError(f"{path} has no column {col!r} for the language {lang!r}; its "
                            f"columns are {have}: name the column {lang!r} or map it in "
                            f"data.columns ({lang}: COLUMN)")

    def column(lang: str) -> list[str]:
        return ["" if r.get(columns[lang]) is None else str(r[columns[lang]]) for r in rows]

    return _combine(column(cfg.src_lang), {lang: column(lang) for lang in cfg.target_langs},
                    cfg, f"{split}:{'+'.join(sorted(cfg.target_langs))}",
                    lambda lang, i: f"{path} row {i + 1} column {columns[lang]!r}")


def _from_files(paths: list[str], cfg: ParallelDataConfig, split: str) -> ParallelPairs:
    langs = cfg.target_langs
    if len(paths) != 1 + len(langs):
        raise UserError(f"data.{split} lists {len(paths)} files but needs {1 + len(langs)}: the "
                        f"{cfg.src_lang} source, then one file per target language "
                        f"({', '.join(langs)})")
    files = dict(zip((cfg.src_lang, *langs), paths, strict=True))
    lines = {lang: read_lines(path) for lang, path in files.items()}
    src_path, sources = paths[0], lines[cfg.src_lang]
    for lang in langs:
        if len(lines[lang]) != len(sources):
            raise UserError(f"{src_path} has {len(sources)} lines but {files[lang]} has "
                            f"{len(lines[lang])}: parallel files must be aligned line by line")
    return _combine(sources, {lang: lines[lang] for lang in langs}, cfg,
                    f"{split}:{'+'.join(sorted(langs))}",
                    lambda lang, i: f"{files[lang]}:{i + 1}")


def _head(pairs: ParallelPairs, limit: int | None) -> ParallelPairs:
    if limit is None or limit >= len(pairs):
        return pairs
    out = ParallelPairs(pairs[:limit], pairs.skipped)
    out.langs = pairs.langs[:limit] if pairs.langs is not None else None
    return out


def load_pairs(cfg: ParallelDataConfig, split: str) -> ParallelPairs:
    """The ``(source, target)`` pairs of a split (``pairs.langs``: each pair's target language).

    The first ``max_train_examples`` (train) or ``max_eval_examples`` (dev, test) pairs are
    kept; ``targets`` replaces the training targets with a distilled corpus's lines."""
    if split not in SPLITS:
        raise UserError(f"no split {split!r}; use one of {', '.join(SPLITS)}")
    if cfg.corpus is not None:
        if cfg.corpus != "l10n":
            raise UserError(f"unknown parallel corpus {cfg.corpus!r}: the shipped one is l10n; "
                            "or give your own data.train/dev/test files")
        pairs = _l10n(cfg, split)
    else:
        given = getattr(cfg, split)
        if given is None:
            raise UserError(f"the data has no {split} split: set data.{split} to a TSV/JSONL "
                            "file or a list of line-aligned text files (source, then targets)")
        pairs = (_from_files(given, cfg, split) if isinstance(given, list)
                 else _from_table(given, cfg, split))
    limit = cfg.max_train_examples if split == "train" else cfg.max_eval_examples
    kept = _head(pairs, limit)
    if split == "train" and cfg.targets is not None:
        targets = read_lines(cfg.targets)
        if len(targets) not in (len(pairs), len(kept)):
            raise UserError(f"{cfg.targets} has {len(targets)} lines but the {split} split has "
                            f"{len(pairs)} sources ({len(kept)} used): generate the targets "
                            "from the same split")
        replaced = ParallelPairs([(s, t) for (s, _), t in zip(kept, targets, strict=False)],
                                 kept.skipped)
        replaced.langs = kept.langs
        kept = replaced
    return kept
