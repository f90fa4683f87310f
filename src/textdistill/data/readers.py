"""Format-level readers of the user's files: tables (CSV, TSV, JSONL, Parquet, Hugging Face
``save_to_disk`` folders), unlabeled text, and plain lines.

Problems in the input are one-line :class:`UserError`\\ s that name the file and, where it
applies, the 1-based line: a missing file, an empty file, content that is not the format its
extension says, bytes that are not UTF-8, a CSV/TSV row with more or fewer fields than the
header. Files ending in ``.gz`` or ``.bz2`` are decompressed (not Parquet files)."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textdistill.errors import UserError

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet", "hf")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
               ".parquet": "parquet"}
_COMPRESSED = (".gz", ".bz2")


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if path.suffix == ".bz2":
            with bz2.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _read_text(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark removed); a byte that is not UTF-8
    is an error naming its line."""
    data = _read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"{path}:{number} is not valid UTF-8 (byte {exc.start + 1} of the line); "
                    "convert the file to UTF-8, e.g. with iconv"
                ) from None
        raise  # pragma: no cover - the whole file failed, so one line must fail


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, without line ends (a final newline adds no line).

    Lines are split on ``\\n`` only (a trailing ``\\r`` is removed), so Unicode line separators
    inside a line stay inside it."""
    lines = _read_text(Path(path)).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_text(paths: str | Path | list[str | Path]) -> Iterator[str]:
    """Unlabeled text: the non-empty lines (stripped) of plain or gzipped UTF-8 files, in
    order, one paragraph or sentence each."""
    for path in [paths] if isinstance(paths, str | Path) else paths:
        for line in read_lines(path):
            if line.strip():
                yield line.strip()


def guess_format(path: str | Path) -> str | None:
    """The table format that a path says: ``hf`` for a folder, else by the extension (through
    ``.gz``/``.bz2``); None when the name says none (or a compressed Parquet file)."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    suffixes = path.suffixes[-2:] if path.suffix in _COMPRESSED else path.suffixes[-1:]
    found = _EXTENSIONS.get(suffixes[0].lower()) if suffixes else None
    return None if found == "parquet" and len(suffixes) == 2 else found


def table_format(path: str | Path, fmt: str = "auto") -> str:
    """The format of a table: ``fmt`` itself, or :func:`guess_format` when ``auto``."""
    if fmt not in ("auto", *TABLE_FORMATS):
        raise UserError(f"unknown table format {fmt!r}; use auto or one of "
                        f"{', '.join(TABLE_FORMATS)}")
    found = guess_format(path) if fmt == "auto" else fmt
    if found is None:
        if not Path(path).exists():
            raise UserError(f"file not found: {path}")
        raise UserError(
            f"cannot tell the format of {path} from its name: use a .csv, .tsv, .jsonl or "
            ".parquet file (.gz/.bz2 allowed except for Parquet), a dataset folder, or give the "
            "format (data.format in a config)"
        )
    return found


def read_table(path: str | Path, fmt: str = "auto", split: str | None = None
               ) -> list[dict[str, Any]]:
    """The rows of a CSV, TSV, JSONL or Parquet file or a Hugging Face dataset folder, as
    dicts by column name. ``split`` chooses a split of a ``DatasetDict`` folder."""
    path = Path(path)
    fmt = table_format(path, fmt)
    if fmt == "hf":
        rows = _read_hf(path, split)
    elif fmt == "parquet":
        rows = _read_parquet(path)
    elif fmt == "jsonl":
        rows = _read_jsonl(path)
    else:
        rows = _read_delimited(path, fmt)
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def _read_delimited(path: Path, fmt: str) -> list[dict[str, Any]]:
    text = _read_text(path)
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # whole documents in a field
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t",
                            quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    name = fmt.upper()
    rows: list[dict[str, Any]] = []
    try:
        header = next((r for r in reader if r), None)
        if header is None:
            raise UserError(f"{path} is empty: expected a header line with column names")
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise UserError(f"{path}:{reader.line_num} names the column {repeated[0]!r} twice; "
                            "give every column a distinct name")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{reader.line_num} has {len(row)} fields, the header has "
                                f"{len(header)}; check the delimiters and quotes of the line")
            rows.append(dict(zip(header, row, strict=True)))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num} is not valid {name}: {exc}") from None
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"{path} is empty: expected one JSON object per line")
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number} is not valid JSON ({exc.msg} at column "
                            f"{exc.colno}); write one JSON object per line (JSON Lines)") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number} is a JSON {type(row).__name__}, not an object; "
                            "write one JSON object per line, e.g. {\"text\": ..., \"label\": ...}")
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise UserError(f"file not found: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a valid Parquet file ({problem})") from None


def _read_hf(path: Path, split: str | None) -> list[dict[str, Any]]:
    if not path.exists():
        raise UserError(f"folder not found: {path}")
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: a Hugging Face dataset is a folder written by "
                        "save_to_disk")
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except IndexError:  # datasets cannot load what it saved without rows (no data files)
        raise UserError(f"{path} has no rows") from None
    except (FileNotFoundError, ValueError, OSError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a Hugging Face dataset folder written by save_to_disk "
                        f"({problem})") from None
    if isinstance(data, datasets.DatasetDict):
        if split is None or split not in data:
            which = "choose" if split is None else f"it has no split {split!r}; choose"
            raise UserError(
                f"{path} is a dataset with the splits {', '.join(data)}: {which} one (split=..., "
                f"or the split's folder, e.g. {path / next(iter(data))})"
            )
        data = data[split]
    return data.to_list()
