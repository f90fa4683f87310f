"""Non-autoregressive students in the one pipeline: the ``length`` loss and the masked ``hard``
loss against independent computations, the ``nat`` settings, and the ``train`` and
``generate`` stages end to end on real l10n data (checkpoint, resume, saved folder)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from textdistill.config import GenerateConfig, Seq2SeqConfig, validate
from textdistill.data.batching import ParallelDataset
from textdistill.data.corpora import L10N_FILES
from textdistill.errors import UserError
from textdistill.losses import REGISTRY, TaskOutputs
from textdistill.models.nat import NATModel
from textdistill.models.seq2seq import build_seq2seq, load_seq2seq
from textdistill.paths import data_dir
from textdistill.seq2seq.generate import translate
from textdistill.seq2seq.train import _clipped_lengths, run_generate, run_train
from textdistill.seq2seq.vocab import train_tokenizer


def _spec(loss: str, **params):
    return validate(Seq2SeqConfig, {"nat": {}, "objectives": [{"loss": loss, **params}]}
                    ).objectives[0]


def test_length_loss_is_the_cross_entropy_of_the_length_classes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, generator=g)
    labels = torch.tensor([0, 3, 6, 2])
    value = REGISTRY["length"].compute(_spec("length"), TaskOutputs(
        logits=torch.zeros(1), length_logits=logits, length_labels=labels), None, None, None)
    expected = 0.0
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        expected -= row[label] - math.log(sum(math.exp(v) for v in row))
    assert value.item() == pytest.approx(expected / 4, rel=1e-6)


def test_hard_loss_counts_only_the_rows_of_the_mask():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[1, 4, -100], [0, 2, 3]])
    mask = torch.tensor([[True, False, False], [False, True, True]])
    value = REGISTRY["hard"].compute(_spec("hard"), TaskOutputs(logits=logits, mask=mask), None,
                                     labels, None)
    rows = [(0, 0), (1, 1), (1, 2)]
    expected = -sum(logits[b, t, labels[b, t]].item()
                    - math.log(sum(math.exp(v) for v in logits[b, t].tolist()))
                    for b, t in rows) / len(rows)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_nat_settings_add_the_length_loss_and_refuse_token_level_kd():
    cfg = validate(Seq2SeqConfig, {"nat": {"masking": "all"}})
    assert [o.loss for o in cfg.objectives] == ["hard", "length"]
    assert cfg.objectives[1].weight == 0.1 and cfg.nat.dev_iterations == 1
    assert validate(Seq2SeqConfig, {"nat": {}}).nat.dev_iterations == 4
    kept = validate(Seq2SeqConfig, {"nat": {}, "objectives": [{"loss": "length", "weight": 1}]})
    assert [(o.loss, o.weight) for o in kept.objectives] == [("length", 1.0)]
    with pytest.raises(UserError, match="the length loss is for non-autoregressive models"):
        validate(Seq2SeqConfig, {"objectives": [{"loss": "length"}]})
    with pytest.raises(UserError, match="train it on the teacher's translations"):
        validate(Seq2SeqConfig, {"nat": {}, "teacher": "t", "objectives": [{"loss": "kd"}]})
    with pytest.raises(UserError, match="'nat.masking': Input should be 'all' or 'random'"):
        validate(Seq2SeqConfig, {"nat": {"masking": "some"}})


def test_decoding_options_that_do_not_fit_the_model(tmp_path):
    tok = train_tokenizer(["a b c", "b c d", "c d e"] * 5, 40)
    at = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                       encoder_layers=1, decoder_layers=1)
    with pytest.raises(UserError, match="iterations and length_beam are for non-autoreg"):
        translate(at, tok, ["a b"], GenerateConfig(model="m", iterations=4))


def test_targets_beyond_the_length_range_are_counted(caplog):
    tok = train_tokenizer(["a b c", "b c d", "c d e"] * 5, 40)
    data = ParallelDataset([("a", "a b c d e a b c d e"), ("a b c", "a b"), ("c", "c")], tok, 64)
    offsets = [len(t) - len(s) for s, t in zip(data.src, data.tgt, strict=True)]
    assert offsets[0] >= 9 and abs(offsets[1]) <= 2 and offsets[2] == 0
    with caplog.at_level("WARNING"):
        assert _clipped_lengths(data, 3) == 1
    assert "1 of 3 training targets differ from their source by more than 3" in caplog.text
    assert _clipped_lengths(data, offsets[0]) == 0
    assert data.truncated == 0


def test_pairs_longer_than_max_length_are_cut_and_counted():
    tok = train_tokenizer(["a b c", "b c d", "c d e"] * 5, 40)
    pairs = [("a b c d e a b c", "a"), ("a", "b c d e a b c d"), ("a b", "c d")]
    full = [len(tok(s)["input_ids"]) for pair in pairs for s in pair]
    limit = max(full[4], full[5])  # cuts the first two pairs, not the third
    assert full[0] > limit and full[3] > limit
    data = ParallelDataset(pairs, tok, limit)
    assert data.truncated == 2
    assert max(map(len, data.src + data.tgt)) == limit
    assert data.src[0][-1] == data.tgt[1][-1] == tok.eos_token_id  # the end token is kept


l10n = pytest.mark.skipif(not (data_dir() / L10N_FILES["train"]).is_file(),
                          reason="l10n not found: set TEXTDISTILL_DATA to the shared data")


@l10n
@pytest.mark.slow
@pytest.mark.parametrize("masking", ["all", "random"])
def test_train_resume_and_generate_a_nat_student(tmp_path, masking):
    settings = {"arch": {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1,
                         "decoder_layers": 1},
                "vocab_size": 300, "nat": {"masking": masking, "decoder_input": "copy"},
                "data": {"max_train_examples": 64, "max_eval_examples": 4, "max_length": 24,
                         "batch_tokens": 256},
                "optim": {"lr": 1e-3, "warmup_steps": 2}}
    out = tmp_path / "nat"
    first = run_train(validate(Seq2SeqConfig, {**settings, "epochs": 1}), out)
    per_epoch = first["steps"]
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text()
               .splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and all({"hard", "length"} <= set(r) for r in train)
    assert [r["kind"] for r in records].count("eval") == 1 and "bleu" in records[-1]
    # --resume with more epochs goes on from the checkpoint
    second = run_train(validate(Seq2SeqConfig, {**settings, "epochs": 2}), out, resume=True)
    assert second["steps"] == 2 * per_epoch
    assert second["length_offsets_clipped"] == 0  # l10n pairs of at most 24 tokens
    assert 0 < second["truncated_pairs"] < 64  # some of the 64 pairs are longer than 24 tokens
    model, tok = load_seq2seq(out / "model")
    assert isinstance(model, NATModel)
    assert model.config.decoder_input == "copy"
    assert model.get_input_embeddings().num_embeddings == len(tok) + 1  # + [MASK]
    # generate decodes with it by mask-predict: one hypothesis per source, with its score
    gen = tmp_path / "gen"
    result = run_generate(validate(GenerateConfig, {
        "model": str(out / "model"), "split": "dev", "iterations": 3, "length_beam": 2,
        "data": {"max_eval_examples": 5, "max_length": 24}}), gen)
    assert result["sources"] == 5
    targets = (gen / "targets.txt").read_text().splitlines()
    assert len(targets) == 5
    kbest = [json.loads(line) for line in (gen / "kbest.jsonl").read_text().splitlines()]
    assert len(kbest) == 5 and all(r["rank"] == 0 and r["score"] <= 0 for r in kbest)
    with pytest.raises(UserError, match="gives one translation per source"):
        run_generate(validate(GenerateConfig, {
            "model": str(out / "model"), "split": "dev", "num_return": 2,
            "data": {"max_eval_examples": 2}}), tmp_path / "gen2")
    # an autoregressive student cannot take word-level KD from it
    with pytest.raises(UserError, match=r"is a non-autoregressive model: word-level KD and "):
        run_train(validate(Seq2SeqConfig, {
            "teacher": str(out / "model"), "objectives": [{"loss": "kd"}],
            "data": settings["data"], "epochs": 1}), tmp_path / "at")


def test_the_translation_table_shows_autoregressive_and_nat_models_side_by_side():
    from rich.console import Console

    from textdistill.evaluate import format_table

    table = {"pair": "en-de", "split": "test", "models": {
        "cmlm": {"params": 7588393, "bleu_t1": 4.17, "bleu_t10": 4.92},
        "teacher": {"params": 13107200, "bleu_b1": 12.84, "bleu_b5": 13.87}}}
    console = Console(width=200, record=True)
    console.print(format_table(table))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "model" in line).split()
    assert [h for h in header if h not in "┃│"] == ["model", "params", "bleu_t1", "bleu_t10",
                                                    "bleu_b1", "bleu_b5"]
    cmlm = next(line for line in lines if "cmlm" in line).split()
    assert [c for c in cmlm if c not in "│┃"] == ["cmlm", "7,588,393", "4.17", "4.92", "–", "–"]
