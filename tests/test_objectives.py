"""ObjectiveModule end to end: every loss term it returns is recomputed here, independently,
from the models' own weights, and compared by RAW value.

Only the models' forward passes are shared with the code under test (they give the logits and
``output_hidden_states``). Everything else is written out in this file, in float64: the layer
maps g(m), the student projections ``h @ W.T + b`` (from the Linear's weight and bias), the
pre-softmax attention scores ``Q K^T / sqrt(d_head)`` from each layer's query/key weights and
biases, the masked means, the divergences, the label-smoothed NLL and the decoder-input shift.
Each returned term must equal ``weight * value`` and ``loss`` their sum.

Biases (model and projection) are random and non-zero, widths and head counts differ between
teacher and student, the batches have padding, and some weights are not 1, so a dropped bias, a
lost mask, a wrong layer or a wrong factor changes the numbers; ``test_*_have_teeth`` break
one registry term (or the task) at a time and show the comparison fails.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn

from textdistill import losses
from textdistill.config import (
    JSD,
    KD,
    TVD,
    Attention,
    Embedding,
    Hard,
    Hidden,
    LayerMapConfig,
    ReverseKL,
    SkewKL,
    SoftCE,
)
from textdistill.errors import UserError
from textdistill.losses import REGISTRY, LossTerm
from textdistill.models.seq2seq import build_seq2seq
from textdistill.objectives import ObjectiveModule
from textdistill.seq2seq.vocab import train_tokenizer
from textdistill.tasks.classification import ClassificationTask
from textdistill.tasks.seq2seq import Seq2SeqTask

REL = 1e-5
"""Relative tolerance: the module computes in float32, the references in float64."""

LOGIT_LOSSES = {"hard", "kd", "reverse_kl", "jsd", "skew_kl", "tvd", "soft_ce"}


# -- references, float64 ----------------------------------------------------------------------

def _layer_map(cfg: LayerMapConfig, m_layers: int, n_layers: int) -> list[int]:
    """g(m) for m = 1..M, from the definitions (not from textdistill.mapping)."""
    if cfg.strategy == "uniform":  # round-half-up(m * N / M), exactly
        return [math.floor(Fraction(m * n_layers, m_layers) + Fraction(1, 2))
                for m in range(1, m_layers + 1)]
    if cfg.strategy == "top":
        return [n_layers - m_layers + m for m in range(1, m_layers + 1)]
    if cfg.strategy == "bottom":
        return list(range(1, m_layers + 1))
    return list(cfg.layers)


def _layer_weights(cfg: LayerMapConfig, m_layers: int) -> list[float]:
    return [1.0] * m_layers if cfg.weights is None else [float(w) for w in cfg.weights]


def _linear(x: torch.Tensor, lin: nn.Linear) -> torch.Tensor:
    return x @ lin.weight.detach().double().T + lin.bias.detach().double()


def _scores(attn_self: nn.Module, h: torch.Tensor, heads: int) -> torch.Tensor:
    """Pre-softmax scores (B, H, L, L) of one BERT self-attention block whose input is ``h``."""
    q, k = _linear(h, attn_self.query), _linear(h, attn_self.key)
    b, length, width = q.shape
    d = width // heads
    q = q.reshape(b, length, heads, d).permute(0, 2, 1, 3)
    k = k.reshape(b, length, heads, d).permute(0, 2, 1, 3)
    return q @ k.transpose(-1, -2) / math.sqrt(d)


def _state_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of (a - b)^2 over the real tokens of (B, L, D) states and over D."""
    m = mask.double()[..., None]
    return float(((a - b) ** 2 * m).sum() / (m.sum() * a.shape[-1]))


def _score_mse(s: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, average_heads: bool
               ) -> float:
    """Mean of (s - t)^2 over heads and (query, key) pairs where both are real tokens."""
    if average_heads:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    m = mask.double()
    pair = (m[:, :, None] * m[:, None, :])[:, None]  # (B, 1, L, L)
    return float(((s - t) ** 2 * pair).sum() / (pair.sum() * s.shape[1]))


