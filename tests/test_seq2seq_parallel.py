"""Parallel data readers: aligned files, TSV columns, l10n pairs, and their one-line errors."""

from __future__ import annotations

import gzip
import logging

import pytest

from textdistill.data.corpora import L10N_FILES
from textdistill.data.parallel import (
    load_l10n_pairs,
    read_lines,
    read_parallel_files,
    read_parallel_tsv,
)
from textdistill.errors import UserError
from textdistill.paths import data_dir


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_read_parallel_files(tmp_path):
    src = _write(tmp_path / "a.en", "Hello world\r\nOne\u2028line\nlast no newline".encode())
    tgt = _write(tmp_path / "a.de", b"Hallo Welt\nEine Zeile\nletzte\n")
    pairs = read_parallel_files(src, tgt)
    assert pairs == [
        ("Hello world", "Hallo Welt"),
        ("One\u2028line", "Eine Zeile"),  # only \n ends a line
        ("last no newline", "letzte"),
    ]
    assert pairs.skipped == []


def test_gzip_and_bom(tmp_path):
    src = tmp_path / "a.en.gz"
    with gzip.open(src, "wb") as f:
        f.write("\ufeffx\ny\n".encode())
    assert read_lines(src) == ["x", "y"]


def test_different_line_counts_names_both_files_and_counts(tmp_path):
    src = _write(tmp_path / "train.en", b"a\nb\nc\n")
    tgt = _write(tmp_path / "train.de", b"a\nb\n")
    with pytest.raises(UserError) as exc:
        read_parallel_files(src, tgt)
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"{src} has 3 lines" in msg and f"{tgt} has 2" in msg


def test_empty_line_error_and_skip(tmp_path, caplog):
    src = _write(tmp_path / "x.en", b"a\n  \nc\nd\n")
    tgt = _write(tmp_path / "x.de", b"A\nB\nC\n\n")
    with pytest.raises(UserError, match=rf"^{src}:2 is empty; .*skip_empty=True"):
        read_parallel_files(src, tgt)
    with caplog.at_level(logging.WARNING, logger="textdistill.data.parallel"):
        pairs = read_parallel_files(src, tgt, skip_empty=True)
    assert pairs == [("a", "A"), ("c", "C")]
    assert pairs.skipped == [2, 4]
    assert "skipped 2 of 4 pairs" in caplog.text
    # The target side's empty line is named when the source is fine.
    src2 = _write(tmp_path / "y.en", b"a\nd\n")
    tgt2 = _write(tmp_path / "y.de", b"A\n\n")
    with pytest.raises(UserError, match=rf"^{tgt2}:2 is empty"):
        read_parallel_files(src2, tgt2)


def test_invalid_utf8_names_file_and_line(tmp_path):
    src = _write(tmp_path / "bad.en", b"fine\nalso fine\nbroken \xff here\n")
    tgt = _write(tmp_path / "bad.de", b"x\ny\nz\n")
    with pytest.raises(UserError, match=rf"^{src}:3 is not valid UTF-8 \(byte 8 of the line\)"):
        read_parallel_files(src, tgt)


def test_missing_file_and_folder(tmp_path):
    tgt = _write(tmp_path / "t.de", b"x\n")
    with pytest.raises(UserError, match=r"^file not found: .*nope\.en$"):
        read_parallel_files(tmp_path / "nope.en", tgt)
    with pytest.raises(UserError, match="is not a file"):
        read_parallel_files(tmp_path, tgt)


def test_read_parallel_tsv(tmp_path):
    path = _write(tmp_path / "c.tsv", b"en\tde\tsource\nHi\tHallo\tx\n\"q\tz\"\tdd\tx\n")
    assert read_parallel_tsv(path, "en", "de") == [("Hi", "Hallo"), ('"q', 'z"')]
    assert read_parallel_tsv(path, 1, 0)[1] == ("Hallo", "Hi")  # header is data by index
    with pytest.raises(UserError, match=r"has no column 'fr'; its columns are \['en', 'de'"):
        read_parallel_tsv(path, "en", "fr")
    short = _write(tmp_path / "s.tsv", b"en\tde\na\tb\nonly\n")
    with pytest.raises(UserError, match=rf"^{short}:3 has 1 columns; expected at least 2"):
        read_parallel_tsv(short, "en", "de")
    empty = _write(tmp_path / "e.tsv", b"en\tde\na\t\n")
    with pytest.raises(UserError, match=r"column de:2 is empty"):
        read_parallel_tsv(empty, "en", "de")
    assert read_parallel_tsv(empty, "en", "de", skip_empty=True).skipped == [2]


def test_l10n_unknown_language_lists_valid_ones():
    with pytest.raises(UserError, match=r"no target language 'it'; use one of de, fr, es"):
        load_l10n_pairs("dev", "it")


@pytest.mark.skipif(
    not (data_dir() / L10N_FILES["dev"]).is_file(), reason="l10n dev split not found"
)
def test_l10n_pairs_dev():
    pairs = load_l10n_pairs("dev", "fr")
    assert len(pairs) + len(pairs.skipped) == 2000
    assert all(s.strip() and t.strip() for s, t in pairs)
    assert len({s for s, _ in pairs}) == len(pairs)  # one row per English string


def test_l10n_repeated_or_unknown_language_in_a_set():
    with pytest.raises(UserError, match=r"'de\+de' repeats one; use one of de, fr, es or a '\+'"):
        load_l10n_pairs("dev", "de+de")
    with pytest.raises(UserError, match=r"no target language 'it'"):
        load_l10n_pairs("dev", "de+it")


@pytest.mark.skipif(
    not (data_dir() / L10N_FILES["dev"]).is_file(), reason="l10n dev split not found"
)
def test_l10n_multi_target_pairs_draw_one_translation_per_source():
    from textdistill.data.corpora import read_l10n

    rows = read_l10n("dev")
    pairs = load_l10n_pairs("dev", "es+de+fr")
    assert len(pairs) == len(pairs.langs) == len(rows)
    for (src, tgt), lang, row in zip(pairs, pairs.langs, rows, strict=True):
        assert (src, tgt) == (row["en"], row[lang])
    shares = {lang: pairs.langs.count(lang) / len(rows) for lang in ("de", "fr", "es")}
    assert all(0.28 < share < 0.39 for share in shares.values()), shares  # uniform draw
    # the same draw every time, whatever the order the set is written in
    assert load_l10n_pairs("dev", "de+fr+es").langs == pairs.langs
    two = load_l10n_pairs("dev", "fr+de")
    assert set(two.langs) == {"de", "fr"}
    assert load_l10n_pairs("dev", "de").langs == ["de"] * len(rows)
