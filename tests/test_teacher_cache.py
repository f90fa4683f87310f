"""Cached teacher outputs: equal to the teacher's own logits, reused only for the same teacher,
data, tokenization and precision, rebuilt when damaged, and used by training in place of the
teacher only in phases that read nothing but logits."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import LABELS, MICRO, distill_config, phases

from textdistill.config import DataConfig
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import load_classification, subsample
from textdistill.models.classifier import load_classifier
from textdistill.teacher_cache import CACHE_ENV, cache_key, teacher_logits


def key_of(teacher, data, precision: str) -> str:
    return cache_key(teacher, "logits", [data.input_ids, data.token_type_ids], precision)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def model_and_data(teacher):
    model, tokenizer = load_classifier(str(teacher), LABELS)
    rows = subsample(load_classification(DataConfig(corpus="rotten-tomatoes")).split("train"),
                     40, 0)
    return model, tokenizer, rows


def test_cached_logits_are_the_teachers_and_are_reused(cache_dir, teacher, model_and_data):
    model, tokenizer, rows = model_and_data
    data = TokenizedDataset(rows, tokenizer, 32)
    logits, hit = teacher_logits(model, teacher, data, 16, "fp32")
    assert not hit and logits.shape == (40, 2) and logits.dtype == torch.float32
    model.eval()
    with torch.no_grad():  # each example alone, unpadded: an independent computation
        own = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in data.input_ids])
    torch.testing.assert_close(logits, own, rtol=0, atol=1e-5)
    again, hit = teacher_logits(model, teacher, data, 16, "fp32")
    assert hit and torch.equal(again, logits)
    folder = cache_dir / key_of(teacher, data, "fp32")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == 40 and len(manifest["shards"]) == 1


def test_another_teacher_data_tokenization_or_precision_is_another_key(
        teacher, model_and_data, tmp_path):
    import shutil

    _, tokenizer, rows = model_and_data
    data = TokenizedDataset(rows, tokenizer, 32)
    key = key_of(teacher, data, "fp32")
    assert key_of(teacher, TokenizedDataset(rows, tokenizer, 24), "fp32") != key
    assert key_of(teacher, TokenizedDataset(rows[:-1], tokenizer, 32), "fp32") != key
    assert key_of(teacher, data, "bf16") != key
    other = tmp_path / "other"
    shutil.copytree(teacher, other)
    weights = other / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(raw))
    assert key_of(other, data, "fp32") != key
    assert key_of(teacher, TokenizedDataset(rows, tokenizer, 32), "fp32") == key


@pytest.mark.parametrize("damage", ["truncated shard", "altered shard", "missing shard",
                                    "empty manifest"])
def test_a_damaged_cache_is_rebuilt_not_used(cache_dir, teacher, model_and_data, damage):
    model, tokenizer, rows = model_and_data
    data = TokenizedDataset(rows, tokenizer, 32)
    logits, _ = teacher_logits(model, teacher, data, 16, "fp32")
    folder = cache_dir / key_of(teacher, data, "fp32")
    shard = folder / "shard-00000.safetensors"
    if damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "altered shard":
        raw = bytearray(shard.read_bytes())
        raw[-2] ^= 0xFF
        shard.write_bytes(bytes(raw))
    elif damage == "missing shard":
        shard.unlink()
    else:
        (folder / "manifest.json").write_text("")
    rebuilt, hit = teacher_logits(model, teacher, data, 16, "fp32")
    assert not hit and torch.equal(rebuilt, logits)
    assert teacher_logits(model, teacher, data, 16, "fp32")[1]  # valid again


def test_training_reads_cached_logits_only_where_losses_read_only_logits(teacher,
                                                                          model_and_data):
    from textdistill.config import KD, Hidden
    from textdistill.models.classifier import build_student
    from textdistill.objectives import ObjectiveModule
    from textdistill.tasks.classification import ClassificationTask

    model, tokenizer, rows = model_and_data
    data = TokenizedDataset(rows[:4], tokenizer, 32)
    batch = data.collate([data[i] for i in range(4)])
    student = build_student("micro-2", model, LABELS)
    module = ObjectiveModule(ClassificationTask(), student,
                             [[KD(loss="kd", temperature=2.0)], [Hidden(loss="hidden")]], model)
    live = module(batch, phase=0)["loss"]
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    fake = {**batch, "teacher_logits": torch.zeros(4, 2)}
    cached = module(fake, phase=0)["loss"]
    assert calls == []  # the teacher did not run
    assert not torch.allclose(cached, live)  # and the given logits were used
    module(fake, phase=1)  # hidden states are not cached: the teacher runs
    assert calls == [1]
    hook.remove()


@pytest.mark.slow
def test_students_of_one_teacher_pay_for_its_pass_once(cache_dir, teacher, tmp_path):
    from textdistill.distill import run_distill

    args = [f"teacher={teacher}", *MICRO, phases("kd, temperature: 2")]
    first = run_distill(distill_config(*args), tmp_path / "a")
    second = run_distill(distill_config(*args, "student.preset=tiny-2"), tmp_path / "b")
    assert first["teacher_cache"] == "computed" and second["teacher_cache"] == "reused"
    off = run_distill(distill_config(*args, "teacher_cache=false"), tmp_path / "c")
    assert "teacher_cache" not in off
    assert len(list(cache_dir.glob("*/manifest.json"))) == 1


def test_the_cache_folder_follows_its_variable_or_the_xdg_cache(monkeypatch, tmp_path):
    from textdistill.teacher_cache import cache_root

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "textdistill" / "teacher"
