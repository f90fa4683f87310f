"""Precision: auto/fp32/bf16/fp16 resolved per hardware with one-line errors; under bf16 the
forward passes run in bf16 while weights, gradients, losses and saved models stay fp32."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO, distill_config, phases
from safetensors import safe_open
from test_cli import assert_user_error, invoke

from textdistill import precision as precision_mod
from textdistill.errors import UserError
from textdistill.precision import autocast, resolve_precision


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_bf16", lambda: True)


@pytest.fixture
def old_cpu(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_bf16", lambda: False)


def test_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto") == "bf16" and resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(precision_mod, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto") == "fp32"


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    real_path = precision_mod.Path

    def path(p):
        return fake if p == "/proc/cpuinfo" else real_path(p)

    monkeypatch.setattr(precision_mod, "Path", path)
    for flags, expected in [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True),
                            ("fpu avx512f avx512_vnni", False), ("avx512_bf16x", False)]:
        fake.write_text(f"processor: 0\nflags\t\t: {flags}\n")
        precision_mod.cpu_has_bf16.cache_clear()
        assert precision_mod.cpu_has_bf16() is expected, flags
    precision_mod.cpu_has_bf16.cache_clear()


def test_precisions_the_hardware_cannot_run(old_cpu, tmp_path):
    with pytest.raises(UserError, match="this CPU has no native bf16 .* use precision auto or "
                                        "fp32"):
        resolve_precision("bf16")
    with pytest.raises(UserError, match="precision fp16 needs a CUDA GPU"):
        resolve_precision("fp16")
    result = invoke("distill", "-o", tmp_path / "out", "precision=bf16", *MICRO)
    assert_user_error(result.exit_code, result.stderr, "precision bf16: this CPU has no native "
                      "bf16")
    assert not (tmp_path / "out").exists()
    result = invoke("generate", "-o", tmp_path / "out", "--model", tmp_path, "--src", "x",
                    "--precision", "fp16")
    assert_user_error(result.exit_code, result.stderr, "precision fp16 needs a CUDA GPU")
    result = invoke("evaluate", "minilm", "-o", tmp_path / "out", "precision=fp8")
    assert_user_error(result.exit_code, result.stderr, "'precision': Input should be 'auto', "
                      "'fp32', 'bf16' or 'fp16'")


def test_bf16_forward_passes_fp32_weights_gradients_and_losses(bf16_cpu, teacher):
    from textdistill.config import KD, Hard, Hidden
    from textdistill.models.classifier import build_student, load_classifier
    from textdistill.objectives import ObjectiveModule
    from textdistill.tasks.classification import ClassificationTask

    teacher_model, tokenizer = load_classifier(str(teacher), ["rotten", "fresh"])
    student = build_student("micro-2", teacher_model, ["rotten", "fresh"])
    specs = [Hard(loss="hard"), KD(loss="kd", temperature=2.0),
             Hidden(loss="hidden")]
    module = ObjectiveModule(ClassificationTask(), student, [specs], teacher_model)
    seen = {}
    student.classifier.register_forward_hook(lambda m, i, o: seen.__setitem__("s", o.dtype))
    teacher_model.classifier.register_forward_hook(lambda m, i, o: seen.__setitem__("t", o.dtype))
    enc = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor([1, 0])}
    with autocast("bf16"):
        out = module(batch)
    assert seen == {"s": torch.bfloat16, "t": torch.bfloat16}
    assert all(v.dtype == torch.float32 for v in out.values())
    out["loss"].backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    assert all(p.dtype == torch.float32 for p in module.parameters())


@pytest.mark.slow
def test_a_bf16_run_saves_fp32_models_and_records_its_precision(bf16_cpu, tmp_path, teacher,
                                                                 monkeypatch):
    from textdistill.objectives import ObjectiveModule
    from textdistill.stages import STAGES

    cfg = distill_config(f"teacher={teacher}", *MICRO, phases("kd"), "precision=auto")
    trained = []  # the student and the teacher train/run with eager attention under bf16
    real_step = ObjectiveModule.forward

    def step(module, batch, phase=0):
        trained.append({m.config._attn_implementation for m in (module.student, module.teacher)})
        return real_step(module, batch, phase)

    monkeypatch.setattr(ObjectiveModule, "forward", step)
    summary = STAGES["distill"].execute(cfg, tmp_path)
    assert trained and all(impls == {"eager"} for impls in trained)
    assert summary["precision"] == "bf16"
    assert json.loads((tmp_path / "run.json").read_text())["precision"] == "bf16"
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_eager_attention_for_bf16_training_on_a_cpu():
    from test_seq2seq_command import LINES

    from textdistill.models.seq2seq import build_seq2seq
    from textdistill.precision import prefer_eager_attention
    from textdistill.seq2seq.vocab import train_tokenizer

    tok = train_tokenizer(LINES, 60)
    model = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1)
    prefer_eager_attention(model, "fp32", "cpu")
    assert model.config._attn_implementation == "sdpa"
    prefer_eager_attention(model, "bf16", "cpu")
    assert model.config._attn_implementation == "eager"


def test_inference_casts_the_weights_once_and_decodes_as_before():
    from test_seq2seq_command import LINES

    from textdistill.config import DecodeConfig
    from textdistill.models.seq2seq import build_seq2seq
    from textdistill.precision import for_inference
    from textdistill.seq2seq.generate import translate
    from textdistill.seq2seq.vocab import train_tokenizer

    tok = train_tokenizer(LINES, 60)
    model = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1).eval()
    assert for_inference(model, "fp32") is model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    decode = DecodeConfig(method="greedy", max_length=12)
    with autocast("bf16"):
        under_autocast = translate(model, tok, LINES[:6], decode)
    assert for_inference(model, "bf16") is model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    cast = translate(model, tok, LINES[:6], decode)
    assert sum(a == b for a, b in zip(cast, under_autocast, strict=True)) >= 5


def test_folders_saved_in_bf16_load_with_fp32_weights(tmp_path):
    """Training needs fp32 weights, but transformers keeps a folder's saved dtype: a model saved
    in bf16 (as the GPU run's bundle is) loads as fp32, holding the saved values."""
    from test_seq2seq_command import LINES
    from transformers import AutoTokenizer, BertConfig, BertModel

    from textdistill.models.classifier import load_classifier, load_encoder, resolve_model_path
    from textdistill.models.mlm import load_mlm
    from textdistill.models.seq2seq import build_seq2seq, load_seq2seq, save_seq2seq
    from textdistill.seq2seq.vocab import train_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32)).to(torch.bfloat16)
    encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    saved = encoder.embeddings.word_embeddings.weight.float()
    for model in (load_encoder(str(tmp_path / "encoder"))[0],
                  load_classifier(str(tmp_path / "encoder"), ["a", "b"])[0],
                  load_mlm(str(tmp_path / "encoder"))[0]):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert torch.equal(model.get_input_embeddings().weight, saved)

    tok = train_tokenizer(LINES, 60)
    seq2seq = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                            encoder_layers=1, decoder_layers=1).to(torch.bfloat16)
    save_seq2seq(seq2seq, tok, tmp_path / "seq2seq")
    loaded, _ = load_seq2seq(tmp_path / "seq2seq")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert torch.equal(loaded.get_input_embeddings().weight,
                       seq2seq.get_input_embeddings().weight.float())
