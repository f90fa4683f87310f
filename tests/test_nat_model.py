"""The non-autoregressive translation model (vanilla NAT, CMLM) and mask-predict decoding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

from textdistill.errors import UserError
from textdistill.models.nat import (
    NATConfig,
    NATModel,
    build_nat,
    mask_for_training,
    mask_predict,
    remask_counts,
)

V, M, PAD, EOS = 12, 4, 0, 1  # ids 3..11 are words


class ToyTokenizer:
    pad_token_id, eos_token_id = PAD, EOS

    def __len__(self) -> int:
        return V


def tiny(decoder_input: str = "mask", seed: int = 0, **overrides) -> NATModel:
    shape = dict(d_model=16, heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=2,
                 max_length_offset=M, max_positions=64)
    return build_nat("tiny", ToyTokenizer(), seed=seed, decoder_input=decoder_input,
                     **{**shape, **overrides}).eval()


def batch(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids padded with <pad> to ``width`` (default: the longest row) and the bool real mask."""
    width = width or max(map(len, rows))
    ids = torch.tensor([row + [PAD] * (width - len(row)) for row in rows])
    return ids, ids != PAD


def force_length_class(model: NATModel, scores: dict[int, float]) -> None:
    """Make the length head output ``scores`` (class -> logit; other classes 0) for any input."""
    with torch.no_grad():
        model.length_head.weight.zero_()
        model.length_head.bias.zero_()
        for cls, score in scores.items():
            model.length_head.bias[cls] = score


def argmax_decode(model: NATModel, src: list[int], length: int) -> tuple[list[int], float]:
    """One full prediction of ``length`` masked positions for one unpadded source, by hand."""
    ids = torch.tensor([src])
    dec = torch.full((1, length), model.mask_token_id)
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), dec, torch.ones_like(dec)).logits[0]
    logits[:, PAD] = -math.inf
    best, tokens = logits.log_softmax(-1).max(-1)
    return tokens.tolist(), best.mean().item()


SOURCES = [[3, 4, 5, 6, 7, 1], [8, 9, 1]]


def test_build_shape_and_shared_embedding():
    model = tiny()
    cfg = model.config
    assert (cfg.vocab_size, cfg.pad_token_id, cfg.eos_token_id) == (V, PAD, EOS)
    assert (len(model.encoder_layers), len(model.decoder_layers), cfg.d_model) == (1, 2, 16)
    assert model.mask_token_id == V
    assert model.embed_tokens.weight.shape == (V + 1, 16)
    # One vocabulary-sized matrix; the positions are a fixed buffer, neither trained nor saved.
    big = [n for n, p in model.named_parameters() if p.shape[0] in (V, V + 1)]
    assert big == ["embed_tokens.weight"]
    assert not any("position" in n for n in [*dict(model.named_parameters()), *model.state_dict()])
    same = tiny().state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())  # seeded
    # The output layer is the same matrix without a bias: a zero row gives a zero logit.
    ids, mask = batch(SOURCES)
    dec = torch.full((2, 5), model.mask_token_id)
    with torch.no_grad():
        model.embed_tokens.weight[10] = 0
        assert model(ids, mask, dec, torch.ones_like(dec)).logits[..., 10].eq(0).all()


def test_forward_shapes_and_no_mask_class():
    model = tiny()
    ids, mask = batch(SOURCES)
    dec, dec_mask = batch([[V, V, 5, V], [V, V]])
    out = model(ids, mask, dec, dec_mask)
    assert out.logits.shape == (2, 4, V)  # V classes: [MASK] (id V) is never predicted
    assert out.length_logits.shape == (2, 2 * M + 1)


def test_decoder_is_not_causal():
    model = tiny()
    ids, mask = batch(SOURCES[:1])
    dec = torch.tensor([[3, 4, 5, 6, 7]])
    changed = dec.clone()
    changed[0, -1] = 9
    with torch.no_grad():
        a = model(ids, mask, dec, torch.ones_like(dec)).logits
        b = model(ids, mask, changed, torch.ones_like(dec)).logits
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-4)  # an earlier position sees the last


