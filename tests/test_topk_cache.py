"""Word-level KD against cached top-k teacher outputs: the bucketed divergence against an
independent float64 computation and against the loss on the full distribution, and the cached
values against the teacher's own distributions."""

from __future__ import annotations

import math

import pytest
import torch
from test_seq2seq_command import LINES

from textdistill.data.batching import ParallelDataset
from textdistill.losses import DIVERGENCES, divergence, soft_target_loss
from textdistill.models.seq2seq import build_seq2seq, save_seq2seq
from textdistill.seq2seq.vocab import train_tokenizer
from textdistill.teacher_cache import CACHE_ENV, teacher_topk


def _cached_topk(teacher_logits: torch.Tensor, k: int):
    top = torch.log_softmax(teacher_logits, -1).topk(k, dim=-1)
    return top.values, top.indices


def test_bucketed_kl_matches_a_float64_loop():
    torch.manual_seed(0)
    s, t = torch.randn(3, 10), torch.randn(3, 10) * 2
    values, indices = _cached_topk(t, 4)
    got = divergence(s, values, "kd", top_indices=indices)
    total = 0.0
    for row in range(3):
        p_t = [math.exp(v) for v in t[row].double().log_softmax(-1).tolist()]
        p_s = [math.exp(v) for v in s[row].double().log_softmax(-1).tolist()]
        top = indices[row].tolist()
        pt = [p_t[j] for j in top] + [1 - sum(p_t[j] for j in top)]
        ps = [p_s[j] for j in top] + [1 - sum(p_s[j] for j in top)]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


PARAMS = {"jsd": {"beta": 0.5}, "skew_kl": {"skew": 0.1, "reverse": False}}


@pytest.mark.parametrize("kind", list(DIVERGENCES))
def test_topk_loss_is_the_full_loss_at_full_k_and_a_lower_bound_below(kind):
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 50), torch.randn(2, 5, 50) * 3
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    params = PARAMS.get(kind, {})
    full = divergence(s, t, kind, mask=mask, **params)
    values, indices = _cached_topk(t, 50)
    whole = divergence(s, values, kind, mask=mask, top_indices=indices, **params)
    assert whole.item() == pytest.approx(full.item(), abs=1e-4)
    previous = 0.0
    for k in (1, 4, 16, 49):
        values, indices = _cached_topk(t, k)
        part = divergence(s, values, kind, mask=mask, top_indices=indices, **params).item()
        assert -1e-6 <= part <= full.item() + 1e-5  # grouping classes never raises it
        if kind == "kd":
            assert part >= previous - 1e-6  # finer buckets, larger divergence
            previous = part


def test_mixed_with_labels_and_tempered_is_refused():
    torch.manual_seed(2)
    s, t = torch.randn(2, 3, 20, requires_grad=True), torch.randn(2, 3, 20)
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    values, indices = _cached_topk(t, 20)
    cached = soft_target_loss(s, values, labels, 1.0, 0.3, top_indices=indices)
    live = soft_target_loss(s, t, labels, 1.0, 0.3)
    assert cached.item() == pytest.approx(live.item(), abs=1e-4)
    cached.backward()
    assert torch.isfinite(s.grad).all()
    with pytest.raises(Exception, match="use temperature 1"):
        divergence(s, values, "kd", temperature=2.0, top_indices=indices)


def test_cached_topk_are_the_teachers_own(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    tok = train_tokenizer(LINES, 60)
    model = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1)
    save_seq2seq(model, tok, tmp_path / "t", "en", "de")
    pairs = [(a, b) for a, b in zip(LINES[:8], LINES[3:11], strict=True)]
    data = ParallelDataset(pairs, tok, 16)
    got, hit = teacher_topk(model, tmp_path / "t", data, 64, "fp32", 5)
    assert not hit and got["values"].shape == (sum(len(t) for t in data.tgt), 5)
    model.eval()
    start = 0
    for src, tgt in zip(data.src, data.tgt, strict=True):  # one pair at a time, unpadded
        labels = torch.tensor([tgt])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([src]),
                           decoder_input_ids=model.prepare_decoder_input_ids_from_labels(
                               labels=labels)).logits[0]
        own = torch.log_softmax(logits, -1).topk(5, dim=-1)
        rows = slice(start, start + len(tgt))
        torch.testing.assert_close(got["values"][rows], own.values, rtol=0, atol=1e-5)
        assert torch.equal(got["indices"][rows].long(), own.indices)
        start += len(tgt)
    again, hit = teacher_topk(model, tmp_path / "t", data, 64, "fp32", 5)
    assert hit and torch.equal(again["indices"], got["indices"])
    data.teacher_topk = got  # batches carry them, padded like the labels
    batch = data.collate([data[0], data[3]])
    assert batch["teacher_top"].shape == (*batch["labels"].shape, 5)