def _log_softmax(logits: torch.Tensor, tau: float) -> torch.Tensor:
    z = logits.double() / tau
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _divergence(spec, log_s: torch.Tensor, log_t: torch.Tensor) -> torch.Tensor:
    """D(teacher, student) per row, from the formulas in the loss docs."""
    p_s, p_t = log_s.exp(), log_t.exp()
    if spec.loss == "kd":
        return _kl(log_t, log_s)
    if spec.loss == "reverse_kl":
        return _kl(log_s, log_t)
    if spec.loss == "jsd":
        b = spec.beta
        log_m = torch.log(b * p_t + (1 - b) * p_s)
        return b * _kl(log_t, log_m) + (1 - b) * _kl(log_s, log_m)
    if spec.loss == "skew_kl":
        lam = spec.skew
        if spec.reverse:
            return _kl(log_s, torch.log(lam * p_s + (1 - lam) * p_t))
        return _kl(log_t, torch.log(lam * p_t + (1 - lam) * p_s))
    assert spec.loss == "tvd"
    return 0.5 * (p_t - p_s).abs().sum(-1)


def _nll(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """(1 - eps) * nll + eps * mean_v(-log p_v) per row."""
    log_p = _log_softmax(logits, 1.0)
    nll = -log_p[torch.arange(len(labels)), labels]
    return (1 - smoothing) * nll + smoothing * (-log_p).mean(-1)


def _logit_term(spec, s: torch.Tensor, t: torch.Tensor | None, labels: torch.Tensor | None
                ) -> float:
    """A loss on logits rows (K, C) (already restricted to the real target tokens)."""
    if spec.loss == "hard":
        keep = labels != -100
        return float(_nll(s[keep], labels[keep], spec.smoothing).mean())
    tau = spec.temperature
    if spec.loss == "soft_ce":
        return float(-(_log_softmax(t, tau).exp() * _log_softmax(s, tau)).sum(-1).mean())
    keep = torch.ones(len(s), dtype=torch.bool) if labels is None else labels != -100
    d = _divergence(spec, _log_softmax(s[keep], tau), _log_softmax(t[keep], tau))
    value = spec.alpha * tau**2 * d.mean()
    if spec.alpha < 1:
        value = value + (1 - spec.alpha) * _nll(s[keep], labels[keep]).mean()
    return float(value)


def _names(specs) -> list[str]:
    """Term names: the loss name, numbered 1, 2, ... when the loss occurs more than once."""
    total, seen, out = Counter(s.loss for s in specs), Counter(), []
    for s in specs:
        seen[s.loss] += 1
        out.append(f"{s.loss}{seen[s.loss]}" if total[s.loss] > 1 else s.loss)
    return out


def _compare(out: dict, expected: dict[str, float]) -> None:
    """Each term equals its reference; ``loss`` is their sum."""
    assert set(out) == {"loss", *expected}
    for name, want in expected.items():
        got = float(out[name])
        assert got == pytest.approx(want, rel=REL), f"term {name}: got {got}, recomputed {want}"
    assert float(out["loss"]) == pytest.approx(sum(float(out[n]) for n in expected), rel=1e-6)
    assert float(out["loss"]) == pytest.approx(sum(expected.values()), rel=REL)


# -- classification ---------------------------------------------------------------------------

def _bert(layers: int, hidden: int, heads: int, attn: str, seed: int):
    """A random tiny BERT classifier with O(1) scores and random non-zero biases everywhere."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=3,
        initializer_range=0.2, attn_implementation=attn,
    )
    model = transformers.BertForSequenceClassification(cfg)
    assert model.config._attn_implementation == attn
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


def _class_batch(labels) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, 100, (3, 8), generator=g)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels)}


def _randomize_projections(module: ObjectiveModule) -> None:
    """Projections start as N(0, 0.02) with zero bias: make both large enough to matter."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for match in module.matches.values():
            if match.projection is not None:
                for lin in match.projection.maps:
                    lin.weight.normal_(0, 0.3, generator=g)
                    lin.bias.normal_(0, 0.5, generator=g)


def _bert_views(model, batch):
    """The model's own hidden states and logits, and scores recomputed from its weights."""
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True)
    states = [h.double() for h in out.hidden_states]
    heads = model.config.num_attention_heads
    scores = [_scores(layer.attention.self, h, heads)
              for layer, h in zip(model.bert.encoder.layer, states[:-1], strict=True)]
    return states, scores, out.logits.double()


