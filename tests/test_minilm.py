"""MiniLM and MiniLMv2 objectives: checked against an independent float64 computation of
their formulas (loops over examples, heads and real query positions), the tapped queries,
keys and values checked against the model's own attention output, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from textdistill.config import LOSS_SPECS
from textdistill.errors import UserError
from textdistill.losses import REGISTRY, ModelShape, TaskOutputs, log_relation, merge_heads
from textdistill.objectives import ObjectiveModule
from textdistill.taps import AttentionTap
from textdistill.tasks.classification import EncoderTask

MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _qkv(heads: int, d: int, layers: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(2, heads, 5, d, generator=g, dtype=torch.float64) * 2
                  for _ in range(3)) for _ in range(layers)]


def _softmax_rows(a: np.ndarray, b: np.ndarray, keys: int) -> np.ndarray:
    """Row distributions softmax(a b^T / sqrt(d)) over the first ``keys`` keys."""
    s = a @ b[:keys].T / math.sqrt(a.shape[-1])
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl_mean(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over (head, real query) rows of KL(teacher row || student row)."""
    return float(np.mean([np.sum(t * np.log(t / s)) for t, s in pairs]))


def _rows(xt, yt, xs, ys, b: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Teacher/student row pairs of example ``b`` for per-head (x, y) lists."""
    n = int(MASK[b].sum())
    out = []
    for h in range(len(xt)):
        pt, ps = _softmax_rows(xt[h], yt[h], n), _softmax_rows(xs[h], ys[h], n)
        out += [(pt[i], ps[i]) for i in range(n)]
    return out


def _split(x: torch.Tensor, b: int, heads: int) -> list[np.ndarray]:
    """Example ``b`` of (B, H, L, d) as ``heads`` relation heads: the H heads side by side,
    cut into equal column blocks."""
    wide = np.concatenate([x[b, h].numpy() for h in range(x.shape[1])], axis=-1)
    width = wide.shape[-1] // heads
    return [wide[:, r * width:(r + 1) * width] for r in range(heads)]


def _compute(loss: str, student, teacher, **params):
    spec = LOSS_SPECS[loss](loss=loss, **params)
    s_shape = ModelShape(len(student), student[0][0].shape[1] * student[0][0].shape[3],
                         student[0][0].shape[1])
    t_shape = ModelShape(len(teacher), teacher[0][0].shape[1] * teacher[0][0].shape[3],
                         teacher[0][0].shape[1])
    match = REGISTRY[loss].build(spec, s_shape, t_shape)
    s = TaskOutputs(logits=None, attention_qkv=student, attention_mask=MASK)
    t = TaskOutputs(logits=None, attention_qkv=teacher, attention_mask=MASK)
    return REGISTRY[loss].compute(spec, s, t, None, match)


@pytest.mark.parametrize("teacher_layer", [None, 1])
def test_minilm_is_attention_kl_plus_value_relation_kl(teacher_layer):
    student, teacher = _qkv(2, 3, 1, seed=0), _qkv(2, 4, 2, seed=1)
    (sq, sk, sv), (tq, tk, tv) = student[-1], teacher[(teacher_layer or 2) - 1]
    expected = 0.0
    for xs, ys, xt, yt in ((sq, sk, tq, tk), (sv, sv, tv, tv)):
        rows = []
        for b in range(2):
            rows += _rows(*([x[b, h].numpy() for h in range(2)] for x in (xt, yt, xs, ys)), b)
        expected += _kl_mean(rows)
    got = _compute("minilm", student, teacher, teacher_layer=teacher_layer)
    assert got.item() == pytest.approx(expected, rel=1e-5)  # the losses run in float32
    assert got.item() > 0.05  # not a vacuous zero


@pytest.mark.parametrize("relations", [["query", "key", "value"], ["value"]])
def test_minilmv2_relations_are_re_split_into_relation_heads(relations):
    # the student has 2 heads of 3 (width 6), the teacher 3 heads of 4 (width 12): 3 relation
    # heads of widths 2 and 4
    student, teacher = _qkv(2, 3, 1, seed=2), _qkv(3, 4, 2, seed=3)
    index = {"query": 0, "key": 1, "value": 2}
    expected = 0.0
    for name in relations:
        xs, xt = student[-1][index[name]], teacher[-1][index[name]]
        rows = []
        for b in range(2):
            ts, ss = _split(xt, b, 3), _split(xs, b, 3)
            rows += _rows(ts, ts, ss, ss, b)
        expected += _kl_mean(rows)
    got = _compute("minilmv2", student, teacher, relation_heads=3, relations=relations)
    assert got.item() == pytest.approx(expected, rel=1e-5)  # the losses run in float32


def test_log_relation_gives_raw_log_probabilities_and_zero_to_padded_keys():
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    got = log_relation(x, x, 2, MASK).exp()
    a = x[1, :, 3:].numpy()  # example 1, relation head 1 (columns 3..5), 3 real keys
    expected = _softmax_rows(a, a, 3)
    np.testing.assert_allclose(got[1, 1, :, :3].numpy(), expected, rtol=1e-6)
    assert got[1, :, :, 3:].abs().max() == 0


def test_merge_heads_puts_heads_side_by_side():
    x = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert merge_heads(x)[1, 2].tolist() == torch.cat([x[1, h, 2] for h in range(3)]).tolist()


def test_tapped_queries_keys_and_values_rebuild_the_attention_output():
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=2,
                                 num_attention_heads=3, intermediate_size=16,
                                 attn_implementation="eager")).eval()
    captured = []
    model.encoder.layer[1].attention.self.register_forward_hook(
        lambda m, i, out: captured.append(out[0]))
    ids = torch.randint(5, 50, (2, 5))
    with AttentionTap(model) as tap, torch.no_grad():
        model(input_ids=ids, attention_mask=MASK)
        q, k, v = tap.qkv()[1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(~MASK.bool()[:, None, None, :], float("-inf"))
    context = merge_heads(scores.softmax(-1) @ v)
    torch.testing.assert_close(context, captured[0], rtol=1e-5, atol=1e-6)


def test_minilm_errors_name_the_fix():
    spec = LOSS_SPECS["minilm"](loss="minilm")
    with pytest.raises(UserError, match="use minilmv2"):
        REGISTRY["minilm"].build(spec, ModelShape(2, 128, 2), ModelShape(6, 384, 12))
    spec = LOSS_SPECS["minilmv2"](loss="minilmv2", relation_heads=12)
    with pytest.raises(UserError, match=r"use one of 1, 2, 4, 8, 16, 32, 64, 128"):
        REGISTRY["minilmv2"].build(spec, ModelShape(2, 128, 2), ModelShape(6, 384, 12))
    spec = LOSS_SPECS["minilmv2"](loss="minilmv2", teacher_layer=7)
    with pytest.raises(UserError, match="beyond the teacher's 6 layers"):
        REGISTRY["minilmv2"].build(spec, ModelShape(2, 384, 12), ModelShape(6, 384, 12))


def test_minilmv2_teaches_a_student_with_other_heads_and_width():
    torch.manual_seed(0)
    teacher = BertModel(BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=3,
                                   num_attention_heads=4, intermediate_size=32))
    student = BertModel(BertConfig(vocab_size=60, hidden_size=12, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16))
    spec = LOSS_SPECS["minilmv2"](loss="minilmv2", relation_heads=6)
    module = ObjectiveModule(EncoderTask(), student, [[spec]], teacher)
    batch = {"input_ids": torch.randint(5, 60, (8, 7)), "attention_mask": torch.ones(8, 7)}
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = module(batch)["loss"].item()
    for _ in range(30):
        optimizer.zero_grad()
        module(batch)["loss"].backward()
        optimizer.step()
    assert module(batch)["loss"].item() < 0.5 * first
    assert all(p.grad is None for p in teacher.parameters())
