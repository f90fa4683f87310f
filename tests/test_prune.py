"""Vocabulary pruning: a tiny BERT classifier with a WordPiece vocabulary written here (kept rows,
exact logits, parameter counts, what dev loses, the stage, its errors), then a micro-2 student
with MiniLM's vocabulary pruned to a few hundred rotten-tomatoes rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import LABELS
from tokenizers import Tokenizer, normalizers
from tokenizers.models import WordLevel
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    PreTrainedTokenizerFast,
)
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
from typer.testing import CliRunner

from textdistill import recipe as recipe_mod
from textdistill.cli import app
from textdistill.config import EvaluateConfig, PruneConfig, Recipe, load_config, validate
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import load_classification, subsample
from textdistill.errors import UserError
from textdistill.evaluate import predict_labels, run_evaluate
from textdistill.models.classifier import build_student, load_classifier
from textdistill.models.common import count_parameters, save_pretrained_atomic
from textdistill.models.prune import (
    _pruned_tokenizer,
    _wordpiece_spec,
    prune_vocabulary,
    unknown_tokens,
)
from textdistill.stages import STAGES

VOCAB = ["[unused0]", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat",
         "ran", "on", "mat", "a", ".", "big", "red", "run", "runs", "##s", "##ing", "fox"]
TRAIN = ["The cat sat on the mat.", "A dog ran.", "the cats run"]
KEPT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",  # the special tokens ([unused0] is not)
        "the", "cat", "sat", "on", "mat", ".", "a", "dog", "ran", "##s", "run"]
"""The tokens of TRAIN (lowercased; "cats" is cat ##s) and the special tokens, by hand."""
DEV = ["the big dog runs.", "a red fox sat zebra", "the cat ran"]
"""big, red, fox: pruned words with no kept pieces ([UNK]); runs: re-split as run ##s; zebra
was [UNK] before pruning already."""
HIDDEN, FFN, POSITIONS, TYPES, LAYERS = 8, 16, 32, 2, 2


def kept_ids() -> list[int]:
    return sorted(VOCAB.index(token) for token in KEPT)


def tiny_tokenizer(tmp_path: Path) -> BertTokenizer:
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(tmp_path / "vocab.txt"))


def tiny_config(**extra) -> BertConfig:
    return BertConfig(vocab_size=len(VOCAB), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                      num_attention_heads=2, intermediate_size=FFN,
                      max_position_embeddings=POSITIONS, type_vocab_size=TYPES,
                      pad_token_id=VOCAB.index("[PAD]"), **extra)


def tiny_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, id2label={0: "neg", 1: "pos"},
                         label2id={"neg": 0, "pos": 1},
                         architectures=["BertForSequenceClassification"])
    return BertForSequenceClassification(config).eval()


def tiny_classifier_folder(tmp_path: Path) -> tuple[BertTokenizer, BertForSequenceClassification]:
    """The tiny classifier saved in ``tmp_path/classifier`` (and returned, with its tokenizer)."""
    tokenizer, model = tiny_tokenizer(tmp_path), tiny_classifier()
    save_pretrained_atomic(model, tokenizer, tmp_path / "classifier")
    return tokenizer, model


def bert_classifier_params(vocab: int) -> int:
    """Parameters of the tiny BERT classifier with ``vocab`` word embeddings, by hand."""
    h, f = HIDDEN, FFN
    embeddings = (vocab + POSITIONS + TYPES) * h + 2 * h  # three tables and a LayerNorm
    layer = 4 * (h * h + h) + 2 * h + (h * f + f) + (f * h + h) + 2 * h
    return embeddings + LAYERS * layer + (h * h + h) + (h * 2 + 2)  # pooler, 2-label head


