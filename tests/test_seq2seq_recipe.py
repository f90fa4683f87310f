"""The Kim & Rush recipe end to end at toy scale on real l10n data: teacher, students on gold,
word-KD, Seq-KD and Seq-Inter, generation and evaluation all run and hand each other the right
artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textdistill.config import Recipe, Seq2SeqConfig, load_config, validate
from textdistill.data.corpora import L10N_FILES
from textdistill.data.parallel import load_l10n_pairs, load_pairs
from textdistill.data.readers import read_lines
from textdistill.errors import UserError
from textdistill.metrics import sentence_bleu
from textdistill.paths import data_dir
from textdistill.recipe import run_recipe
from textdistill.seq2seq.generate import read_kbest
from textdistill.seq2seq.train import run_train

pytestmark = pytest.mark.skipif(
    not (data_dir() / L10N_FILES["train"]).is_file(),
    reason="l10n not found: set TEXTDISTILL_DATA to the shared data directory",
)
RECIPE = Path(__file__).parent.parent / "recipes" / "seqkd.yaml"
N = 48


def toy_overrides() -> list[str]:
    out = ["stages.0.preset=tiny", "stages.0.vocab_size=500", "stages.7.beams=[1,2]",
           "stages.7.data.max_eval_examples=8", "stages.7.data.max_length=24",
           "stages.3.beam=3", "stages.3.num_return=3"]
    for i in (0, 1, 2, 4, 6):
        out += [f"stages.{i}.data.max_train_examples={N}", f"stages.{i}.data.max_eval_examples=4",
                f"stages.{i}.data.max_length=24", f"stages.{i}.epochs=1",
                f"stages.{i}.optim.warmup_steps=2"]
    for i in (3, 5):
        out += [f"stages.{i}.data.max_train_examples={N}", f"stages.{i}.data.max_length=24"]
    return out


@pytest.mark.slow
def test_seqkd_recipe_runs_end_to_end(tmp_path):
    recipe = load_config(Recipe, RECIPE, toy_overrides())
    metrics = run_recipe(recipe, tmp_path)
    gold = load_l10n_pairs("train", "de")[:N]

    distilled = read_lines(tmp_path / "distilled" / "targets.txt")
    kbest = read_kbest(tmp_path / "distilled" / "kbest.jsonl")
    assert len(kbest) == N and all(len(h) == 3 for h in kbest)
    # Seq-KD keeps the top hypothesis; Seq-Inter selects from the same lists, decoding nothing
    assert distilled == [hyps[0].text for hyps in kbest]
    assert not (tmp_path / "kbest" / "kbest.jsonl").exists()
    assert "seconds" not in metrics["kbest"]
    chosen = read_lines(tmp_path / "kbest" / "targets.txt")
    for hyps, pick, (_, ref) in zip(kbest, chosen, gold, strict=True):
        # Seq-Inter keeps the hypothesis closest to the reference, never a worse one
        assert sentence_bleu(pick, ref) == max(sentence_bleu(h.text, ref) for h in hyps)

    # the Seq-KD student really trained on the teacher's outputs, not on gold
    seqkd_cfg = json.loads((tmp_path / "student-seqkd" / "stage.json").read_text())
    assert seqkd_cfg["config"]
    assert "distilled/targets.txt" in (tmp_path / "student-seqkd" / "config.yaml").read_text()

    table = metrics["evaluate"]["models"]
    assert set(table) == {"teacher", "student-gold", "student-wordkd", "student-seqkd",
                          "student-seqinter"}
    for row in table.values():
        assert {"bleu_b1", "bleu_b2", "chrf_b1", "sent_per_s_b2", "params"} <= set(row)
        assert row["params"] > 1_000_000

    # word-level KD read the teacher's top-k outputs, computed once before training
    assert metrics["student-wordkd"]["teacher_cache"] == "computed"

    # students share the teacher's vocabulary (word-KD needs it)
    teacher_vocab = (tmp_path / "teacher" / "model" / "tokenizer.json").read_text()
    assert (tmp_path / "student-gold" / "model" / "tokenizer.json").read_text() == teacher_vocab

    # a second run skips every stage
    again = run_recipe(recipe, tmp_path)
    assert again == metrics


def test_word_kd_needs_a_teacher():
    with pytest.raises(UserError, match=r"losses \['kd'\] need a teacher"):
        validate(Seq2SeqConfig, {"objectives": [{"loss": "kd"}]})


def test_a_loss_the_task_cannot_compute_is_named_with_the_task(tmp_path):
    cfg = validate(Seq2SeqConfig, {"teacher": "t", "objectives": [{"loss": "attention"}]})
    with pytest.raises(UserError, match="the seq2seq task cannot compute the 'attention' loss"):
        run_train(cfg, tmp_path)


def test_init_from_teacher_needs_a_teacher():
    with pytest.raises(UserError, match="init_from_teacher needs a teacher"):
        validate(Seq2SeqConfig, {"init_from_teacher": {"encoder": [1], "decoder": [1]}})


def test_student_starts_from_the_teachers_layers(tmp_path):
    """Through ``run_train``: with a vanishing learning rate the student ends where it started,
    which is the teacher's embeddings and the named layers."""
    from transformers import AutoModelForSeq2SeqLM

    from textdistill.models.seq2seq import build_seq2seq, save_seq2seq
    from textdistill.seq2seq.train import run_train
    from textdistill.seq2seq.vocab import train_tokenizer

    pairs = load_l10n_pairs("train", "de")[:40]
    tok = train_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], 300,
                          src_lang="en", tgt_lang="de")
    shape = {"d_model": 32, "heads": 2, "ffn_dim": 64}
    teacher = build_seq2seq("tiny", tok, seed=0, encoder_layers=3, decoder_layers=2, **shape)
    save_seq2seq(teacher, tok, tmp_path / "teacher", "en", "de")
    cfg = validate(Seq2SeqConfig, {
        "teacher": str(tmp_path / "teacher"), "arch": {**shape, "encoder_layers": 2,
                                                       "decoder_layers": 1},
        "init_from_teacher": {"encoder": [1, 3], "decoder": [2]}, "epochs": 1,
        "data": {"max_train_examples": 40, "max_eval_examples": 2, "max_length": 16},
        "optim": {"lr": 1e-12, "warmup_steps": 1}})
    run_train(cfg, tmp_path / "student")
    student = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path / "student" / "model"))
    close = [(student.model.shared, teacher.model.shared),
             (student.model.encoder.layers[1], teacher.model.encoder.layers[2]),
             (student.model.decoder.layers[0], teacher.model.decoder.layers[1])]
    for s_mod, t_mod in close:
        for p, q in zip(s_mod.parameters(), t_mod.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


def test_unknown_target_language_is_rejected():
    cfg = validate(Seq2SeqConfig, {"data": {"tgt_lang": "it"}})
    with pytest.raises(UserError, match="no target language 'it'"):
        load_pairs(cfg.data, "dev")
    with pytest.raises(UserError, match="tgt_lang 'de\\+de' must be distinct"):
        validate(Seq2SeqConfig, {"data": {"tgt_lang": "de+de"}})


def test_distilled_targets_must_match_the_split(tmp_path):
    bad = tmp_path / "targets.txt"
    bad.write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    cfg = validate(Seq2SeqConfig, {"data": {"targets": str(bad), "max_train_examples": 10}})
    with pytest.raises(UserError, match="has 3 lines but the train split has"):
        load_pairs(cfg.data, "train")


def test_kbest_from_must_match_the_split(tmp_path):
    from textdistill.config import GenerateConfig
    from textdistill.seq2seq.train import run_generate

    lists = tmp_path / "kbest.jsonl"
    lists.write_text("".join(json.dumps({"id": i, "rank": 0, "text": "x"}) + "\n"
                             for i in range(3)), encoding="utf-8")
    cfg = validate(GenerateConfig, {"model": "unused", "kbest_from": str(lists),
                                    "data": {"max_train_examples": 5}})
    with pytest.raises(UserError, match="k-best lists for 3 sources but the train split has 5"):
        run_generate(cfg, tmp_path / "out")


@pytest.mark.parametrize("name", ["seqkd.yaml", "seqkd-cpu.yaml", "born-again.yaml",
                                  "nat.yaml", "nat-decoding.yaml", "nat-teachers.yaml",
                                  "multimodality.yaml"])
def test_translation_recipes_wire_stages_to_earlier_outputs(name, tmp_path):
    from textdistill.recipe import _resolved

    recipe = load_config(Recipe, RECIPE.parent / name)
    earlier: list[str] = []
    for stage in recipe.stages:
        resolved = _resolved(stage, tmp_path, earlier)
        if stage.kind == "train" and stage.data.targets:
            # a student reads the targets.txt of an earlier generate stage
            assert resolved.data.targets == str(tmp_path / stage.data.targets / "targets.txt")
            assert recipe.stages[earlier.index(stage.data.targets)].kind == "generate"
        if stage.kind == "analyze":  # reads the targets.txt of earlier generate stages
            assert resolved.tgt == [str(tmp_path / t / "targets.txt") for t in stage.tgt]
        if stage.kind == "generate":
            assert resolved.model == str(tmp_path / stage.model / "model")
            if stage.kbest_from:
                assert resolved.kbest_from == str(tmp_path / stage.kbest_from / "kbest.jsonl")
                source = recipe.stages[earlier.index(stage.kbest_from)]
                assert source.num_return > 1 and source.data == stage.data
        earlier.append(stage.name)



@pytest.mark.slow
def test_multimodality_recipe_runs_end_to_end_at_toy_scale(tmp_path):
    recipe = load_config(Recipe, RECIPE.parent / "multimodality.yaml")
    small = {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1, "decoder_layers": 1}
    for stage in recipe.stages:
        if stage.kind == "train":
            stage.arch, stage.epochs, stage.vocab_size = small, 1, 300
            stage.data.max_train_examples = 60 if stage.data.multi_target == "all" else 20
            stage.data.max_eval_examples, stage.data.max_length = 4, 24
            stage.optim.warmup_steps = 2
        elif stage.kind == "generate":
            stage.data.max_train_examples, stage.data.max_eval_examples = 20, 12
            stage.data.max_length = 24
        else:
            stage.iterations = 1
            stage.data.max_eval_examples = 12
            stage.data.max_train_examples = 60 if stage.data.multi_target == "all" else 20
    metrics = run_recipe(recipe, tmp_path)
    assert metrics["at"]["train_pairs"] == 60  # 20 sources, each with de, fr and es
    modes = metrics["modes"]["corpora"]
    assert [c["name"] for c in modes] == ["at-test", "nat-test", "nat-one-test", "nat-kd-test"]
    assert all(c["language_mode"]["languages"] == ["de", "fr", "es"] for c in modes)
    assert (tmp_path / "modes" / "language_modes.png").is_file()
    assert len(read_lines(tmp_path / "at-outputs" / "targets.txt")) == 20
    # the training sets' own measures: 60 pairs of 20 sources; 20 pairs and the AT outputs
    assert len(read_lines(tmp_path / "data-all" / "inputs" / "train.en")) == 60
    assert metrics["data-all"]["corpora"] == [] and metrics["data-all"]["real"]["complexity"] > 0
    assert [c["name"] for c in metrics["data-one"]["corpora"]] == ["at-outputs"]
    assert metrics["data-one"]["real"]["aligned_pairs"] <= 20
