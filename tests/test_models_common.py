"""What every model family shares: parameter counts, atomic saving, copying teacher layers."""

from __future__ import annotations

import json
import os
import stat
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, BertConfig, BertForSequenceClassification

from textdistill.errors import UserError
from textdistill.models.common import copy_teacher_layers, count_parameters, save_pretrained_atomic
from textdistill.models.seq2seq import build_seq2seq


class FakeTokenizer:
    pad_token_id, eos_token_id = 0, 1

    def __len__(self) -> int:
        return 60

    def save_pretrained(self, folder) -> None:
        (folder / "tokenizer.json").write_text("{}")


def _bert() -> BertForSequenceClassification:
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=24, num_labels=3))


def _marian():
    return build_seq2seq("tiny", FakeTokenizer(), seed=0, d_model=16, heads=2, ffn_dim=32,
                         encoder_layers=2, decoder_layers=1)


def test_count_parameters_of_a_bert_is_every_parameter():
    model = _bert()
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())  # incl. LayerNorm
    assert count_parameters(model) == {"params": total,
                                       "params_no_embeddings": total - embeddings}


def test_count_parameters_of_a_marian_model(tmp_path):
    v, d, f, enc, dec = 60, 16, 32, 2, 1
    attn, ffn, norm = 4 * (d * d + d), d * f + f + f * d + d, 2 * d
    layers = enc * (attn + ffn + 2 * norm) + dec * (2 * attn + ffn + 3 * norm)
    # One shared embedding matrix (encoder, decoder, output layer); positions are sinusoidal.
    want = {"params": v * d + layers, "params_no_embeddings": layers}
    model = _marian()
    assert count_parameters(model) == want
    # from_pretrained makes the sinusoidal tables trainable; they still do not count.
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert loaded.model.encoder.embed_positions.weight.requires_grad
    assert count_parameters(loaded) == want


def test_save_pretrained_atomic(tmp_path):
    old_umask = os.umask(0o022)
    try:
        out = save_pretrained_atomic(_bert(), FakeTokenizer(), tmp_path / "model",
                                     extra={"textdistill.json": {"src_lang": "en"}})
    finally:
        os.umask(old_umask)
    assert out == tmp_path / "model"
    assert json.loads((out / "textdistill.json").read_text()) == {"src_lang": "en"}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in
                                                                      out.iterdir()}
    # Normal permissions, not the private ones of temporary files and folders.
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    # Saving again replaces the whole folder and leaves nothing beside it.
    (out / "stale.txt").write_text("x")
    save_pretrained_atomic(_bert(), FakeTokenizer(), out)
    assert not (out / "stale.txt").exists() and not (out / "textdistill.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_save_keeps_the_old_folder(tmp_path):
    save_pretrained_atomic(_bert(), FakeTokenizer(), tmp_path / "model")
    before = sorted(p.name for p in (tmp_path / "model").iterdir())

    class Broken(FakeTokenizer):
        def save_pretrained(self, folder) -> None:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_pretrained_atomic(_bert(), Broken(), tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


class Toy(torch.nn.Module):
    def __init__(self, layers: int, width: int = 4, head: bool = False):
        super().__init__()
        self.config = SimpleNamespace(width=width)
        self.embed = torch.nn.Linear(width, width)
        self.stack = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
        if head:
            self.head = torch.nn.Linear(width, 2)


def test_copy_teacher_layers_generic():
    torch.manual_seed(0)
    teacher, student = Toy(3), Toy(2)
    copy_teacher_layers(student, teacher, {"layers": ("stack", [3, 1])}, shared=("",),
                        widths=("width",), hint="h")
    assert torch.equal(student.embed.weight, teacher.embed.weight)
    assert student.embed.weight.data_ptr() != teacher.embed.weight.data_ptr()
    assert torch.equal(student.stack[0].weight, teacher.stack[2].weight)
    assert torch.equal(student.stack[1].bias, teacher.stack[0].bias)
    with pytest.raises(UserError, match="width is 8 in the student and 4 in the teacher: h$"):
        copy_teacher_layers(Toy(2, width=8), teacher, {"layers": ("stack", [1, 2])}, ("",),
                            ("width",), "h")
    with pytest.raises(UserError, match=r"^layers lists 1 layers but the student has 2"):
        copy_teacher_layers(student, teacher, {"layers": ("stack", [1])}, ("",), ("width",), "h")
    with pytest.raises(UserError, match=r"layers names layer 4, but the teacher has layers 1\.\.3"):
        copy_teacher_layers(student, teacher, {"layers": ("stack", [1, 4])}, ("",), ("width",),
                            "h")
    with pytest.raises(UserError, match="the teacher's model does not match the student's"):
        copy_teacher_layers(student, Toy(3, head=True), {"layers": ("stack", [1, 2])}, ("",),
                            ("width",), "h")
    # A shared module only one of them has is skipped.
    copy_teacher_layers(student, teacher, {"layers": ("stack", [1, 2])}, ("embed", "head"),
                        ("width",), "h")
