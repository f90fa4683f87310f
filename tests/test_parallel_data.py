"""Parallel data of a config: the l10n preset (sampled or all targets), the user's TSV/JSONL
tables and aligned plain files, limits, training targets, and one-line errors."""

from __future__ import annotations

import json

import pytest

from textdistill.config import ParallelDataConfig
from textdistill.data.corpora import read_l10n
from textdistill.data.parallel import load_l10n_pairs, load_pairs
from textdistill.errors import UserError

# -- the l10n preset -------------------------------------------------------------------------


def test_l10n_sample_is_the_seeded_draw(data_root):
    pairs = load_pairs(ParallelDataConfig(tgt_lang="es+de"), "dev")
    expected = load_l10n_pairs("dev", "de+es")
    assert pairs == expected and pairs.langs == expected.langs
    assert set(pairs.langs) == {"de", "es"}
    single = load_pairs(ParallelDataConfig(corpus="l10n", tgt_lang="fr"), "test")
    assert single.langs == ["fr"] * len(single) and len(single) == 2000


def test_l10n_all_pairs_every_target_in_tgt_lang_order(data_root):
    rows = read_l10n("dev")
    pairs = load_pairs(ParallelDataConfig(tgt_lang="fr+de", multi_target="all"), "dev")
    assert len(pairs) == len(pairs.langs) == 2 * len(rows)
    assert pairs.langs[:4] == ["fr", "de", "fr", "de"]
    for i, row in enumerate(rows[:50]):
        assert pairs[2 * i] == (row["en"], row["fr"])
        assert pairs[2 * i + 1] == (row["en"], row["de"])
    few = load_pairs(ParallelDataConfig(tgt_lang="de+fr+es", multi_target="all",
                                        max_eval_examples=5), "dev")
    assert few == [(rows[0]["en"], rows[0][lang]) for lang in ("de", "fr", "es")] + [
        (rows[1]["en"], rows[1]["de"]), (rows[1]["en"], rows[1]["fr"])]
    assert few.langs == ["de", "fr", "es", "de", "fr"]


def test_l10n_train_limit_keeps_the_first_pairs(data_root):
    pairs = load_pairs(ParallelDataConfig(max_train_examples=7, max_eval_examples=3), "train")
    assert pairs == load_l10n_pairs("train", "de")[:7]
    assert len(pairs.langs) == 7


def test_l10n_settings_are_checked():
    with pytest.raises(UserError, match="l10n translates from en: set src_lang to en"):
        load_pairs(ParallelDataConfig(src_lang="de", tgt_lang="fr"), "dev")
    with pytest.raises(UserError, match="no target language 'it'"):
        load_pairs(ParallelDataConfig(tgt_lang="de+it"), "dev")
    with pytest.raises(UserError, match="l10n has its own columns"):
        load_pairs(ParallelDataConfig(columns={"en": "english"}), "dev")
    with pytest.raises(UserError, match="unknown parallel corpus 'wmt'"):
        load_pairs(ParallelDataConfig(corpus="wmt"), "dev")
    with pytest.raises(UserError, match="no split 'valid'"):
        load_pairs(ParallelDataConfig(), "valid")


# -- the user's files ------------------------------------------------------------------------

ROWS = [
    {"english": "Open the file", "german": "Datei öffnen", "french": "Ouvrir le fichier"},
    {"english": "Save as", "german": "Speichern unter", "french": "Enregistrer sous"},
    {"english": "Quit", "german": "Beenden", "french": "Quitter"},
    {"english": "Print the page", "german": "Seite drucken", "french": "Imprimer la page"},
]
COLUMNS = {"en": "english", "de": "german", "fr": "french"}


