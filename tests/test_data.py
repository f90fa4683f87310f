"""Corpora (splits, readers), tokenized datasets, length-bucketed batches and padding."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from textdistill.data.batching import (
    LengthBucketBatchSampler,
    PadCollator,
    TokenizedDataset,
    make_loader,
)
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
    return load_classification("rotten-tomatoes")


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
    again = load_classification("rotten-tomatoes")
    assert again.splits == rotten.splits
    assert rotten.split("dev")[0] == again.split("dev")[0]


def test_unknown_split_and_corpus(rotten):
    with pytest.raises(UserError, match="no split 'validation'"):
        rotten.split("validation")
    with pytest.raises(UserError, match="unknown corpus 'sst2'"):
        load_classification("sst2")
    with pytest.raises(UserError, match="unknown corpus 'sst2'"):
        describe("sst2")


def test_bbc_news_has_five_labels():
    corpus = load_classification("bbc-news")
    assert corpus.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert sum(len(v) for v in corpus.splits.values()) == 2225
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
def test_pad_collator_pads_and_masks(pad_id):
    rows = [{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [9], "labels": 0},
            {"input_ids": [1, 2, 3, 4, 8], "labels": 1}]
    batch = PadCollator(pad_id)(rows)
    assert batch["input_ids"].shape == (3, 5)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 5]
    assert batch["input_ids"][0].tolist() == [5, 6, 7, pad_id, pad_id]
    assert batch["input_ids"][1].tolist() == [9, pad_id, pad_id, pad_id, pad_id]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0, 0, 0]
    assert (batch["input_ids"][batch["attention_mask"] == 0] == pad_id).all()
    assert batch["labels"].tolist() == [1, 0, 1]


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
    loader = make_loader(data, batch_size=8, shuffle=True, seed=3)
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
