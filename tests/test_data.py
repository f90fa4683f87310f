"""Corpora (splits, readers), tokenized datasets, length-bucketed batches and padding."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter

import pytest
import torch

from textdistill.config import Columns, DataConfig
from textdistill.data.batching import LengthBucketBatchSampler, TokenizedDataset, pad
from textdistill.data.corpora import (
    Example,
    describe,
    iter_mono,
    load_classification,
    read_l10n,
    subsample,
)
from textdistill.errors import UserError
from textdistill.paths import DATA_ENV


@pytest.fixture(scope="module")
def rotten():
    return load_classification(DataConfig(corpus="rotten-tomatoes"))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from textdistill.models.classifier import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


# -- classification corpora ------------------------------------------------------------------

def test_rotten_tomatoes_split_sizes(rotten):
    assert rotten.labels == ["rotten", "fresh"]
    assert {k: len(v) for k, v in rotten.splits.items()} == {
        "train": 10246, "dev": 1281, "test": 1281}
    assert all(isinstance(e, Example) and e.text and e.label in (0, 1)
               for rows in rotten.splits.values() for e in rows)


def test_rotten_tomatoes_splits_are_stratified(rotten):
    rows = [e for part in rotten.splits.values() for e in part]
    overall = sum(e.label for e in rows) / len(rows)
    assert 0.5 < overall < 0.65  # fresh 7,403 of 12,808
    for split, part in rotten.splits.items():
        share = sum(e.label for e in part) / len(part)
        assert abs(share - overall) < 0.01, split


def test_rotten_tomatoes_splits_are_deterministic(rotten):
    again = load_classification(DataConfig())
    assert again.splits == rotten.splits
    assert rotten.split("dev")[0] == again.split("dev")[0]


def test_unknown_split_and_corpus(rotten):
    with pytest.raises(UserError, match="no split 'validation'"):
        rotten.split("validation")
    with pytest.raises(UserError, match="unknown corpus 'sst2'"):
        load_classification(DataConfig(corpus="sst2"))
    with pytest.raises(UserError, match="unknown corpus 'sst2'"):
        describe("sst2")


def test_bbc_news_has_five_labels():
    corpus = load_classification(DataConfig(corpus="bbc-news"))
    assert corpus.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert {k: len(v) for k, v in corpus.splits.items()} == {"train": 1779, "dev": 223,
                                                            "test": 223}
    for split, part in corpus.splits.items():
        assert set(Counter(e.label for e in part)) == set(range(5)), split
    info = describe("bbc-news")
    assert info["splits"]["dev"]["rows"] == len(corpus.split("dev"))
    assert set(info["splits"]["test"]["labels"]) == set(corpus.labels)


def test_subsample_is_seeded():
    rows = [Example(str(i), i % 2) for i in range(100)]
    a = subsample(rows, 10, seed=3)
    assert len(a) == 10 and len(set(a)) == 10 and set(a) <= set(rows)
    assert subsample(rows, 10, seed=3) == a
    assert subsample(rows, 10, seed=4) != a
    assert subsample(rows, None, seed=3) is rows
    assert subsample(rows, 500, seed=3) is rows


PRESET_SPLITS = {
    # sha256 of "label\ttext" lines of each split: the rows and order of the original loaders
    "rotten-tomatoes": {"train": "693e9c5a25f7926f", "dev": "d3e6754b2de7ed5e",
                        "test": "dc57af3e9fbf1d25"},
    "bbc-news": {"train": "be79bc2875926e50", "dev": "13f9900f30990b95",
                 "test": "c945f8054e954910"},
}


@pytest.mark.parametrize("name", list(PRESET_SPLITS))
def test_presets_keep_their_rows_and_order(name):
    corpus = load_classification(DataConfig(corpus=name))
    digests = {
        split: hashlib.sha256("\n".join(f"{e.label}\t{e.text}" for e in rows).encode())
        .hexdigest()[:16]
        for split, rows in corpus.splits.items()
    }
    assert digests == PRESET_SPLITS[name]


def test_presets_have_their_own_columns_and_labels():
    with pytest.raises(UserError, match="rotten-tomatoes has its own columns.*remove data.columns"):
        load_classification(DataConfig(corpus="rotten-tomatoes", columns=Columns(text="review")))
    with pytest.raises(UserError, match="has its own labels"):
        load_classification(DataConfig(corpus="rotten-tomatoes", labels=["fresh", "rotten"]))
    same = load_classification(DataConfig(corpus="rotten-tomatoes", labels=["rotten", "fresh"]))
    assert same.labels == ["rotten", "fresh"]


# -- the user's classification files ---------------------------------------------------------

def _write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _reviews(n, start=0):
    """Synthetic reviews: every third one negative."""
    return [{"id": str(i), "review": f"review {i} was {'dull' if i % 3 == 0 else 'lovely'}",
             "sentiment": "neg" if i % 3 == 0 else "pos"} for i in range(start, start + n)]


REVIEW_COLUMNS = Columns(text="review", label="sentiment")


def _files_config(tmp_path, train, dev, test=None, **kwargs) -> DataConfig:
    paths = {name: _write_csv(tmp_path / f"{name}.csv", rows)
             for name, rows in (("train", train), ("dev", dev), ("test", test)) if rows}
    return DataConfig(**paths, **{"columns": REVIEW_COLUMNS, **kwargs})


def test_user_csv_with_other_columns_and_string_labels(tmp_path):
    cfg = _files_config(tmp_path, _reviews(30), _reviews(9, start=30))
    corpus = load_classification(cfg)
    assert corpus.labels == ["neg", "pos"]
    assert list(corpus.splits) == ["train", "dev"]
    assert [len(v) for v in corpus.splits.values()] == [30, 9]
    assert corpus.split("train")[:2] == [Example("review 0 was dull", 0),
                                         Example("review 1 was lovely", 1)]
    with pytest.raises(UserError, match=r"has no split 'test'.*data\.test"):
        corpus.split("test")
    with_test = load_classification(_files_config(tmp_path, _reviews(30), _reviews(9, 30),
                                                  _reviews(6, 40)))
    assert [len(v) for v in with_test.splits.values()] == [30, 9, 6]


def test_user_labels_given_in_order(tmp_path):
    cfg = _files_config(tmp_path, _reviews(12), _reviews(3), labels=["pos", "neg", "mixed"])
    corpus = load_classification(cfg)
    assert corpus.labels == ["pos", "neg", "mixed"]
    assert [e.label for e in corpus.split("train")[:3]] == [1, 0, 0]


def test_integer_labels_sort_numerically(tmp_path):
    rows = [{"text": f"text {i}", "label": [10, 2, 1][i % 3]} for i in range(9)]
    cfg = DataConfig(train=_write_jsonl(tmp_path / "train.jsonl", rows),
                     dev=_write_jsonl(tmp_path / "dev.jsonl", rows[:3]))
    corpus = load_classification(cfg)
    assert corpus.labels == ["1", "2", "10"]
    assert [e.label for e in corpus.split("dev")] == [2, 1, 0]
    # integer-valued strings (CSV has no other kind) sort the same way
    csv_rows = [{"text": r["text"], "label": str(r["label"])} for r in rows]
    cfg = DataConfig(train=_write_csv(tmp_path / "train.csv", csv_rows),
                     dev=_write_csv(tmp_path / "dev.csv", csv_rows[:3]))
    assert load_classification(cfg).labels == ["1", "2", "10"]


def test_text_pair_column(tmp_path):
    rows = [{"premise": f"a cat sat on mat {i}", "hypothesis": f"an animal sat {i}",
             "gold": ["entailment", "neutral", "contradiction"][i % 3]} for i in range(9)]
    columns = Columns(text="premise", text_pair="hypothesis", label="gold")
    cfg = DataConfig(train=_write_jsonl(tmp_path / "nli.jsonl", rows),
                     dev=_write_jsonl(tmp_path / "nli_dev.jsonl", rows[:3]), columns=columns)
    corpus = load_classification(cfg)
    assert corpus.labels == ["contradiction", "entailment", "neutral"]
    assert corpus.split("dev")[1] == Example("a cat sat on mat 1", 2, "an animal sat 1")
    rows[4]["hypothesis"] = "  "
    train = _write_jsonl(tmp_path / "nli_bad.jsonl", rows)
    with pytest.raises(UserError, match=rf"^{train} row 5 has an empty 'hypothesis'"):
        load_classification(cfg.model_copy(update={"train": train}))


def test_one_file_is_split_stratified_and_seeded(tmp_path):
    rows = _reviews(300)
    path = _write_csv(tmp_path / "all.csv", rows)
    corpus = load_classification(DataConfig(corpus=path, columns=REVIEW_COLUMNS))
    assert corpus.name == path and corpus.labels == ["neg", "pos"]
    # test: 10% of 300; dev: 0.1 / 0.9 of the other 270 (rounded up, as the presets' splits)
    assert {k: len(v) for k, v in corpus.splits.items()} == {"train": 239, "dev": 31, "test": 30}
    for split, part in corpus.splits.items():
        assert sum(e.label == 0 for e in part) / len(part) == pytest.approx(1 / 3, abs=0.02)
        numbers = [int(e.text.split()[1]) for e in part]
        assert numbers == sorted(numbers), split  # file order within a split
    everything = sorted(e.text for part in corpus.splits.values() for e in part)
    assert everything == sorted(r["review"] for r in rows)
    again = load_classification(DataConfig(corpus=path, columns=REVIEW_COLUMNS))
    assert again.splits == corpus.splits
    other = load_classification(DataConfig(corpus=path, columns=REVIEW_COLUMNS, split_seed=14))
    assert other.splits["dev"] != corpus.splits["dev"]
    bigger = load_classification(DataConfig(corpus=path, columns=REVIEW_COLUMNS,
                                            dev_fraction=0.2, test_fraction=0.2))
    assert [len(v) for v in bigger.splits.values()] == [180, 60, 60]


def test_one_dataset_folder_as_corpus(tmp_path):
    import datasets

    folder = tmp_path / "reviews_hf"
    datasets.Dataset.from_list(_reviews(50)).save_to_disk(str(folder))
    corpus = load_classification(DataConfig(corpus=str(folder), columns=REVIEW_COLUMNS))
    assert [len(v) for v in corpus.splits.values()] == [40, 5, 5]


def _message(cfg) -> str:
    with pytest.raises(UserError) as exc:
        load_classification(cfg)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_user_data_errors_name_the_file(tmp_path):
    dev = _write_csv(tmp_path / "dev.csv", _reviews(3))
    missing = tmp_path / "nope.csv"
    assert _message(DataConfig(train=str(missing), dev=dev)) == f"file not found: {missing}"
    assert "unknown corpus" in _message(DataConfig(corpus=str(missing)))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _message(DataConfig(train=str(empty), dev=dev)).startswith(f"{empty} is empty")
    fake = tmp_path / "train.parquet"
    fake.write_text("review,sentiment\na,pos\n")
    assert f"{fake} is not a valid Parquet file" in _message(DataConfig(train=str(fake), dev=dev))


def test_missing_column_lists_the_files_columns(tmp_path):
    cfg = _files_config(tmp_path, _reviews(6), _reviews(3), columns=Columns(text="text"))
    msg = _message(cfg)
    assert msg.startswith(f"{cfg.train} has no column 'text'")
    assert "['id', 'review', 'sentiment']" in msg and "data.columns.text" in msg


def test_unseen_dev_label_and_label_not_in_labels(tmp_path):
    dev_rows = _reviews(3)
    dev_rows[1]["sentiment"] = "mixed"
    cfg = _files_config(tmp_path, _reviews(6), dev_rows)
    msg = _message(cfg)
    assert msg.startswith(f"{cfg.dev} row 2 (dev split) has the label 'mixed'")
    assert str(cfg.train) in msg and "data.labels" in msg
    msg = _message(cfg.model_copy(update={"labels": ["neg", "pos"]}))
    assert msg.startswith(f"{cfg.dev} row 2 has the label 'mixed', which is not in data.labels")
    assert "add it to data.labels" in msg
    assert _message(cfg.model_copy(update={"labels": ["neg", "neg"]})).startswith(
        "data.labels names 'neg' twice")


def test_empty_text_and_missing_label(tmp_path):
    rows = _reviews(6)
    rows[3]["review"] = ""
    cfg = _files_config(tmp_path, rows, _reviews(3))
    assert _message(cfg) == (f"{cfg.train} row 4 has an empty 'review'; fill it in or remove "
                             "the row")
    rows = _reviews(6)
    rows[2]["sentiment"] = " "
    cfg = _files_config(tmp_path, rows, _reviews(3))
    assert _message(cfg).startswith(f"{cfg.train} row 3 has no label (column 'sentiment')")
    jl = _write_jsonl(tmp_path / "nolabel.jsonl", [{"review": "a", "sentiment": None}])
    assert "row 1 has no label" in _message(cfg.model_copy(update={"train": jl}))


def test_one_file_too_small_to_stratify(tmp_path):
    rows = _reviews(30)
    rows[0]["sentiment"] = "rare"
    path = _write_csv(tmp_path / "all.csv", rows)
    msg = _message(DataConfig(corpus=path, columns=REVIEW_COLUMNS))
    assert msg.startswith(f"cannot split {path} into train/dev/test by label")


def test_describe_user_files(tmp_path):
    path = _write_csv(tmp_path / "r.csv", _reviews(9))
    info = describe(path, text="review", label="sentiment")
    assert info["rows"] == 9 and info["format"] == "csv"
    assert info["columns"] == ["id", "review", "sentiment"]
    assert info["labels"] == {"pos": 6, "neg": 3}
    assert info["text"] == {"column": "review", "mean_words": 4.0, "median_words": 4,
                            "max_words": 4}
    text = tmp_path / "notes.txt"
    text.write_text("one two three\n\nfour five\nsix\n", encoding="utf-8")
    assert describe(str(text)) == {"name": str(text), "format": "text", "lines": 3,
                                   "mean_words": 2.0, "median_words": 2, "max_words": 3}
    assert describe("rotten-tomatoes")["splits"]["dev"]["rows"] == 1281


# -- tokenized datasets and padding ----------------------------------------------------------

def test_empty_dataset_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="the dataset is empty"):
        TokenizedDataset([], tokenizer, 32)


def test_tokenized_dataset_truncates(tokenizer):
    rows = [Example("good", 1), Example(" ".join(["word"] * 100), 0)]
    data = TokenizedDataset(rows, tokenizer, max_length=16)
    assert len(data) == 2
    assert data.lengths() == [3, 16]  # [CLS] good [SEP]; truncated to max_length
    assert data.labels == [1, 0]
    assert data[1]["labels"] == 0
    assert data.pad_id == tokenizer.pad_token_id


@pytest.mark.parametrize("pad_id", [0, 7])
def test_pad_pads_and_masks(pad_id):
    ids, mask = pad([[5, 6, 7], [9], [1, 2, 3, 4, 8]], pad_id)
    assert ids.shape == mask.shape == (3, 5)
    assert ids.dtype == mask.dtype == torch.long
    assert mask.sum(1).tolist() == [3, 1, 5]
    assert ids[0].tolist() == [5, 6, 7, pad_id, pad_id]
    assert ids[1].tolist() == [9, pad_id, pad_id, pad_id, pad_id]
    assert mask[1].tolist() == [1, 0, 0, 0, 0]
    assert (ids[mask == 0] == pad_id).all()


def test_tokenized_dataset_of_text_pairs(tokenizer):
    single = TokenizedDataset([Example("a cat sat", 0)], tokenizer, max_length=32)
    pair = TokenizedDataset([Example("a cat sat", 0, "an animal sat")], tokenizer, max_length=32)
    assert pair.lengths()[0] == single.lengths()[0] + 4  # an animal sat [SEP]
    assert pair.input_ids[0][:single.lengths()[0]] == single.input_ids[0]


# -- length-bucketed batches -----------------------------------------------------------------

_rng = random.Random(0)
LENGTHS = [_rng.randint(3, 64) for _ in range(1003)]


def _flat(batches):
    return [i for b in batches for i in b]


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_sampler_yields_every_index_once_per_epoch(epoch):
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=8, seed=1, pool_batches=5)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert sorted(_flat(batches)) == list(range(len(LENGTHS)))
    assert len(sampler) == len(batches) == -(-len(LENGTHS) // 8)
    assert all(1 <= len(b) <= 8 for b in batches)
    assert sum(len(b) < 8 for b in batches) == 1  # only the last pool has a short batch


def test_sampler_batches_are_length_homogeneous():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=8, seed=1, pool_batches=5)
    batches = list(sampler)
    # Each batch is a run of a length-sorted pool.
    for b in batches:
        lens = [LENGTHS[i] for i in b]
        assert lens == sorted(lens)
    spread = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches)
    shuffled = list(range(len(LENGTHS)))
    random.Random(2).shuffle(shuffled)
    plain = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    plain_spread = sum(max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in plain)
    assert spread < plain_spread / 4


def test_sampler_with_one_pool_cuts_disjoint_length_ranges():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=8, seed=1, pool_batches=1000)
    batches = sorted(sampler, key=lambda b: (LENGTHS[b[0]], LENGTHS[b[-1]]))
    for a, b in zip(batches, batches[1:], strict=False):
        assert LENGTHS[a[-1]] <= LENGTHS[b[0]]


def test_sampler_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = LengthBucketBatchSampler(LENGTHS, batch_size=8, seed=seed, pool_batches=5)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4)
    assert order(1, 3) != order(2, 3)
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=8, seed=1, pool_batches=5)
    sampler.set_epoch(3)
    assert list(sampler) == list(sampler)  # iterating twice does not advance anything


def test_sampler_without_shuffle_is_sorted_and_fixed():
    sampler = LengthBucketBatchSampler(LENGTHS, batch_size=10, shuffle=False)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 101
    flat = _flat(batches)
    assert sorted(flat) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in flat] == sorted(LENGTHS)
    sampler.set_epoch(9)
    assert list(sampler) == batches


def test_make_loader_covers_the_data_and_leaves_the_global_rng_alone(tokenizer):
    rows = [Example(" ".join(["w"] * (1 + i % 13)), i % 2) for i in range(50)]
    data = TokenizedDataset(rows, tokenizer, max_length=32)
    loader = data.loader(8, shuffle=True, seed=3)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    seen = []
    for idx, batch in zip(loader.batch_sampler, loader, strict=True):
        assert batch["attention_mask"].sum(1).tolist() == [data.lengths()[i] for i in idx]
        assert batch["labels"].tolist() == [data.labels[i] for i in idx]
        seen += idx
    assert sorted(seen) == list(range(50))
    # Dropout after a mid-epoch resume depends on this: starting an epoch draws no randomness
    # from the global generator.
    assert torch.equal(torch.get_rng_state(), state)


# -- corpora in the data directory -----------------------------------------------------------

def test_l10n_reader(data_root):
    rows = read_l10n("dev")
    assert len(rows) == 2000
    assert set(rows[0]) == {"en", "de", "fr", "es", "source"}
    assert all(r["en"].strip() and r["de"].strip() and r["fr"].strip() and r["es"].strip()
               for r in rows)
    assert {r["source"] for r in rows} <= {"gettext", "gimp", "ddtp", "debref", "handbook",
                                           "gnomehelp"}
    assert len({r["en"] for r in rows}) == len(rows)  # one row per English string
    german = read_l10n("test", langs=("de",))
    assert set(german[0]) == {"en", "de", "source"}
    assert len(german) == 2000


def test_l10n_reader_rejects_unknown_split_and_language(data_root):
    with pytest.raises(UserError, match="no split 'valid'"):
        read_l10n("valid")
    with pytest.raises(UserError, match="no language 'it'"):
        read_l10n("dev", langs=("de", "it"))


def test_mono_reader(data_root):
    paragraphs = list(iter_mono(limit=200))
    assert 0 < len(paragraphs) <= 200
    assert all(p.strip() and "\n" not in p for p in paragraphs)
    assert sum(len(p.split()) for p in paragraphs) > 200 * 5
    assert list(iter_mono(limit=200)) == paragraphs


def test_readers_name_the_variable_when_data_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(UserError) as exc:
        read_l10n("dev")
    msg = str(exc.value)
    assert "parallel/l10n.dev.tsv is missing" in msg
    assert str(tmp_path) in msg and f"set {DATA_ENV}" in msg
    with pytest.raises(UserError, match=f"mono/en.txt.gz is missing.*{DATA_ENV}"):
        next(iter_mono())
