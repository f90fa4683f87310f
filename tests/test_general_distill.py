"""General distillation (TinyBERT's first stage): text pieces, held-out split, config checks,
a real run on mono-en, kill-and-resume, and task distillation starting from its student."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import LABELS, MICRO, distill_config, phases, run_cli
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

from textdistill.config import GeneralDistillConfig, load_config
from textdistill.data.batching import TextPieces
from textdistill.data.corpora import split_heldout
from textdistill.errors import UserError
from textdistill.general_distill import heldout_losses, run_general_distill
from textdistill.models.classifier import build_student, load_classifier, load_encoder
from textdistill.objectives import ObjectiveModule
from textdistill.tasks.classification import EncoderTask


@pytest.fixture(scope="module")
def tokenizer():
    from textdistill.models.classifier import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


def test_text_pieces_wrap_every_token_once_in_order(tokenizer):
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "a short one", "   "]
    data = TextPieces(texts, tokenizer, max_length=8)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert all(len(p) <= 8 and p[0] == cls and p[-1] == sep for p in data.input_ids)
    inner = [i for p in data.input_ids for i in p[1:-1]]
    expected = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    assert inner == expected
    # 27 word pieces of the first text in pieces of 6, then the 3 of the second
    assert [len(p) - 2 for p in data.input_ids] == [6, 6, 6, 6, 3, 3]
    batch = data.collate([data[0], data[5]])
    assert batch["input_ids"].tolist()[1] == data.input_ids[5] + [0] * 3
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 5 + [0] * 3]


def test_text_pieces_refuse_blank_text_and_tokenizers_without_cls(tokenizer):
    with pytest.raises(UserError, match="no text to train on"):
        TextPieces(["", "  "], tokenizer, 16)

    class NoCls:
        cls_token_id, sep_token_id = None, 3

    with pytest.raises(UserError, match=r"no \[CLS\] or \[SEP\]"):
        TextPieces(["text"], NoCls(), 16)


@pytest.mark.parametrize("override,message", [
    ("objectives=[{loss: kd}]", "no labels and no prediction layer"),
    ("student.init_from=some/folder", "builds its student from a preset"),
    ("data.files=[a.txt]", "either 'corpus' or 'files'"),
])
def test_general_distill_config_refuses(override, message):
    extra = ["data.corpus=mono-en"] if override.startswith("data.files") else []
    with pytest.raises(UserError, match=message):
        load_config(GeneralDistillConfig, None, [override, *extra])


def test_a_student_starts_from_one_place_only():
    with pytest.raises(UserError, match="not both"):
        distill_config("student.init_from=x", "student.init_from_teacher=[1, 2]")


GD = ["student.preset=tiny-2", "data.max_train_examples=24", "data.max_eval_examples=6",
      "data.max_length=32", "data.batch_size=8", "epochs=1", "checkpoint_every=2",
      "optim.lr=0.001"]


@pytest.fixture(scope="module")
def general_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("general")
    cfg = load_config(GeneralDistillConfig, None, GD)
    return out, cfg, run_general_distill(cfg, out)


@pytest.mark.slow
def test_general_distillation_on_mono_en_teaches_the_student(general_run):
    out, cfg, metrics = general_run
    student = BertModel.from_pretrained(out / "model")
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == 192
    assert metrics["train_texts"] == 24 and metrics["heldout_texts"] == 6
    assert metrics["train_tokens"] > metrics["train_pieces"] * 3
    assert metrics["steps"] == -(-metrics["train_pieces"] // 8)
    assert metrics["tokens_per_second"] > 0 and metrics["seconds_per_epoch"] > 0
    held = metrics["heldout"]
    assert held["loss"] == pytest.approx(held["embedding"] + held["hidden"] + held["attention"])

    # the untrained student (same seed, same shape) is further from the teacher
    teacher, tokenizer = load_encoder("minilm")
    torch.manual_seed(cfg.seed)
    fresh = build_student("tiny-2", teacher, None)
    _, held_texts = split_heldout(cfg.data, cfg.seed)
    pieces = TextPieces(held_texts, tokenizer, 32)
    before = heldout_losses(ObjectiveModule(EncoderTask(), fresh, [cfg.objectives], teacher),
                            pieces, 8, "fp32")
    after = heldout_losses(ObjectiveModule(EncoderTask(), student, [cfg.objectives], teacher),
                           pieces, 8, "fp32")
    # the attention loss has no learned projection (the others' are not in the model folder)
    assert after["attention"] < 0.9 * before["attention"]
    assert after["attention"] == pytest.approx(held["attention"], rel=0.05)  # bf16 vs fp32


@pytest.mark.slow
def test_general_distillation_killed_mid_epoch_resumes_to_the_same_student(tmp_path, data_root):
    args = ["general-distill", *GD]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_cli(*args, "-o", whole).returncode == 0
    killed = run_cli(*args, "-o", cut, env={"TEXTDISTILL_CRASH_AT": "step:5"})
    assert killed.returncode == -9  # SIGKILL after step 5; the checkpoint holds step 4
    assert not (cut / "model").exists()
    state = json.loads((cut / "checkpoint" / "state.json").read_text())
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (4, 0, 4)
    resumed = run_cli(*args, "-o", cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_file(whole / "model" / "model.safetensors"), load_file(
        cut / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_task_distillation_starts_from_the_general_student(tmp_path, general_run, teacher):
    from textdistill.distill import run_distill

    general = general_run[0] / "model"
    encoder = load_file(general / "model.safetensors")
    classifier, _ = load_classifier(str(general), LABELS)
    loaded = {k.removeprefix("bert."): v for k, v in classifier.state_dict().items()}
    assert all(torch.equal(loaded[k], v) for k, v in encoder.items())

    # a learning rate of ~0: the distilled student's encoder is still the general one
    cfg = distill_config(f"teacher={teacher}", *MICRO, f"student.init_from={general}",
                         phases("kd", lr=1e-12, epochs=0.25))
    run_distill(cfg, tmp_path)
    after = load_file(tmp_path / "model" / "model.safetensors")
    assert all(torch.allclose(after[f"bert.{k}"], v, atol=1e-6) for k, v in encoder.items()
               if f"bert.{k}" in after)
    assert sum(f"bert.{k}" in after for k in encoder) >= len(encoder) - 2  # all but the pooler


@pytest.mark.slow
def test_a_general_student_of_another_vocabulary_is_refused(tmp_path, teacher):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(59)]]
    folder = tmp_path / "other"
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    result = run_cli("distill", f"teacher={teacher}", *MICRO, f"student.init_from={folder}",
                     phases("kd"), "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "different vocabularies (64 and 30,522 tokens" in result.stderr


@pytest.mark.slow
def test_the_full_tinybert_recipe_runs_end_to_end_at_toy_scale(tmp_path, data_root):
    from conftest import ROOT

    from textdistill.config import Recipe
    from textdistill.recipe import run_recipe

    recipe = load_config(Recipe, ROOT / "recipes" / "tinybert-full.yaml")
    stages = {s.name: s for s in recipe.stages}
    for name in ("teacher", "student", "pruned", "evaluate", "augmented"):
        stages[name].data.max_length = 32
    for name in ("teacher", "augmented"):
        stages[name].data.max_train_examples = 24
    for name in ("teacher", "student", "augmented", "evaluate"):
        stages[name].data.max_eval_examples = 16
    stages["teacher"].epochs = 1
    stages["general"].student.preset = "tiny-2"
    stages["general"].data = stages["general"].data.model_copy(update={
        "max_train_examples": 16, "max_eval_examples": 4, "max_length": 32})
    stages["mlm"].data = stages["mlm"].data.model_copy(update={
        "max_train_examples": 16, "max_eval_examples": 4, "max_length": 32})
    stages["augmented"].copies = 2
    for phase in stages["student"].phases:
        phase.epochs = 1
    metrics = run_recipe(recipe, tmp_path)

    assert metrics["general"]["train_texts"] == 16
    rows = [json.loads(line) for line in
            (tmp_path / "augmented" / "augmented.jsonl").read_text().splitlines()]
    assert sorted({r["origin"] for r in rows}) == list(range(24))  # every example, + variants
    assert metrics["student"]["train_rows"] == len(rows)
    # the student started from the general student: its config is general's (tiny-2)
    config = json.loads((tmp_path / "student" / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 192)
    assert metrics["pruned"]["kept_tokens"] < metrics["pruned"]["vocab_before"]
    assert set(metrics["evaluate"]["models"]) == {"teacher", "student", "pruned"}


def test_the_ablation_recipe_switches_one_thing_per_row_and_shares_the_rest():
    from conftest import ROOT

    from textdistill.config import Recipe, config_hash

    ablations = load_config(Recipe, ROOT / "recipes" / "tinybert-ablations.yaml")
    full = load_config(Recipe, ROOT / "recipes" / "tinybert-full.yaml")
    digests = {s.name: config_hash(s) for s in full.stages}
    stages = {s.name: s for s in ablations.stages}
    shared = [n for n, s in stages.items() if digests.get(n) == config_hash(s)]
    assert shared == ["teacher", "general", "mlm", "augmented", "student"]

    base = stages["student"].model_dump()

    def changed(name: str) -> dict:
        row = stages[name].model_dump()
        return {k: row[k] for k in row if k != "name" and row[k] != base[k]}

    def losses(name: str, phase: int = 0) -> list[str]:
        return [o.loss for o in stages[name].phases[phase].objectives]

    assert changed("student-seed2") == {"seed": 2}
    assert set(changed("no-gd")) == {"student"} and stages["no-gd"].student.init_from is None
    assert set(changed("no-da")) == {"data"} and stages["no-da"].data.corpus == "rotten-tomatoes"
    assert stages["no-td"].teacher is None and losses("no-td") == ["hard"]
    assert {n: losses(n) for n in ("no-embd", "no-trm", "no-attn", "no-hidn")} == {
        "no-embd": ["hidden", "attention"], "no-trm": ["embedding"],
        "no-attn": ["embedding", "hidden"], "no-hidn": ["embedding", "attention"]}
    assert losses("no-pred") == losses("student") and losses("no-pred", 1) == ["hard"]
    for name, strategy in (("map-top", "top"), ("map-bottom", "bottom")):
        assert set(changed(name)) == {"phases"}
        maps = [o.layer_map.strategy for o in stages[name].phases[0].objectives[1:]]
        assert maps == [strategy, strategy]
    assert [o.loss for o in stages["general-minilm"].objectives] == ["minilm"]
    assert [o.loss for o in stages["general-minilmv2"].objectives] == ["minilmv2"]
    assert changed("student-minilmv2") == {"student": {**base["student"],
                                                      "init_from": "general-minilmv2"}}
    kd = stages["kd-random"].model_dump()
    assert stages["kd-random"].student.init_from is None
    for name, general in (("kd-general", "general"), ("kd-minilm", "general-minilm"),
                          ("kd-minilmv2", "general-minilmv2")):
        row = stages[name].model_dump()
        assert {k for k in row if k != "name" and row[k] != kd[k]} == {"student"}
        assert stages[name].student.init_from == general
    tables = {n: s.models for n, s in stages.items() if s.kind == "evaluate"}
    assert tables["table-general-kd"][1:] == ["kd-random", "kd-general", "kd-minilm",
                                              "kd-minilmv2"]
    assert tables["table-procedure"][1:] == ["student", "student-seed2", "student-seed3",
                                             "no-gd", "no-td", "no-da"]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["{loss: minilm}", "{loss: minilmv2, relation_heads: 6}"])
def test_general_distillation_by_minilm_objectives(tmp_path, data_root, objective):
    cfg = load_config(GeneralDistillConfig, None, [*GD, "data.max_train_examples=8",
                                                   f"objectives=[{objective}]"])
    metrics = run_general_distill(cfg, tmp_path)
    name = cfg.objectives[0].loss
    assert set(metrics["heldout"]) == {"loss", name} and metrics["heldout"][name] > 0
    assert BertModel.from_pretrained(tmp_path / "model").config.hidden_size == 192