@torch.no_grad()
def logits(model, tokenizer, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
    args = (texts,) if pairs is None else (texts, pairs)
    return model.eval()(**tokenizer(*args, padding=True, return_tensors="pt")).logits


# -- the function ----------------------------------------------------------------------------

def test_kept_rows_logits_and_parameters(tmp_path):
    tokenizer, model = tiny_tokenizer(tmp_path), tiny_classifier()
    pruned = prune_vocabulary(model, tokenizer, TRAIN)
    ids = kept_ids()
    assert pruned.kept_ids == ids
    assert pruned.tokenizer.convert_ids_to_tokens(list(range(len(ids)))) == [VOCAB[i]
                                                                             for i in ids]
    old_rows = model.bert.embeddings.word_embeddings.weight
    new_rows = pruned.model.bert.embeddings.word_embeddings.weight
    assert new_rows.shape == (len(ids), HIDDEN)
    assert torch.equal(new_rows, old_rows[torch.tensor(ids)])
    assert pruned.model.config.vocab_size == len(pruned.tokenizer) == len(ids)
    assert pruned.model.config.pad_token_id == pruned.tokenizer.pad_token_id == 0  # was 1
    assert pruned.model.bert.embeddings.word_embeddings.padding_idx == 0
    # Everything else is the original's, and the original is untouched.
    new_state, old_state = pruned.model.state_dict(), model.state_dict()
    word = "bert.embeddings.word_embeddings.weight"
    assert all(torch.equal(new_state[k], v) for k, v in old_state.items() if k != word)
    assert old_state[word].shape[0] == len(VOCAB)

    for text in TRAIN:  # the same tokens as before, through the kept-id table
        old = tokenizer(text).input_ids
        assert [ids[i] for i in pruned.tokenizer(text).input_ids] == old
    texts = ["the dog sat on a mat.", "cats run", "The mat ran"]
    assert torch.equal(logits(pruned.model, pruned.tokenizer, texts),
                       logits(model, tokenizer, texts))

    assert count_parameters(model)["params"] == bert_classifier_params(len(VOCAB))
    after = count_parameters(pruned.model)
    assert after["params"] == bert_classifier_params(len(KEPT))
    assert after["params"] - after["params_no_embeddings"] == (
        (len(KEPT) + POSITIONS + TYPES) * HIDDEN + 2 * HIDDEN)


def test_dev_tokens_outside_the_vocabulary(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    pruned = prune_vocabulary(tiny_classifier(), tokenizer, TRAIN)
    assert unknown_tokens(tokenizer, pruned, DEV) == {
        "examples": 3, "tokens": 5 + 5 + 3,
        "pruned_tokens": 4, "examples_with_pruned_tokens": 2,  # big, runs; red, fox
        "unk_tokens": 3, "examples_with_unk": 2}  # big; red, fox (zebra was [UNK] already)
    new = pruned.tokenizer
    assert new.convert_ids_to_tokens(new(DEV[0]).input_ids) == [
        "[CLS]", "the", "[UNK]", "dog", "run", "##s", ".", "[SEP]"]
    assert new.convert_ids_to_tokens(new(DEV[1]).input_ids) == [
        "[CLS]", "a", "[UNK]", "[UNK]", "sat", "[UNK]", "[SEP]"]


def test_sentence_pairs(tmp_path):
    tokenizer, model = tiny_tokenizer(tmp_path), tiny_classifier()
    pruned = prune_vocabulary(model, tokenizer, ["the cat sat", "a dog"], ["on the mat", "ran"])
    assert pruned.kept_ids == sorted(VOCAB.index(t) for t in [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "a", "dog", "on",
        "mat", "ran"])
    texts, pairs = ["the dog ran", "a cat"], ["on a mat", "sat on the dog"]
    assert torch.equal(logits(pruned.model, pruned.tokenizer, texts, pairs),
                       logits(model, tokenizer, texts, pairs))


def test_tied_output_layer(tmp_path):
    """A model with an output layer over the vocabulary (here tied, with a bias) keeps the same
    rows of it."""
    tokenizer = tiny_tokenizer(tmp_path)
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config()).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    pruned = prune_vocabulary(model, tokenizer, TRAIN)
    ids = torch.tensor(pruned.kept_ids)
    head = pruned.model.get_output_embeddings()
    assert head.weight is pruned.model.get_input_embeddings().weight
    assert torch.equal(head.bias, model.cls.predictions.bias[ids])
    assert pruned.model.cls.predictions.bias is head.bias
    texts = ["the cat sat on a mat.", "dogs run"]
    assert torch.equal(logits(pruned.model, pruned.tokenizer, texts),
                       logits(model, tokenizer, texts)[..., ids])
    save_pretrained_atomic(pruned.model, pruned.tokenizer, tmp_path / "mlm")
    loaded = BertForMaskedLM.from_pretrained(tmp_path / "mlm", use_safetensors=True)
    assert torch.equal(logits(loaded, pruned.tokenizer, texts),
                       logits(pruned.model, pruned.tokenizer, texts))


def test_save_and_load(tmp_path):
    tokenizer, model = tiny_classifier_folder(tmp_path)
    pruned = prune_vocabulary(model, tokenizer, TRAIN)
    save_pretrained_atomic(pruned.model, pruned.tokenizer, tmp_path / "pruned")
    loaded, loaded_tokenizer = load_classifier(str(tmp_path / "pruned"), ["neg", "pos"])
    assert type(AutoTokenizer.from_pretrained(tmp_path / "pruned")) is type(tokenizer)
    assert loaded.config.vocab_size == len(loaded_tokenizer) == len(KEPT)
    assert loaded_tokenizer.do_lower_case and loaded_tokenizer("THE CAT").input_ids == (
        pruned.tokenizer("the cat").input_ids)
    texts = DEV + TRAIN
    assert torch.equal(logits(loaded, loaded_tokenizer, texts),
                       logits(pruned.model, pruned.tokenizer, texts))


def test_generic_fast_wordpiece_tokenizer(tmp_path):
    """A WordPiece tokenizer of no model class (``tokenizer.json`` alone) gets its
    post-processor's and padding's token ids renumbered."""
    backend = tiny_tokenizer(tmp_path).backend_tokenizer
    backend.enable_padding(pad_id=VOCAB.index("[PAD]"), pad_token="[PAD]")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        mask_token="[MASK]")
    loaded = _pruned_tokenizer(tokenizer, _wordpiece_spec(tokenizer), kept_ids())
    assert loaded.backend_tokenizer.padding["pad_id"] == 0  # until a call resets it
    pruned = prune_vocabulary(tiny_classifier(), tokenizer, TRAIN)
    assert pruned.kept_ids == kept_ids() and type(pruned.tokenizer) is type(tokenizer)
    new = pruned.tokenizer
    assert new.convert_ids_to_tokens(new("a dog", "the cat").input_ids) == [
        "[CLS]", "a", "dog", "[SEP]", "the", "cat", "[SEP]"]