@pytest.mark.parametrize("decoder_input", ["mask", "copy"])
def test_padding_does_not_change_real_positions(decoder_input):
    model = tiny(decoder_input)
    dec_rows = [[V, 6, V], [V, V, V, V, V]]
    ids, mask = batch(SOURCES)
    dec, dec_mask = batch(dec_rows)
    wide_ids, wide_mask = batch(SOURCES, width=9)
    wide_dec, wide_dec_mask = batch(dec_rows, width=8)
    with torch.no_grad():
        out = model(ids, mask, dec, dec_mask)
        wide = model(wide_ids, wide_mask, wide_dec, wide_dec_mask)
    for b, row in enumerate(dec_rows):
        n = len(row)
        assert torch.allclose(out.logits[b, :n], wide.logits[b, :n], atol=1e-5)
    assert torch.allclose(out.length_logits, wide.length_logits, atol=1e-5)


def test_copy_decoder_input_uses_source_embeddings_uniformly():
    model = tiny("copy")
    ids, mask = batch([[3, 4, 5, 6, 1], [7, 8, 1]])
    dec_rows = [[V, 9, V, V, V, V, V], [V, V]]
    dec, dec_mask = batch(dec_rows)
    got = model.decoder_inputs(dec, dec_mask, ids, mask)
    emb, scale = model.embed_tokens.weight, math.sqrt(16)
    for b, row in enumerate(dec_rows):
        src_len, tgt_len = int(mask[b].sum()), len(row)
        for j in range(dec.shape[1]):
            token = int(dec[b, j])
            if token == V:
                token = int(ids[b, j * src_len // tgt_len])
            assert torch.allclose(got[b, j], emb[token] * scale), (b, j)
    # Row 0, length 7 over 5 source tokens: positions 0..6 copy source tokens 0,0,1,2,2,3,4.
    assert torch.allclose(got[0, 3], emb[5] * scale) and torch.allclose(got[0, 6], emb[1] * scale)


def test_mask_decoder_input_uses_the_mask_embedding():
    model = tiny("mask")
    ids, mask = batch([[3, 4, 5, 1]])
    dec, dec_mask = batch([[V, 9, V]])
    got = model.decoder_inputs(dec, dec_mask, ids, mask)[0]
    emb = model.embed_tokens.weight * 4.0  # sqrt(d_model)
    assert emb[V].abs().sum() > 0
    assert torch.allclose(got, torch.stack([emb[V], emb[9], emb[V]]))


def test_length_classes_round_trip_and_clamp():
    model = tiny()
    src = torch.tensor([5, 5, 5, 5, 5, 5, 5])
    tgt = torch.tensor([1, 2, 4, 5, 8, 9, 12])
    classes = model.length_classes(src, tgt)
    assert classes.tolist() == [0, 1, 3, 4, 7, 8, 8]  # offsets -4, -3, -1, 0, 3, 4, 7 (clamped)
    inside = (tgt - src).abs() <= M
    assert torch.equal(model.lengths_from_classes(src, classes)[inside], tgt[inside])
    assert model.lengths_from_classes(src, classes)[-1] == 9
    assert model.lengths_from_classes(torch.tensor([2]), torch.tensor([0])).item() == 1  # min 1


def test_mask_for_training_all_masks_exactly_the_real_positions():
    targets, real = batch([[3, 4, 5, 1], [6, 1]])
    dec, predict = mask_for_training(targets, real, "all", mask_token_id=V)
    assert torch.equal(predict, real)
    assert dec.tolist() == [[V, V, V, V], [V, V, PAD, PAD]]


def test_mask_for_training_random_cmlm():
    targets, real = batch([[3, 4, 5, 6, 7, 1], [6, 1], [9, 1, 4, 5]])
    lengths = real.sum(1)

    def draw(seed: int):
        return mask_for_training(targets, real, "random", mask_token_id=V,
                                 generator=torch.Generator().manual_seed(seed))

    a, b = draw(7), draw(7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    counts = torch.zeros(3, 7, dtype=torch.long)  # how often row i masked n positions
    seen = torch.zeros_like(real, dtype=torch.long)
    for seed in range(600):
        dec, predict = draw(seed)
        assert not (predict & ~real).any()
        assert torch.equal(dec == V, predict)
        assert torch.equal(dec[~predict], targets[~predict])  # the rest is gold (or <pad>)
        n = predict.sum(1)
        assert ((n >= 1) & (n <= lengths)).all()
        counts[torch.arange(3), n] += 1
        seen += predict
    for row, length in enumerate(lengths.tolist()):
        share = counts[row, 1 : length + 1].float() / 600
        assert counts[row, 0] == 0 and counts[row, length + 1 :].sum() == 0
        assert (share - 1 / length).abs().max() < 0.08, share  # n ~ uniform over 1..T_b
    assert (seen[real] > 100).all()  # every real position gets masked now and then


def test_mask_predict_one_iteration_is_argmax_at_the_predicted_length():
    model = tiny(seed=3)
    ids, mask = batch(SOURCES)
    got = mask_predict(model, ids, mask, iterations=1)
    for src, (tokens, score) in zip(SOURCES, got, strict=True):
        with torch.no_grad():
            one = torch.tensor([src])
            cls = model(one, torch.ones_like(one), one, torch.ones_like(one)).length_logits.argmax()
        want_tokens, want_score = argmax_decode(model, src, max(1, len(src) + int(cls) - M))
        assert tokens == want_tokens
        assert score == pytest.approx(want_score, abs=1e-5)


def test_remask_counts_follow_the_linear_schedule():
    lengths = torch.tensor([10, 7, 3, 1])
    got = [remask_counts(lengths, t, 4).tolist() for t in (1, 2, 3)]
    assert got == [[7, 5, 2, 0], [5, 3, 1, 0], [2, 1, 0, 0]]


def test_mask_predict_remasks_the_least_probable_tokens(monkeypatch):
    model = tiny(seed=1)
    src = [3, 4, 5, 6, 7, 8, 1]
    force_length_class(model, {3 + M: 10.0})  # length 7 + 3 = 10
    calls = []
    decode = model.decode

    def spy(*args):
        logits = decode(*args)
        calls.append((args[3].clone(), logits.clone()))
        return logits

    monkeypatch.setattr(model, "decode", spy)
    ids, mask = batch([src])
    [(tokens, score)] = mask_predict(model, ids, mask, iterations=4)
    # Replay by hand: which positions each call saw masked, and the tokens it left behind.
    assert len(calls) == 4
    want_tokens, probs = [None] * 10, [None] * 10
    for k, (dec, logits) in enumerate(calls):
        masked = [j for j in range(10) if dec[0, j] == V]
        assert dec.shape == (1, 10)
        if k:
            assert len(masked) == [7, 5, 2][k - 1]  # floor(10 * (4 - k) / 4)
            assert set(masked) == set(sorted(range(10), key=probs.__getitem__)[: len(masked)])
            kept = [j for j in range(10) if j not in masked]
            assert [int(dec[0, j]) for j in kept] == [want_tokens[j] for j in kept]
        logits[..., PAD] = -math.inf
        best, arg = logits[0].log_softmax(-1).max(-1)
        for j in masked:
            want_tokens[j], probs[j] = int(arg[j]), float(best[j])
    assert tokens == want_tokens
    assert score == pytest.approx(sum(probs) / 10, abs=1e-5)
    # A one-token candidate has nothing to re-mask: one decoder pass only.
    calls.clear()
    force_length_class(model, {0: 10.0})  # 2 - 4 -> 1
    ids, mask = batch([[5, 1]])
    [(tokens, _)] = mask_predict(model, ids, mask, iterations=3)
    assert len(tokens) == 1 and len(calls) == 1


def test_length_beam_keeps_the_best_average_log_probability():
    model = tiny(seed=2)
    src = [3, 4, 5, 1]
    by_class = {c: argmax_decode(model, src, max(1, len(src) + c - M)) for c in range(2 * M + 1)}
    short, long = by_class[M - 1], by_class[M + 2]  # lengths 3 and 6
    assert short[1] != long[1]
    worse, better = (M - 1, M + 2) if short[1] < long[1] else (M + 2, M - 1)
    force_length_class(model, {worse: 5.0, better: 4.0})
    ids, mask = batch([src])
    [one] = mask_predict(model, ids, mask, length_beam=1)
    [two] = mask_predict(model, ids, mask, length_beam=2)
    assert one[0] == by_class[worse][0] and one[1] == pytest.approx(by_class[worse][1], abs=1e-5)
    assert two[0] == by_class[better][0] and two[1] == pytest.approx(by_class[better][1], abs=1e-5)
    # A beam wider than the classes tries them all.
    best = max(by_class.values(), key=lambda r: r[1])
    [every] = mask_predict(model, ids, mask, length_beam=50)
    assert every[0] == best[0] and every[1] == pytest.approx(best[1], abs=1e-5)


def test_mask_predict_never_outputs_pad_or_mask(monkeypatch):
    model = tiny("copy", seed=4)
    decode = model.decode

    def pad_loving(*args):
        logits = decode(*args)
        logits[..., PAD] += 100.0  # <pad> would win every argmax
        return logits

    monkeypatch.setattr(model, "decode", pad_loving)
    ids, mask = batch(SOURCES)
    got = mask_predict(model, ids, mask, iterations=3, length_beam=3, max_length=5)
    for tokens, score in got:
        assert 1 <= len(tokens) <= 5
        assert all(0 < t < V for t in tokens)
        assert score <= 0


def test_overfit_copy_task_decodes_exactly():
    pairs = [[3, 4, 5, 6, 1], [7, 8, 9, 1], [10, 11, 4, 7, 5, 1], [6, 3, 1]]
    model = tiny(d_model=32, ffn_dim=64, decoder_layers=1, dropout=0.0).train()
    ids, mask = batch(pairs)
    classes = model.length_classes(mask.sum(1), mask.sum(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        dec, predict = mask_for_training(ids, mask, "random", mask_token_id=model.mask_token_id,
                                         generator=gen)
        out = model(ids, mask, dec, mask)
        loss = (F.cross_entropy(out.logits[predict], ids[predict])
                + F.cross_entropy(out.length_logits, classes))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    got = mask_predict(model, ids, mask, iterations=4)
    assert [tokens for tokens, _ in got] == pairs
    assert all(score > -0.1 for _, score in got)


def test_save_and_load_round_trip(tmp_path):
    model = tiny("copy", max_length_offset=7)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded, info = NATModel.from_pretrained(tmp_path, use_safetensors=True,
                                            output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.model_type == "textdistill-nat"
    for key in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "heads", "ffn_dim",
                "dropout", "max_positions", "pad_token_id", "eos_token_id", "max_length_offset",
                "decoder_input"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    assert model.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    marian = MarianSinusoidalPositionalEmbedding(64, 16).create_weight()
    assert torch.allclose(loaded.embed_positions.table, marian, atol=1e-6)
    ids, mask = batch(SOURCES)
    dec, dec_mask = batch([[V, 5, V, V], [V, V]])
    with torch.no_grad():
        a, b = model(ids, mask, dec, dec_mask), loaded(ids, mask, dec, dec_mask)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.length_logits, b.length_logits)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"unknown decoder_input 'shift'; use one of mask, copy"):
        NATConfig(decoder_input="shift")
    with pytest.raises(UserError, match=r"unknown decoder_input 'shift'"):
        build_nat("tiny", ToyTokenizer(), decoder_input="shift")
    with pytest.raises(UserError, match="not divisible by heads"):
        build_nat("tiny", ToyTokenizer(), d_model=30, heads=4)
    model = tiny()
    ids, mask = batch(SOURCES)
    with pytest.raises(UserError, match=r"iterations >= 1, got 0"):
        mask_predict(model, ids, mask, iterations=0)
    with pytest.raises(UserError, match=r"length_beam >= 1, got 0"):
        mask_predict(model, ids, mask, length_beam=0)
    with pytest.raises(UserError, match=r"unknown masking mode 'some'; use one of all, random"):
        mask_for_training(ids, mask, "some", mask_token_id=V)
    long_ids = torch.full((1, 65), 3)
    with pytest.raises(UserError, match="longer than the model's max_positions 64"):
        model.encode(long_ids, torch.ones_like(long_ids))