def _classification_reference(module, specs, batch, phase=0) -> dict[str, float]:
    s_states, s_scores, s_logits = _bert_views(module.student, batch)
    t_states, t_scores, t_logits = ([], [], None) if module.teacher is None else _bert_views(
        module.teacher, batch)
    mask, labels = batch["attention_mask"], batch.get("labels")
    m_layers, n_layers = len(s_states) - 1, len(t_states) - 1
    expected = {}
    for i, (name, spec) in enumerate(zip(_names(specs), specs, strict=True)):
        if spec.loss in LOGIT_LOSSES:
            value = _logit_term(spec, s_logits, t_logits, labels)
        elif spec.loss == "embedding":
            lin = module.matches[module._keys[phase][i]].projection.maps[0]
            value = _state_mse(_linear(s_states[0], lin), t_states[0], mask)
        elif spec.loss == "hidden":
            maps = module.matches[module._keys[phase][i]].projection.maps
            assert len(maps) == (1 if spec.shared_projection else m_layers)
            value = sum(
                w * _state_mse(_linear(s_states[m], maps[0 if spec.shared_projection else m - 1]),
                               t_states[g], mask)
                for m, (g, w) in enumerate(zip(_layer_map(spec.layer_map, m_layers, n_layers),
                                               _layer_weights(spec.layer_map, m_layers),
                                               strict=True), start=1))
        else:
            assert spec.loss == "attention"
            value = sum(
                w * _score_mse(s_scores[m - 1], t_scores[g - 1], mask, spec.average_heads)
                for m, (g, w) in enumerate(zip(_layer_map(spec.layer_map, m_layers, n_layers),
                                               _layer_weights(spec.layer_map, m_layers),
                                               strict=True), start=1))
        expected[name] = spec.weight * value
    return expected


def _check_classification(module, specs, batch, phase=0) -> None:
    module.eval()
    with torch.no_grad():
        out = module(batch, phase)
    _compare(out, _classification_reference(module, specs, batch, phase))


def _cls_module(teacher, student, specs):
    module = ObjectiveModule(ClassificationTask(), _bert(*student, seed=2), [specs],
                             _bert(*teacher, seed=1))
    _randomize_projections(module)
    return module


def _uniform(**kw) -> LayerMapConfig:
    return LayerMapConfig(strategy="uniform", **kw)


