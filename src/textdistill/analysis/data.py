"""Small readers for the analysis: plain aligned text files and the l10n TSV columns.

The data owner writes the general corpus readers; these only do what ``analyze`` and
the aligner benchmark need.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from textdistill.errors import UserError
from textdistill.paths import DATA_ENV, atomic_write_text, data_dir

L10N_COLUMNS = ("en", "de", "fr", "es", "source")
L10N_SPLITS = ("train", "dev", "test")


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """The lines of a UTF-8 text file (``.gz`` is decompressed), without newlines.

    A final newline does not make an extra empty line; "\\r\\n" endings are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist or is not a file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {what} {path}: {exc}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def l10n_path(split: str) -> Path:
    """Path of the l10n ``split`` (train is gzip-compressed) under the data directory."""
    if split not in L10N_SPLITS:
        raise UserError(f"unknown l10n split {split!r}; choose one of {', '.join(L10N_SPLITS)}")
    name = f"l10n.{split}.tsv.gz" if split == "train" else f"l10n.{split}.tsv"
    return data_dir() / "parallel" / name


def read_l10n(split: str, lang: str) -> list[str]:
    """One column (``en``, ``de``, ``fr``, ``es`` or ``source``) of an l10n split."""
    return read_l10n_columns(split, [lang])[lang]


def read_l10n_columns(split: str, langs: list[str]) -> dict[str, list[str]]:
    for lang in langs:
        if lang not in L10N_COLUMNS:
            raise UserError(f"unknown l10n column {lang!r}; choose from {', '.join(L10N_COLUMNS)}")
    path = l10n_path(split)
    if not path.is_file():
        raise UserError(
            f"l10n corpus {path} not found; set {DATA_ENV} to the data directory that has parallel/"
        )
    lines = read_lines(path, "l10n corpus")
    if not lines or lines[0].split("\t") != list(L10N_COLUMNS):
        raise UserError(f"{path}: expected the header {' '.join(L10N_COLUMNS)} (tab-separated)")
    cols = [L10N_COLUMNS.index(lang) for lang in langs]
    out: dict[str, list[str]] = {lang: [] for lang in langs}
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(L10N_COLUMNS):
            raise UserError(f"{path}:{number}: expected {len(L10N_COLUMNS)} tab-separated fields")
        for lang, c in zip(langs, cols, strict=True):
            out[lang].append(fields[c])
    return out


def write_l10n_columns(split: str, langs: list[str], out_dir: str | Path) -> dict[str, Path]:
    """Write each column to ``out_dir/l10n.<split>.<lang>`` (one sentence per line).

    Meant for temporary folders (tests, benchmarks): never write corpus text into the
    repository.
    """
    columns = read_l10n_columns(split, langs)
    out_dir = Path(out_dir)
    paths = {}
    for lang, lines in columns.items():
        p = out_dir / f"l10n.{split}.{lang}"
        atomic_write_text(p, "".join(line + "\n" for line in lines))
        paths[lang] = p
    return paths