def test_token_ids_of_the_config_are_kept(tmp_path):
    model = tiny_classifier()
    model.config.eos_token_id = VOCAB.index("fox")  # not in TRAIN, not a special token
    pruned = prune_vocabulary(model, tiny_tokenizer(tmp_path), TRAIN)
    assert pruned.kept_ids == sorted([*kept_ids(), VOCAB.index("fox")])
    assert pruned.kept_ids[pruned.model.config.eos_token_id] == VOCAB.index("fox")


def test_tokenization_that_would_change_is_refused(tmp_path):
    """A backend changed in memory (no lowercasing), which the saved folder cannot express
    (its settings say do_lower_case), would tokenize "The" differently once pruned."""
    tokenizer = tiny_tokenizer(tmp_path)
    tokenizer.backend_tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    with pytest.raises(UserError) as exc:
        prune_vocabulary(tiny_classifier(), tokenizer, TRAIN)
    assert ("does not tokenize the training texts as the original does (1 of 3 differ; first: "
            "'The cat sat on the mat.')") in str(exc.value)


@pytest.mark.parametrize("texts", [[], [""], ["  "]])
def test_no_training_texts(tmp_path, texts):
    with pytest.raises(UserError, match="training texts hold no tokens"):
        prune_vocabulary(tiny_classifier(), tiny_tokenizer(tmp_path), texts)


def test_unsupported_tokenizers(tmp_path):
    words = {token: i for i, token in enumerate(VOCAB)}
    word_level = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(words, unk_token="[UNK]")), unk_token="[UNK]")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    slow = BertTokenizerLegacy(vocab_file=str(tmp_path / "vocab.txt"))
    for tokenizer, what in ((word_level, "a WordLevel model"),
                            (slow, "not a fast (tokenizers) tokenizer")):
        with pytest.raises(UserError) as exc:
            prune_vocabulary(tiny_classifier(), tokenizer, TRAIN)
        assert "supports fast WordPiece tokenizers (BERT-style" in str(exc.value)
        assert f"{type(tokenizer).__name__} ({what})" in str(exc.value)


# -- the stage -------------------------------------------------------------------------------