# (layers, hidden, heads, attention implementation) of teacher and student, the terms, labels
CASES = {
    "t4-s2-uniform-eager": (
        (4, 48, 4, "eager"), (2, 48, 4, "eager"),
        [Embedding(loss="embedding", weight=2.0),
         Hidden(loss="hidden"),
         Hidden(loss="hidden", shared_projection=True, weight=0.5,
                layer_map=LayerMapConfig(strategy="top")),
         Attention(loss="attention", weight=0.25),
         KD(loss="kd", temperature=2.0, alpha=0.5),
         SoftCE(loss="soft_ce", temperature=3.0, weight=0.7)],
        [0, 2, 1]),
    "t3-s3-sdpa-divergences": (
        (3, 48, 4, "sdpa"), (3, 48, 4, "sdpa"),
        [Hidden(loss="hidden", shared_projection=True, layer_map=LayerMapConfig(strategy="bottom")),
         Attention(loss="attention", layer_map=LayerMapConfig(strategy="top")),
         ReverseKL(loss="reverse_kl", temperature=2.0, alpha=0.5),
         JSD(loss="jsd", temperature=2.0, beta=0.3, alpha=1.0, weight=1.5),
         SkewKL(loss="skew_kl", temperature=1.5, skew=0.2, alpha=0.8),
         SkewKL(loss="skew_kl", temperature=2.0, skew=0.3, reverse=True, alpha=1.0),
         TVD(loss="tvd", temperature=2.0, alpha=0.6, weight=3.0),
         Hard(loss="hard", weight=0.4)],
        [1, 0, 2]),
    "t4-s3-explicit-weights": (
        (4, 48, 4, "eager"), (3, 48, 4, "sdpa"),
        [Hidden(loss="hidden", layer_map=LayerMapConfig(
            strategy="explicit", layers=[2, 2, 4], weights=[0.5, 1.0, 2.0])),
         Attention(loss="attention", weight=0.5, layer_map=LayerMapConfig(
             strategy="explicit", layers=[3, 1, 4], weights=[2.0, 0.5, 1.5])),
         Attention(loss="attention", layer_map=_uniform(weights=[1.0, 0.0, 3.0])),
         KD(loss="kd", temperature=2.0, alpha=0.5),
         SoftCE(loss="soft_ce", temperature=3.0)],
        [0, -100, 2]),  # label -100: that row leaves both parts of kd, not soft_ce
    "t5-s2-narrow-student": (
        (5, 48, 4, "sdpa"), (2, 32, 4, "eager"),
        [Embedding(loss="embedding"),
         Hidden(loss="hidden", weight=1.5),  # uniform 5/2: g = [3, 5] (2.5 rounds up)
         Hidden(loss="hidden", shared_projection=True, weight=0.3,
                layer_map=LayerMapConfig(strategy="bottom")),
         Attention(loss="attention"),
         KD(loss="kd", temperature=2.0, alpha=0.5),
         SoftCE(loss="soft_ce", temperature=3.0)],
        [2, 1, 1]),
    "t4-s2-fewer-heads": (
        (4, 48, 4, "eager"), (2, 48, 2, "sdpa"),
        [Attention(loss="attention", average_heads=True, weight=2.0),
         Attention(loss="attention", average_heads=True,
                   layer_map=LayerMapConfig(strategy="bottom")),
         Hidden(loss="hidden"),
         TVD(loss="tvd", temperature=2.0, alpha=0.5),
         KD(loss="kd", temperature=2.0, alpha=0.5)],
        [1, 1, 0]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_classification_terms_match_recomputation(case):
    teacher, student, specs, labels = CASES[case]
    module = _cls_module(teacher, student, specs)
    batch = _class_batch(labels)
    _check_classification(module, specs, batch)
    # the layer maps and weights the module built are the ones written above
    m_layers, n_layers = student[0], teacher[0]
    for i, spec in enumerate(specs):
        if spec.loss in ("hidden", "attention"):
            match = module.matches[module._keys[0][i]]
            assert match.mapping == _layer_map(spec.layer_map, m_layers, n_layers)
            assert match.weights == _layer_weights(spec.layer_map, m_layers)


def test_uniform_map_rounds_half_up():
    assert _layer_map(_uniform(), 2, 5) == [3, 5]
    assert _layer_map(_uniform(), 2, 4) == [2, 4]
    assert _layer_map(_uniform(), 3, 4) == [1, 3, 4]
    module = _cls_module((5, 48, 4, "eager"), (2, 32, 4, "eager"), [Hidden(loss="hidden")])
    assert next(iter(module.matches.values())).mapping == [3, 5]


def test_phases_select_their_terms():
    specs = [[Hidden(loss="hidden", weight=0.5)],
             [KD(loss="kd", temperature=2.0, alpha=0.5), Hard(loss="hard", weight=0.25)]]
    module = ObjectiveModule(ClassificationTask(), _bert(2, 32, 2, "eager", seed=2), specs,
                             _bert(4, 48, 4, "eager", seed=1))
    _randomize_projections(module)
    batch = _class_batch([0, 1, 2])
    for phase in (0, 1):
        _check_classification(module, specs[phase], batch, phase)


def test_hard_only_needs_no_teacher():
    specs = [Hard(loss="hard", smoothing=0.2)]
    module = ObjectiveModule(ClassificationTask(), _bert(2, 32, 2, "eager", seed=2), [specs])
    assert module.teacher is None
    _check_classification(module, specs, _class_batch([2, 0, 1]))


def _padding_is_visible():
    """Sanity for the teeth below: the padded positions carry states that differ."""
    module = _cls_module(*CASES["t4-s2-uniform-eager"][:2], [Hidden(loss="hidden")])
    s_states, _, _ = _bert_views(module.student, _class_batch([0, 0, 0]))
    return bool(s_states[1][2, 3:].abs().sum() > 0)


# Deliberately broken registry terms: each is a plausible bug.

def _hidden_without_mask(spec, s, t, labels, match):
    return sum(w * losses.hidden_mse(match.projection(s.hidden_states[m], m - 1),
                                     t.hidden_states[g], None)
               for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1))


def _hidden_teacher_off_by_one(spec, s, t, labels, match):
    return sum(w * losses.hidden_mse(match.projection(s.hidden_states[m], m - 1),
                                     t.hidden_states[g - 1], s.attention_mask)
               for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1))