def _tsv(path, rows=ROWS):
    lines = ["\t".join(rows[0]), *("\t".join(r.values()) for r in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _jsonl(path, rows=ROWS):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def _lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("write", [_tsv, _jsonl])
def test_user_table_with_renamed_columns(tmp_path, write):
    path = write(tmp_path / ("train.tsv" if write is _tsv else "train.jsonl"))
    cfg = ParallelDataConfig(train=path, dev=path, columns=COLUMNS)
    pairs = load_pairs(cfg, "train")
    assert pairs == [(r["english"], r["german"]) for r in ROWS]
    assert pairs.langs == ["de"] * 4 and pairs.skipped == []
    every = load_pairs(cfg.model_copy(update={"tgt_lang": "fr+de", "multi_target": "all"}), "dev")
    assert every[:2] == [("Open the file", "Ouvrir le fichier"), ("Open the file", "Datei öffnen")]
    assert len(every) == 8 and every.langs[:2] == ["fr", "de"]
    sampled = load_pairs(cfg.model_copy(update={"tgt_lang": "de+fr"}), "train")
    assert [s for s, _ in sampled] == [r["english"] for r in ROWS]
    lang_column = {"de": "german", "fr": "french"}
    assert all(t == row[lang_column[lang]]
               for (_, t), lang, row in zip(sampled, sampled.langs, ROWS, strict=True))
    again = load_pairs(cfg.model_copy(update={"tgt_lang": "fr+de"}), "train")
    assert again.langs == sampled.langs  # the draw does not depend on the order of the set


def test_user_table_any_language_codes_and_columns_named_by_code(tmp_path):
    rows = [{"ja": "ファイル", "ko": "파일"}, {"ja": "保存", "ko": "저장"}]
    cfg = ParallelDataConfig(src_lang="ja", tgt_lang="ko", train=_jsonl(tmp_path / "t.jsonl",
                                                                        rows))
    assert load_pairs(cfg, "train") == [("ファイル", "파일"), ("保存", "저장")]


def test_aligned_plain_files_with_two_targets(tmp_path):
    src = _lines(tmp_path / "train.en", [r["english"] for r in ROWS])
    de = _lines(tmp_path / "train.de", [r["german"] for r in ROWS])
    fr = _lines(tmp_path / "train.fr", [r["french"] for r in ROWS])
    cfg = ParallelDataConfig(tgt_lang="de+fr", multi_target="all", train=[src, de, fr])
    pairs = load_pairs(cfg, "train")
    assert pairs == [(r["english"], r[col]) for r in ROWS for col in ("german", "french")]
    assert pairs.langs == ["de", "fr"] * 4
    sampled = load_pairs(cfg.model_copy(update={"multi_target": "sample"}), "train")
    assert len(sampled) == 4 and set(sampled.langs) <= {"de", "fr"}
    assert load_pairs(cfg.model_copy(update={"max_train_examples": 3}), "train") == pairs[:3]
    with pytest.raises(UserError, match=r"data.train lists 2 files but needs 3: the en source"):
        load_pairs(cfg.model_copy(update={"train": [src, de]}), "train")


def test_different_line_counts_name_both_files(tmp_path):
    src = _lines(tmp_path / "a.en", ["one", "two", "three"])
    de = _lines(tmp_path / "a.de", ["eins", "zwei", "drei"])
    fr = _lines(tmp_path / "a.fr", ["un", "deux"])
    cfg = ParallelDataConfig(tgt_lang="de+fr", train=[src, de, fr])
    with pytest.raises(UserError) as exc:
        load_pairs(cfg, "train")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{src} has 3 lines but {fr} has 2: parallel files must be aligned")


def test_missing_split_column_and_empty_sides(tmp_path):
    path = _tsv(tmp_path / "t.tsv")
    cfg = ParallelDataConfig(train=path, dev=path, columns=COLUMNS)
    with pytest.raises(UserError, match=r"^the data has no test split: set data.test to"):
        load_pairs(cfg, "test")
    with pytest.raises(UserError, match=rf"^{path} has no column 'es' for the language 'es'; its "
                       r"columns are \['english', 'german', 'french'\]"):
        load_pairs(cfg.model_copy(update={"tgt_lang": "es"}), "train")
    rows = [dict(r) for r in ROWS]
    rows[2]["german"] = " "
    bad = _tsv(tmp_path / "bad.tsv", rows)
    with pytest.raises(UserError, match=rf"^{bad} row 3 column 'german' is empty"):
        load_pairs(cfg.model_copy(update={"train": bad}), "train")
    src = _lines(tmp_path / "e.en", ["a", "", "c"])
    tgt = _lines(tmp_path / "e.de", ["A", "B", "C"])
    with pytest.raises(UserError, match=rf"^{src}:2 is empty"):
        load_pairs(ParallelDataConfig(train=[src, tgt]), "train")


def test_training_targets_replace_the_train_split(tmp_path):
    path = _tsv(tmp_path / "t.tsv")
    targets = _lines(tmp_path / "distilled.txt", ["T1", "T2", "T3", "T4"])
    cfg = ParallelDataConfig(train=path, dev=path, columns=COLUMNS, targets=targets)
    pairs = load_pairs(cfg, "train")
    assert pairs == [(r["english"], f"T{i}") for i, r in enumerate(ROWS, start=1)]
    assert pairs.langs == ["de"] * 4
    assert load_pairs(cfg, "dev") == [(r["english"], r["german"]) for r in ROWS]
    limited = cfg.model_copy(update={"max_train_examples": 2})
    assert [t for _, t in load_pairs(limited, "train")] == ["T1", "T2"]
    short = _lines(tmp_path / "short.txt", ["T1", "T2"])
    assert [t for _, t in load_pairs(limited.model_copy(update={"targets": short}),
                                     "train")] == ["T1", "T2"]
    wrong = _lines(tmp_path / "wrong.txt", ["T1", "T2", "T3"])
    with pytest.raises(UserError, match=rf"^{wrong} has 3 lines but the train split has 4 sources "
                       r"\(2 used\): generate the targets from the same split"):
        load_pairs(limited.model_copy(update={"targets": wrong}), "train")
