"""Seq2seq presets, the label-smoothed loss, the inverse-sqrt schedule, checkpoint averaging."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSeq2SeqLM, MarianMTModel

from textdistill.errors import UserError
from textdistill.models.common import count_parameters
from textdistill.models.seq2seq import (
    PRESETS,
    average_checkpoints,
    build_seq2seq,
    check_arch,
    freeze_positions,
    init_from_teacher,
    save_seq2seq,
    seq2seq_config,
)
from textdistill.seq2seq.vocab import read_languages

# Documented in docs/seq2seq.md (vocabulary of 8,000 tokens).
COUNTS_8K = {"tiny": 13_107_200, "small": 35_622_400, "base": 48_234_496, "big": 184_549_376}


class FakeTokenizer:
    pad_token_id, eos_token_id = 0, 1

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def save_pretrained(self, folder: str) -> None:  # what save_seq2seq calls
        pass


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts_at_8k(name):
    with torch.device("meta"):
        model = MarianMTModel(seq2seq_config(name, 8000))
    assert count_parameters(model)["params"] == COUNTS_8K[name]


def test_shared_tied_embeddings_and_config():
    model = build_seq2seq("tiny", FakeTokenizer(300), seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1)
    shared = model.model.shared.weight
    assert model.lm_head.weight is shared
    assert model.model.encoder.embed_tokens.weight is shared
    assert model.model.decoder.embed_tokens.weight is shared
    assert shared.shape == (300, 16)
    cfg = model.config
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (0, 1, 0)
    assert cfg.scale_embedding and cfg.activation_function == "relu"
    assert not model.model.encoder.embed_positions.weight.requires_grad  # sinusoidal
    assert model.generation_config.bad_words_ids == [[0]]


def test_unknown_preset_and_bad_shape():
    with pytest.raises(UserError, match=r"unknown seq2seq preset 'huge'; use one of tiny, small"):
        build_seq2seq("huge", FakeTokenizer(100))
    with pytest.raises(UserError, match="not divisible by heads"):
        seq2seq_config("tiny", 100, d_model=30, heads=4)


def test_arch_changes_the_preset_shape():
    check_arch({"encoder_layers": 3, "decoder_layers": 1})
    with pytest.raises(UserError, match=r"unknown arch key 'layers'; use any of d_model, "):
        check_arch({"layers": 3})
    model = build_seq2seq("tiny", FakeTokenizer(300), seed=0, encoder_layers=3, decoder_layers=1)
    assert (len(model.model.encoder.layers), len(model.model.decoder.layers)) == (3, 1)
    assert model.config.d_model == PRESETS["tiny"].d_model


TOY = {"d_model": 16, "heads": 2, "ffn_dim": 32}


def _toy(seed: int, enc: int, dec: int, **shape):
    return build_seq2seq("tiny", FakeTokenizer(60), seed=seed, encoder_layers=enc,
                         decoder_layers=dec, **{**TOY, **shape}).eval()


def test_init_from_teacher_reproduces_the_teacher():
    teacher = _toy(0, 3, 2)
    student = _toy(1, 3, 2)
    x = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    mask = (x != 0).long()
    labels = torch.tensor([[11, 12, 1], [13, 1, -100]])
    logits = teacher(input_ids=x, attention_mask=mask, labels=labels).logits
    assert not torch.allclose(student(input_ids=x, attention_mask=mask, labels=labels).logits,
                              logits)
    init_from_teacher(student, teacher, [1, 2, 3], [1, 2])
    assert torch.equal(student(input_ids=x, attention_mask=mask, labels=labels).logits, logits)
    assert student.lm_head.weight is student.model.shared.weight  # still tied


def test_init_from_teacher_takes_the_named_layers():
    teacher, student = _toy(0, 3, 2), _toy(1, 2, 1)
    init_from_teacher(student, teacher, [1, 3], [2])
    pairs = [(student.model.encoder.layers[0], teacher.model.encoder.layers[0]),
             (student.model.encoder.layers[1], teacher.model.encoder.layers[2]),
             (student.model.decoder.layers[0], teacher.model.decoder.layers[1])]
    for s_layer, t_layer in pairs:
        for (name, p), q in zip(s_layer.named_parameters(), t_layer.parameters(), strict=True):
            assert torch.equal(p, q), name
    assert torch.equal(student.model.shared.weight, teacher.model.shared.weight)
    assert student.model.shared.weight.data_ptr() != teacher.model.shared.weight.data_ptr()


@pytest.mark.parametrize("enc, dec, shape, message", [
    ([1], [1], {}, r"init_from_teacher.encoder lists 1 layers but the student has 2"),
    ([1, 4], [1], {}, r"init_from_teacher.encoder names layer 4, but the teacher has layers 1..3"),
    ([1, 2], [0], {}, r"init_from_teacher.decoder names layer 0"),
    ([1, 2], [1], {"ffn_dim": 64}, r"needs equal widths, but encoder_ffn_dim is 64"),
    ([1, 2], [1], {"heads": 4}, r"needs equal widths, but encoder_attention_heads is 4"),
])
def test_init_from_teacher_errors(enc, dec, shape, message):
    teacher, student = _toy(0, 3, 2), _toy(1, 2, 1, **shape)
    with pytest.raises(UserError, match=message):
        init_from_teacher(student, teacher, enc, dec)


def test_save_and_generate(tmp_path):
    model = build_seq2seq("tiny", FakeTokenizer(50), seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1).eval()
    save_seq2seq(model, FakeTokenizer(50), tmp_path, "en", "de")
    again = AutoModelForSeq2SeqLM.from_pretrained(str(tmp_path)).eval()
    assert read_languages(tmp_path) == ("en", "de")
    assert again.model.decoder.embed_positions.weight.requires_grad
    assert count_parameters(again) == count_parameters(model)  # fixed positions never count
    freeze_positions(again)
    assert not again.model.decoder.embed_positions.weight.requires_grad
    x = torch.tensor([[5, 6, 7, 1]])
    kw = {"max_new_tokens": 5, "num_beams": 2, "do_sample": False}
    assert torch.equal(model.generate(x, **kw), again.generate(x, **kw))


def test_inverse_sqrt_schedule():
    from textdistill.config import OptimConfig
    from textdistill.trainer import _scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = _scheduler(opt, OptimConfig(lr=2.0, warmup_steps=4, schedule="inverse_sqrt"), 100)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])  # linear warm-up to the peak
    assert lrs[15] == pytest.approx(2.0 * math.sqrt(4 / 15))  # then proportional to 1/sqrt(step)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_average_checkpoints(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([0.5], dtype=torch.float16),
         "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([1.5], dtype=torch.float16),
         "n": torch.tensor([3])}
    save_file(a, str(tmp_path / "a.safetensors"))
    (tmp_path / "ckpt").mkdir()
    save_file(b, str(tmp_path / "ckpt" / "model.safetensors"))
    avg = average_checkpoints([tmp_path / "a.safetensors", tmp_path / "ckpt"])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0]))
    assert avg["h"].dtype == torch.float16 and avg["h"].item() == 1.0
    assert torch.equal(avg["n"], torch.tensor([3]))

    save_file({"w": torch.zeros(3), "h": a["h"], "n": a["n"]}, str(tmp_path / "s.safetensors"))
    with pytest.raises(UserError, match=r"w has shape \(3,\)"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "s.safetensors"])
    save_file({"w": a["w"]}, str(tmp_path / "k.safetensors"))
    with pytest.raises(UserError, match="hold different weights"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "k.safetensors"])
    save_file({**a, "n": torch.tensor([4])}, str(tmp_path / "i.safetensors"))
    with pytest.raises(UserError, match="non-float tensor n differs"):
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "i.safetensors"])
    with pytest.raises(UserError, match="not found"):
        average_checkpoints([tmp_path / "none"])


def test_average_of_model_folders_loads(tmp_path):
    kw = {"d_model": 8, "heads": 2, "ffn_dim": 16, "encoder_layers": 1, "decoder_layers": 1}
    m1 = build_seq2seq("tiny", FakeTokenizer(20), seed=1, **kw)
    m2 = build_seq2seq("tiny", FakeTokenizer(20), seed=2, **kw)
    m1.save_pretrained(str(tmp_path / "m1"))
    m2.save_pretrained(str(tmp_path / "m2"))
    avg = average_checkpoints([tmp_path / "m1", tmp_path / "m2"])
    m3 = build_seq2seq("tiny", FakeTokenizer(20), seed=3, **kw)
    m3.load_state_dict(avg, strict=False)
    expected = (m1.model.shared.weight + m2.model.shared.weight) / 2
    assert torch.allclose(m3.model.shared.weight, expected)
    assert torch.allclose(m3.lm_head.weight, expected)  # still tied


def test_save_seq2seq_replaces_the_folder_and_keeps_its_languages(tmp_path):
    model = _toy(0, 1, 1)
    folder = tmp_path / "model"
    save_seq2seq(model, FakeTokenizer(60), folder, "en", "de")
    (folder / "stale.txt").write_text("x")
    save_seq2seq(model, FakeTokenizer(60), folder)  # no languages: the recorded ones stay
    assert read_languages(folder) == ("en", "de")
    assert not (folder / "stale.txt").exists()  # a new folder, not written into the old one
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    save_seq2seq(model, FakeTokenizer(60), folder, tgt_lang="fr")
    assert read_languages(folder) == ("en", "fr")