def _embedding_without_bias(spec, s, t, labels, match):
    lin = match.projection.maps[0]
    return losses.hidden_mse(s.hidden_states[0] @ lin.weight.T, t.hidden_states[0],
                             s.attention_mask)


def _attention_scores_off_by_one(spec, s, t, labels, match):
    # indexes the scores like hidden states (embeddings first): the layer below
    return sum(w * losses.attention_mse(s.attention_scores[m - 1], t.attention_scores[g - 2],
                                        s.attention_mask)
               for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1))


def _attention_key_mask_only(spec, s, t, labels, match):
    def mse(a, b, mask):  # keys masked, padded query rows kept
        keep = mask.bool()[:, None, None, :].expand_as(a)
        return (a - b)[keep].float().pow(2).mean()

    return sum(w * mse(s.attention_scores[m - 1], t.attention_scores[g - 1], s.attention_mask)
               for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1))


def _kd_reversed(spec, s, t, labels, match):
    return losses.soft_target_loss(s.logits, t.logits, labels, spec.temperature, spec.alpha,
                                   "reverse_kl")


def _kd_without_tau_squared(spec, s, t, labels, match):
    full = losses.soft_target_loss(s.logits, t.logits, labels, spec.temperature, spec.alpha)
    hard = losses.hard_label_loss(s.logits, labels)
    return (full - (1 - spec.alpha) * hard) / spec.temperature**2 + (1 - spec.alpha) * hard


def _banker_rounding_map(strategy, m_layers, n_layers, explicit=None):
    return [round(m * n_layers / m_layers) for m in range(1, m_layers + 1)]


BREAKS = {
    "hidden-mask-dropped": ("hidden", _hidden_without_mask, "t4-s2-uniform-eager"),
    "hidden-wrong-teacher-layer": ("hidden", _hidden_teacher_off_by_one, "t4-s2-uniform-eager"),
    "embedding-bias-dropped": ("embedding", _embedding_without_bias, "t4-s2-uniform-eager"),
    "attention-wrong-layer": ("attention", _attention_scores_off_by_one, "t4-s2-uniform-eager"),
    "attention-query-padding-kept": ("attention", _attention_key_mask_only,
                                     "t4-s2-uniform-eager"),
    "kd-reversed": ("kd", _kd_reversed, "t4-s2-uniform-eager"),
    "kd-no-tau-squared": ("kd", _kd_without_tau_squared, "t4-s2-uniform-eager"),
}


@pytest.mark.parametrize("broken", list(BREAKS))
def test_classification_checks_have_teeth(monkeypatch, broken):
    assert _padding_is_visible()
    loss, compute, case = BREAKS[broken]
    teacher, student, specs, labels = CASES[case]
    term = REGISTRY[loss]
    monkeypatch.setitem(REGISTRY, loss, LossTerm(compute, term.reads, term.build))
    module = _cls_module(teacher, student, specs)
    with pytest.raises(AssertionError, match=f"term {loss}"):
        _check_classification(module, specs, _class_batch(labels))


def test_wrong_layer_map_is_caught(monkeypatch):
    """Python's round() is half-to-even: 5 teacher / 2 student layers gives g(1) = 2, not 3."""
    teacher, student, specs, labels = CASES["t5-s2-narrow-student"]
    monkeypatch.setattr(losses, "layer_map", _banker_rounding_map)
    module = _cls_module(teacher, student, specs)
    with pytest.raises(AssertionError, match="term hidden1"):
        _check_classification(module, specs, _class_batch(labels))


# -- seq2seq: word-level KD and label-smoothed NLL ---------------------------------------------

SRC = ["the cat sits on the mat", "a dog runs in the park", "the bird sings a song",
       "my friend reads a book", "the sun is warm today", "we walk to the river",
       "she writes a long letter", "they eat fresh bread"]
TGT = ["die katze sitzt auf der matte", "ein hund rennt im park", "der vogel singt ein lied",
       "mein freund liest ein buch", "die sonne ist heute warm", "wir gehen zum fluss",
       "sie schreibt einen langen brief", "sie essen frisches brot"]
S2S_SPECS = [KD(loss="kd", temperature=2.0, alpha=0.5), Hard(loss="hard", smoothing=0.1,
                                                               weight=0.5)]


