"""The joint subword vocabulary: special tokens, exact detokenization, language records."""

from __future__ import annotations

import json
import random

import pytest
from transformers import AutoTokenizer

from textdistill.errors import UserError
from textdistill.seq2seq.vocab import (
    check_languages,
    decode,
    lang_tag,
    load_tokenizer,
    read_languages,
    train_tokenizer,
)

EN = "the a house cat is was small big green runs quickly window file open saved".split()
DE = "das ein Haus Katze ist war klein groß grün läuft schnell Fenster Datei öffnen".split()


def _corpus(n: int = 300) -> list[str]:
    rnd = random.Random(0)
    lines = []
    for _ in range(n):
        words = EN if rnd.random() < 0.5 else DE
        lines.append(" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 9))) + ".")
    return lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    tok = train_tokenizer(_corpus(), 120, out, src_lang="en", tgt_lang="de", lang_tags=["de"])
    return tok, out


def test_special_tokens_and_eos(trained):
    tok, _ = trained
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "</s>", "<unk>", "<2de>"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("das Haus")["input_ids"]
    assert ids[-1] == 1 and 1 not in ids[:-1]
    assert tok.convert_ids_to_tokens(tok(lang_tag("de") + " Haus")["input_ids"])[0] == "<2de>"
    assert len(tok) <= 120


def test_saved_folder_loads_with_autotokenizer(trained):
    tok, out = trained
    again = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    text = "the small cat runs quickly."
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert load_tokenizer(out)(text)["input_ids"] == tok(text)["input_ids"]
    meta = json.loads((out / "textdistill.json").read_text())
    assert meta["src_lang"] == "en" and meta["tgt_lang"] == "de" and meta["lang_tags"] == ["de"]
    assert read_languages(out) == ("en", "de")


def test_detokenization_is_exact(trained):
    tok, _ = trained
    lines = [*_corpus(50), "das  Haus   ist grün.", "trailing  ", "größe öffnen"]
    ids = [tok(line)["input_ids"] for line in lines]
    assert decode(tok, ids) == lines
    # The one documented loss: a space at the start of a line (as in SentencePiece).
    assert decode(tok, [tok(" leading")["input_ids"]]) == ["leading"]


def test_unseen_characters_become_unk_and_are_dropped(trained):
    tok, _ = trained
    ids = tok("cat ☃ house")["input_ids"]
    assert tok.unk_token_id in ids
    assert decode(tok, [ids]) == ["cat  house"]


def test_bpe_model(tmp_path):
    tok = train_tokenizer(_corpus(), 100, tmp_path, model_type="bpe")
    line = "die Katze  war klein."
    assert decode(tok, [tok(line)["input_ids"]]) == [line]
    assert read_languages(tmp_path) == (None, None)


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="unknown vocabulary model 'wordpiece'"):
        train_tokenizer(_corpus(), 100, model_type="wordpiece")
    with pytest.raises(UserError, match="vocab_size 5 is too small"):
        train_tokenizer(_corpus(), 5)
    with pytest.raises(UserError, match="all training lines are empty"):
        train_tokenizer(["", "  "], 100)
    with pytest.raises(UserError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_check_languages(trained, tmp_path):
    _, out = trained
    check_languages(out, "en", "de")
    with pytest.raises(UserError, match=r"trained for en->de but the data is en->fr"):
        check_languages(out, "en", "fr")
    with pytest.raises(UserError, match=r"trained for en->de but the data is de->en"):
        check_languages(out, "de", "en")
    with pytest.raises(UserError, match="does not record its languages"):
        check_languages(tmp_path, "en", "de")
    with pytest.raises(UserError, match="does not exist"):
        check_languages(tmp_path / "missing", "en", "de")
