"""Format-level readers: tables in every format round-trip the same rows, bad input gives
one-line errors naming the file (and line), unlabeled text and plain lines."""

from __future__ import annotations

import bz2
import csv
import gzip
import json

import pytest

from textdistill.data.readers import guess_format, read_lines, read_table, read_text
from textdistill.errors import UserError

ROWS = [
    {"text": "A quiet, funny film", "label": "pos", "id": "1"},
    {"text": 'The "twist" fails', "label": "neg", "id": "2"},
    {"text": "Über-long; still charming — really", "label": "pos", "id": "3"},
    {"text": "Nothing happens", "label": "neg", "id": "4"},
]


def _csv(path, rows=ROWS, opener=open):
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _tsv(path, rows=ROWS, opener=open):
    lines = ["\t".join(rows[0]), *("\t".join(r.values()) for r in rows)]
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _jsonl(path, rows=ROWS, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


def _parquet(path, rows=ROWS):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _hf(path, rows=ROWS):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


WRITERS = {
    "rows.csv": _csv,
    "rows.tsv": _tsv,
    "rows.jsonl": _jsonl,
    "rows.json": _jsonl,
    "rows.parquet": _parquet,
    "rows_hf": _hf,
    "rows.csv.gz": lambda p: _csv(p, opener=gzip.open),
    "rows.tsv.bz2": lambda p: _tsv(p, opener=bz2.open),
    "rows.jsonl.gz": lambda p: _jsonl(p, opener=gzip.open),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_format_round_trips_the_rows(tmp_path, name):
    path = WRITERS[name](tmp_path / name)
    assert read_table(path) == ROWS
    assert read_table(str(path)) == ROWS


@pytest.mark.parametrize(("name", "fmt"), [("rows.csv", "csv"), ("rows.tsv", "tsv"),
                                           ("rows.jsonl", "jsonl"), ("rows_hf", "hf")])
def test_format_by_name_and_given(tmp_path, name, fmt):
    path = WRITERS[name](tmp_path / name)
    assert guess_format(path) == fmt
    other = path.rename(tmp_path / "data.txt") if fmt != "hf" else path
    assert read_table(other, fmt) == ROWS


def test_csv_keeps_quoted_newlines_and_tsv_reads_quotes_literally(tmp_path):
    rows = [{"text": 'line one\nline "two", end', "label": "a"}, {"text": "x", "label": "b"}]
    assert read_table(_csv(tmp_path / "q.csv", rows)) == rows
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\n"quoted\tb\n', encoding="utf-8")
    assert read_table(path) == [{"text": '"quoted', "label": "b"}]


def test_blank_lines_and_bom_are_ignored(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes("\ufefftext,label\n\na,1\n\nb,2\n".encode())
    assert read_table(path) == [{"text": "a", "label": "1"}, {"text": "b", "label": "2"}]
    jl = tmp_path / "b.jsonl"
    jl.write_text('{"a": 1}\n\n{"a": [2]}\n', encoding="utf-8")
    assert read_table(jl) == [{"a": 1}, {"a": [2]}]


def test_dataset_dict_needs_a_split(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:3]),
                          "dev": datasets.Dataset.from_list(ROWS[3:])}).save_to_disk(str(folder))
    msg = _error(lambda: read_table(folder), folder)
    assert "splits train, dev" in msg and "split=" in msg
    assert read_table(folder, split="dev") == ROWS[3:]
    assert read_table(folder / "train") == ROWS[:3]
    assert "no split 'test'" in _error(lambda: read_table(folder, split="test"), folder)


def _error(call, path) -> str:
    with pytest.raises(UserError) as exc:
        call()
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_missing_files(tmp_path):
    for name in ("none.csv", "none.parquet", "none.jsonl", "none.txt"):
        path = tmp_path / name
        assert _error(lambda p=path: read_table(p), path).startswith("file not found")
    folder = tmp_path / "nodir"
    assert _error(lambda: read_table(folder, "hf"), folder).startswith("folder not found")
    assert "is not a file" in _error(lambda: read_table(tmp_path, "csv"), tmp_path)


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("e.csv", b"", "is empty: expected a header line"),
    ("e.tsv", b"\n\n", "is empty: expected a header line"),
    ("h.csv", b"text,label\n", "has no rows"),
    ("e.jsonl", b"\n  \n", "is empty: expected one JSON object per line"),
    ("e.parquet", b"", "is empty"),
])
def test_empty_files(tmp_path, name, data, expected):
    path = _write(tmp_path / name, data)
    assert expected in _error(lambda: read_table(path), path)