def tiny_data(tmp_path: Path) -> list[str]:
    """TRAIN, DEV and a test split as CSV files: the data overrides of a stage."""
    splits = {"train": TRAIN, "dev": DEV, "test": ["the dog sat on a mat", "a cat"]}
    for split, texts in splits.items():
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((text, "pos" if i % 2 else "neg") for i, text in enumerate(texts))
    return [f"data.{split}={tmp_path / f'{split}.csv'}" for split in splits]


def test_prune_stage(tmp_path):
    tokenizer, model = tiny_classifier_folder(tmp_path)
    cfg = load_config(PruneConfig, None, [f"model={tmp_path / 'classifier'}",
                                          *tiny_data(tmp_path)])
    out = tmp_path / "pruned"
    metrics = STAGES["prune"].execute(cfg, out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert load_config(PruneConfig, out / "config.yaml") == cfg
    assert metrics["vocab_before"] == len(VOCAB) and metrics["kept_tokens"] == len(KEPT)
    assert metrics["train_rows"] == len(TRAIN)
    assert (metrics["params_before"], metrics["params_after"]) == (
        bert_classifier_params(len(VOCAB)), bert_classifier_params(len(KEPT)))
    assert metrics["embedding_params_before"] - metrics["embedding_params_after"] == (
        (len(VOCAB) - len(KEPT)) * HIDDEN)
    assert metrics["unknown"]["dev"] == {
        "examples": 3, "tokens": 13, "pruned_tokens": 4, "examples_with_pruned_tokens": 2,
        "unk_tokens": 3, "examples_with_unk": 2}
    assert metrics["unknown"]["test"]["pruned_tokens"] == 0
    pruned, pruned_tokenizer = load_classifier(str(out / "model"), ["neg", "pos"])
    texts = ["the dog sat on a mat", "cats run"]
    assert torch.equal(logits(pruned, pruned_tokenizer, texts),
                       logits(model, tokenizer, texts))


def test_prune_stage_with_sentence_pairs(tmp_path):
    tiny_classifier_folder(tmp_path)
    splits = {"train": [("the cat sat", "on the mat"), ("a dog", "ran")],
              "dev": [("the cat", "sat on a big mat"), ("a dog", "ran")]}
    for split, rows in splits.items():
        with open(tmp_path / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "hypothesis", "label"),
                                     *((a, b, ["neg", "pos"][i]) for i, (a, b) in
                                       enumerate(rows))])
    metrics = STAGES["prune"].execute(load_config(PruneConfig, None, [
        f"model={tmp_path / 'classifier'}", f"data.train={tmp_path / 'train.csv'}",
        f"data.dev={tmp_path / 'dev.csv'}", "data.columns.text_pair=hypothesis"]),
        tmp_path / "pruned")
    assert metrics["kept_tokens"] == 5 + 8  # the special tokens, the words of both sides
    assert metrics["unknown"] == {"dev": {
        "examples": 2, "tokens": 7 + 3, "pruned_tokens": 1, "examples_with_pruned_tokens": 1,
        "unk_tokens": 1, "examples_with_unk": 1}}  # big


def test_prune_command(tmp_path):
    tiny_classifier_folder(tmp_path)
    data = tiny_data(tmp_path)
    result = CliRunner().invoke(app, ["prune", "-o", str(tmp_path / "pruned"),
                                      "--model", str(tmp_path / "classifier"), *data])
    assert result.exit_code == 0, result.output
    assert f"{len(VOCAB)} -> {len(KEPT)} tokens" in " ".join(result.stderr.split())
    # A base encoder is not a classifier: one line, exit status 2.
    BertModel(tiny_config()).save_pretrained(tmp_path / "encoder")
    tiny_tokenizer(tmp_path).save_pretrained(tmp_path / "encoder")
    result = CliRunner().invoke(app, ["prune", "-o", str(tmp_path / "out"),
                                      f"model={tmp_path / 'encoder'}", *data])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'encoder'} is not a sequence classifier")
    assert not (tmp_path / "out").exists()  # nothing written


def test_missing_model_folder(tmp_path):
    cfg = load_config(PruneConfig, None, [f"model={tmp_path / 'nowhere'}", *tiny_data(tmp_path)])
    with pytest.raises(UserError, match="is not a Hugging Face model folder"):
        STAGES["prune"].execute(cfg, tmp_path / "out")
    with pytest.raises(UserError, match="'model': Field required"):
        load_config(PruneConfig, None, [])