@pytest.fixture(scope="module")
def s2s():
    tok = train_tokenizer(SRC + TGT, vocab_size=60)
    assert tok.pad_token_id == 0

    def model(seed):
        m = build_seq2seq("tiny", tok, seed=seed, d_model=32, encoder_layers=1,
                          decoder_layers=1, heads=2, ffn_dim=64)
        with torch.no_grad():  # the shared (tied) embeddings: logits of O(1), not O(0.1)
            m.get_input_embeddings().weight.mul_(10.0)
        assert m.config.decoder_start_token_id == tok.pad_token_id
        return m.eval()

    pairs = [0, 6, 4]
    src = tok([SRC[i] for i in pairs], padding=True, return_tensors="pt")
    tgt = tok([TGT[i] for i in pairs], padding=True, return_tensors="pt")
    labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
    assert (labels == -100).any() and (src["attention_mask"] == 0).any()
    batch = {"input_ids": src["input_ids"], "attention_mask": src["attention_mask"],
             "labels": labels}
    return SimpleNamespace(tok=tok, teacher=model(11), student=model(12), batch=batch)


def _shift_right(labels: torch.Tensor, start: int, pad: int) -> torch.Tensor:
    dec = torch.full_like(labels, start)
    dec[:, 1:] = labels[:, :-1]
    return dec.masked_fill(dec == -100, pad)


def _s2s_logits(model, batch, pad: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=_shift_right(batch["labels"], pad, pad)).logits.double()


def _check_seq2seq(module, batch, specs=S2S_SPECS) -> None:
    module.eval()
    with torch.no_grad():
        out = module(batch)
    labels = batch["labels"]
    keep = labels != -100  # the real target tokens
    s = _s2s_logits(module.student, batch)[keep]
    t = _s2s_logits(module.teacher, batch)[keep]
    expected = {name: spec.weight * _logit_term(spec, s, t, labels[keep])
                for name, spec in zip(_names(specs), specs, strict=True)}
    _compare(out, expected)


def test_seq2seq_word_kd_and_smoothed_nll_match_recomputation(s2s):
    module = ObjectiveModule(Seq2SeqTask(), s2s.student, [S2S_SPECS], s2s.teacher)
    _check_seq2seq(module, s2s.batch)
    # the terms are far from degenerate: distributions differ, smoothing matters
    labels = s2s.batch["labels"]
    keep = labels != -100
    s = _s2s_logits(s2s.student, s2s.batch)[keep]
    soft_only = KD(loss="kd", temperature=2.0, alpha=1.0)
    assert _logit_term(soft_only, s, _s2s_logits(s2s.teacher, s2s.batch)[keep], None) > 0.05
    assert abs(float(_nll(s, labels[keep], 0.1).mean() - _nll(s, labels[keep]).mean())) > 0.01


class _PadNoiseTeacher(nn.Module):
    """The teacher, with garbage logits wherever ``rows`` (the padded targets) is true."""

    def __init__(self, inner: nn.Module, rows: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.rows, self.config = inner, rows, inner.config

    def prepare_decoder_input_ids_from_labels(self, labels):
        return self.inner.prepare_decoder_input_ids_from_labels(labels=labels)

    def forward(self, **kwargs):
        logits = self.inner(**kwargs).logits.clone()
        g = torch.Generator().manual_seed(5)
        noise = torch.randn(logits.shape, generator=g) * 100.0
        logits[self.rows] = noise[self.rows]
        return SimpleNamespace(logits=logits)


def test_seq2seq_padding_cannot_change_the_loss(s2s):
    batch = s2s.batch
    labels = batch["labels"]
    plain = ObjectiveModule(Seq2SeqTask(), s2s.student, [S2S_SPECS], s2s.teacher).eval()
    with torch.no_grad():
        ref = plain(batch)
    # 1. the teacher's logits at padded target positions are garbage: nothing changes
    noisy_teacher = _PadNoiseTeacher(s2s.teacher, labels == -100)
    noisy = ObjectiveModule(Seq2SeqTask(), s2s.student, [S2S_SPECS], noisy_teacher).eval()
    with torch.no_grad():
        got = noisy(batch)
        # (the garbage is real: with every position counted, kd would move)
        t_plain = s2s.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              decoder_input_ids=_shift_right(labels, 0, 0)).logits
        t_noisy = noisy_teacher(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"],
                                decoder_input_ids=_shift_right(labels, 0, 0)).logits
    s_logits = _s2s_logits(s2s.student, batch).float()
    assert float((losses.divergence(s_logits, t_noisy, "kd", 2.0)
                  - losses.divergence(s_logits, t_plain, "kd", 2.0)).abs()) > 1.0
    for name in ref:
        assert float(got[name]) == pytest.approx(float(ref[name]), rel=1e-6), name
    # 2. extra padding on both sides (source pad tokens masked out, targets -100)
    extra = 3
    padded = {
        "input_ids": torch.cat([batch["input_ids"], torch.zeros(3, extra, dtype=torch.long)], 1),
        "attention_mask": torch.cat([batch["attention_mask"],
                                     torch.zeros(3, extra, dtype=torch.long)], 1),
        "labels": torch.cat([labels, torch.full((3, extra), -100)], 1),
    }
    with torch.no_grad():
        more = plain(padded)
    for name in ref:
        assert float(more[name]) == pytest.approx(float(ref[name]), rel=REL), name
    _check_seq2seq(plain, padded)