def test_parquet_and_dataset_without_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert "has no rows" in _error(lambda: read_table(path), path)
    folder = tmp_path / "none_hf"
    datasets.Dataset.from_dict({"text": []}).save_to_disk(str(folder))
    assert "has no rows" in _error(lambda: read_table(folder), folder)


def test_content_that_is_not_the_extensions_format(tmp_path):
    pq_path = _write(tmp_path / "bad.parquet", b"text,label\na,b\n")
    assert "is not a valid Parquet file" in _error(lambda: read_table(pq_path), pq_path)
    jl = _write(tmp_path / "bad.jsonl", b'{"text": "a"}\ntext,label\n')
    assert f"{jl}:2 is not valid JSON" in _error(lambda: read_table(jl), jl)
    arr = _write(tmp_path / "arr.jsonl", b'{"text": "a"}\n{"text": "b"}\n["c", 1]\n')
    assert f"{arr}:3 is a JSON list, not an object" in _error(lambda: read_table(arr), arr)
    gz = _write(tmp_path / "plain.csv.gz", b"text,label\na,b\n")
    assert "cannot read" in _error(lambda: read_table(gz), gz)
    folder = tmp_path / "not_a_dataset"
    folder.mkdir()
    (folder / "x.txt").write_text("hello")
    assert "is not a Hugging Face dataset folder" in _error(lambda: read_table(folder), folder)
    text = _write(tmp_path / "notes.txt", b"a\n")
    assert "cannot tell the format" in _error(lambda: read_table(text), text)
    assert "unknown table format 'xls'" in str(pytest.raises(
        UserError, read_table, text, "xls").value)


def test_invalid_utf8_names_file_and_line(tmp_path):
    for name in ("u.csv", "u.tsv", "u.jsonl"):
        path = _write(tmp_path / name, b'{"a": 1}\n{"a": 2}\n{"a": "\xff"}\n')
        assert f"{path}:3 is not valid UTF-8" in _error(lambda p=path: read_table(p), path)


def test_rows_with_another_number_of_fields(tmp_path):
    path = _write(tmp_path / "f.csv", b"text,label\na,b\nc,d,e\n")
    msg = _error(lambda: read_table(path), path)
    assert f"{path}:3 has 3 fields, the header has 2" in msg
    short = _write(tmp_path / "f.tsv", b"text\tlabel\n\nonly\n")
    assert f"{short}:3 has 1 fields, the header has 2" in _error(lambda: read_table(short), short)
    dup = _write(tmp_path / "d.csv", b"text,text\na,b\n")
    assert "names the column 'text' twice" in _error(lambda: read_table(dup), dup)


def test_read_text_plain_and_gzip(tmp_path):
    plain = _write(tmp_path / "a.txt", b"First paragraph.\n\n  \nSecond one.  \r\n")
    packed = tmp_path / "b.txt.gz"
    with gzip.open(packed, "wb") as f:
        f.write(b"Dritter Absatz.\n")
    assert list(read_text(plain)) == ["First paragraph.", "Second one."]
    assert list(read_text([str(plain), packed])) == [
        "First paragraph.", "Second one.", "Dritter Absatz."]
    missing = tmp_path / "none.txt"
    assert _error(lambda: list(read_text(missing)), missing).startswith("file not found")
    bad = _write(tmp_path / "bad.txt", b"ok\n\xc3(\n")
    assert f"{bad}:2 is not valid UTF-8" in _error(lambda: list(read_text(bad)), bad)


def test_read_lines_keeps_empty_lines_and_reads_bz2(tmp_path):
    path = tmp_path / "l.txt.bz2"
    with bz2.open(path, "wb") as f:
        f.write(b"a\n\nb\r\n")
    assert read_lines(path) == ["a", "", "b"]
