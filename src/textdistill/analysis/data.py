"""Small readers for the analysis: plain aligned text files and the l10n TSV columns.

The l10n columns come from the corpora registry (``textdistill.data.corpora``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from textdistill.data import corpora
from textdistill.errors import UserError
from textdistill.paths import atomic_write_text


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


def read_l10n(split: str, lang: str) -> list[str]:
    """One column (``en``, ``de``, ``fr``, ``es`` or ``source``) of an l10n split."""
    return read_l10n_columns(split, [lang])[lang]


def read_l10n_columns(split: str, langs: list[str]) -> dict[str, list[str]]:
    """Columns of an l10n split, read with the corpora registry's reader."""
    targets = tuple(lang for lang in langs if lang not in ("en", "source"))
    rows = corpora.read_l10n(split, targets)
    return {lang: [row[lang] for row in rows] for lang in langs}


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