class _UnshiftedSeq2SeqTask(Seq2SeqTask):
    """Broken: feeds the labels themselves to the decoder (no right shift)."""

    def outputs(self, model, batch, reads):
        labels = batch["labels"]
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=labels.masked_fill(labels == -100, 0)).logits
        return losses.TaskOutputs(logits=logits, mask=labels != -100)


def _kd_over_every_position(spec, s, t, labels, match):
    return (spec.alpha * losses.divergence(s.logits, t.logits, "kd", spec.temperature)
            + (1 - spec.alpha) * losses.hard_label_loss(s.logits, labels))


def _hard_smoothing_summed(spec, s, t, labels, match):
    keep = labels != -100
    log_p = torch.log_softmax(s.logits[keep].float(), -1)
    nll = -log_p.gather(-1, labels[keep].unsqueeze(-1)).squeeze(-1)
    return ((1 - spec.smoothing) * nll - spec.smoothing * log_p.sum(-1)).mean()


def test_seq2seq_checks_have_teeth(s2s, monkeypatch):
    module = ObjectiveModule(_UnshiftedSeq2SeqTask(), s2s.student, [S2S_SPECS], s2s.teacher)
    with pytest.raises(AssertionError, match="term kd"):
        _check_seq2seq(module, s2s.batch)
    for loss, compute in (("kd", _kd_over_every_position), ("hard", _hard_smoothing_summed)):
        with monkeypatch.context() as patch:
            patch.setitem(REGISTRY, loss, LossTerm(compute, REGISTRY[loss].reads))
            module = ObjectiveModule(Seq2SeqTask(), s2s.student, [S2S_SPECS], s2s.teacher)
            with pytest.raises(AssertionError, match=f"term {loss}"):
                _check_seq2seq(module, s2s.batch)


# -- errors -----------------------------------------------------------------------------------

def test_error_loss_the_task_cannot_compute(s2s):
    with pytest.raises(UserError, match=r"seq2seq task cannot compute the 'hidden' loss"):
        ObjectiveModule(Seq2SeqTask(), s2s.student, [[Hidden(loss="hidden")]], s2s.teacher)
    with pytest.raises(UserError, match=r"seq2seq.*'attention'"):
        ObjectiveModule(Seq2SeqTask(), s2s.student,
                        [[KD(loss="kd"), Attention(loss="attention")]], s2s.teacher)


def test_error_attention_head_mismatch_needs_average_heads():
    teacher = _bert(2, 48, 4, "eager", seed=1)
    student = _bert(2, 48, 2, "eager", seed=2)
    with pytest.raises(UserError, match=r"2 heads and the teacher 4.*average_heads"):
        ObjectiveModule(ClassificationTask(), student, [[Attention(loss="attention")]], teacher)


def test_error_teacher_loss_without_teacher(s2s):
    student = _bert(2, 32, 2, "eager", seed=2)
    with pytest.raises(UserError, match=r"'kd' loss needs a teacher"):
        ObjectiveModule(ClassificationTask(), student, [[Hard(loss="hard"), KD(loss="kd")]])
    with pytest.raises(UserError, match=r"'hidden' loss needs a teacher"):
        ObjectiveModule(ClassificationTask(), student, [[Hidden(loss="hidden")]])
    with pytest.raises(UserError, match=r"'kd' loss needs a teacher"):
        ObjectiveModule(Seq2SeqTask(), s2s.student, [S2S_SPECS])