def test_recipe_names_an_earlier_stage(tmp_path):
    recipe = validate(Recipe, {"name": "r", "stages": [
        {"kind": "distill", "name": "student"},
        {"kind": "prune", "name": "small", "model": "student"}]})
    resolved = recipe_mod._resolved(recipe.stages[1], tmp_path, ["student"])
    assert resolved.model == str(tmp_path / "student" / "model")


def test_recipe_prunes_and_evaluates(tmp_path):
    tiny_classifier_folder(tmp_path)
    data = dict(item.removeprefix("data.").split("=", 1) for item in tiny_data(tmp_path))
    recipe = validate(Recipe, {"name": "r", "stages": [
        {"kind": "prune", "name": "small", "model": str(tmp_path / "classifier"), "data": data},
        {"kind": "evaluate", "models": [str(tmp_path / "classifier"), "small"], "data": data,
         "latency_examples": 1, "throughput_batches": 1, "precision": "fp32"}]})
    metrics = recipe_mod.run_recipe(recipe, tmp_path / "run")
    assert metrics["small"]["kept_tokens"] == len(KEPT)
    rows = metrics["evaluate"]["models"]
    assert rows["small"]["params"] == bert_classifier_params(len(KEPT))
    assert rows["classifier"]["params"] == bert_classifier_params(len(VOCAB))
    assert "unknown.dev.unk_tokens" in (tmp_path / "run" / "report.html").read_text()


# -- real data -------------------------------------------------------------------------------

@torch.no_grad()
def dataset_logits(model, data: TokenizedDataset) -> torch.Tensor:
    """Logits of every example, in the order of the dataset's evaluation batches."""
    return torch.cat([model.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                                   ).logits for b in data.loader(64, shuffle=False)])


@pytest.mark.slow
def test_prune_student_on_rotten_tomatoes(tmp_path):
    minilm, tokenizer = load_classifier("minilm", LABELS)
    torch.manual_seed(0)
    student = build_student("micro-2", minilm, LABELS)
    save_pretrained_atomic(student, tokenizer, tmp_path / "student")
    data = ["data.max_train_examples=300", "data.max_eval_examples=64"]
    cfg = load_config(PruneConfig, None, [f"model={tmp_path / 'student'}", *data])
    metrics = STAGES["prune"].execute(cfg, tmp_path / "pruned")

    vocab = tokenizer.vocab_size
    assert metrics["vocab_before"] == vocab == 30522
    assert 1000 < metrics["kept_tokens"] < 5000 and metrics["train_rows"] == 300
    assert metrics["params_before"] == count_parameters(student)["params"]
    assert metrics["params_before"] - metrics["params_after"] == (
        (vocab - metrics["kept_tokens"]) * 128)
    for split in ("dev", "test"):
        counts = metrics["unknown"][split]
        assert counts["examples"] == 64
        assert 0 < counts["examples_with_unk"] <= counts["examples_with_pruned_tokens"] <= 64
        assert 0 < counts["unk_tokens"] <= counts["pruned_tokens"] < counts["tokens"]

    pruned, pruned_tokenizer = load_classifier(str(tmp_path / "pruned" / "model"), LABELS)
    assert len(pruned_tokenizer) == metrics["kept_tokens"]
    train = subsample(load_classification(cfg.data).split("train"), 300, cfg.seed)
    before = TokenizedDataset(train, tokenizer, cfg.data.max_length)
    after = TokenizedDataset(train, pruned_tokenizer, cfg.data.max_length)
    assert torch.equal(dataset_logits(pruned, after), dataset_logits(student, before))
    assert predict_labels(pruned, after, 64) == predict_labels(student, before, 64)

    table = run_evaluate(load_config(EvaluateConfig, None, [
        f"models=[{tmp_path / 'student'}, {tmp_path / 'pruned' / 'model'}]", *data[1:],
        "latency_examples=2", "throughput_batches=1", "precision=fp32"]), tmp_path / "eval")
    rows = table["models"]
    assert rows["pruned"]["params"] == metrics["params_after"]
    assert rows["student"]["params"] == metrics["params_before"]
