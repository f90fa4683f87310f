import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textdistill.errors import UserError
from textdistill.losses import (
    Projection,
    attention_mse,
    divergence,
    hard_label_loss,
    hidden_mse,
    soft_cross_entropy,
    soft_target_loss,
)


def soft_target_kd(s, t, temperature=1.0, mask=None):
    return divergence(s, t, "kd", temperature, mask)


def kd_loss(s, t, labels, temperature, alpha, mask=None):
    return soft_target_loss(s, t, labels, temperature, alpha, "kd", mask)


def _np_softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def _manual_kd(s, t, tau, keep=None):
    """Per-row KL(p_t || p_s) * tau^2 with explicit loops, float64."""
    s = s.detach().double().numpy().reshape(-1, s.shape[-1])
    t = t.detach().double().numpy().reshape(-1, t.shape[-1])
    keep = np.ones(len(s), bool) if keep is None else keep.numpy().reshape(-1).astype(bool)
    vals = []
    for i in range(len(s)):
        if not keep[i]:
            continue
        ps, pt = _np_softmax(s[i] / tau), _np_softmax(t[i] / tau)
        vals.append(sum(pt[c] * (math.log(pt[c]) - math.log(ps[c])) for c in range(len(pt))))
    return float(np.mean(vals)) * tau * tau


def _manual_soft_ce(s, t, tau, keep=None):
    s = s.detach().double().numpy().reshape(-1, s.shape[-1])
    t = t.detach().double().numpy().reshape(-1, t.shape[-1])
    keep = np.ones(len(s), bool) if keep is None else keep.numpy().reshape(-1).astype(bool)
    vals = []
    for i in np.nonzero(keep)[0]:
        ps, pt = _np_softmax(s[i] / tau), _np_softmax(t[i] / tau)
        vals.append(-float(np.sum(pt * np.log(ps))))
    return float(np.mean(vals))


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 7, generator=g) * 2, torch.randn(3, 5, 7, generator=g) * 2


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_soft_target_kd_matches_manual(logits, tau):
    s, t = logits
    got = soft_target_kd(s, t, temperature=tau).item()
    assert got == pytest.approx(_manual_kd(s, t, tau), rel=1e-5)


def test_soft_target_kd_temperature_changes_value(logits):
    s, t = logits
    assert soft_target_kd(s, t, 1.0).item() != pytest.approx(soft_target_kd(s, t, 4.0).item())


def test_soft_target_kd_matches_torch_batchmean(logits):
    s, t = logits
    tau = 2.0
    ref = (
        F.kl_div(
            F.log_softmax(s.reshape(-1, 7) / tau, -1),
            F.softmax(t.reshape(-1, 7) / tau, -1),
            reduction="batchmean",
        )
        * tau**2
    )
    assert soft_target_kd(s, t, tau).item() == pytest.approx(ref.item(), rel=1e-5)


def test_soft_target_kd_mask(logits):
    s, t = logits
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    got = soft_target_kd(s, t, 2.0, mask=mask)
    assert got.item() == pytest.approx(_manual_kd(s, t, 2.0, mask), rel=1e-5)
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = torch.randn(int((~mask).sum()), 7) * 10
    t2[~mask] = float("nan")
    assert soft_target_kd(s2, t2, 2.0, mask=mask).item() == pytest.approx(got.item(), rel=1e-6)
    # 0/1 integer masks work too
    assert soft_target_kd(s, t, 2.0, mask=mask.long()).item() == pytest.approx(got.item())


def test_soft_target_kd_zero_when_equal(logits):
    s, _ = logits
    assert soft_target_kd(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_target_kd_teacher_detached_and_tau_squared_gradients(logits):
    s, t = logits
    t = t.clone().requires_grad_(True)
    s1 = s.clone().requires_grad_(True)
    soft_target_kd(s1, t, 1.0).backward()
    assert t.grad is None
    # gradient wrt logits scales as 1/tau; tau^2 factor keeps it ~ (p_s - p_t) in magnitude:
    # for large tau, grad -> (s - t) / C / rows (centred logits), independent of tau
    s_c, t_c = s - s.mean(-1, keepdim=True), t.detach() - t.detach().mean(-1, keepdim=True)
    grads = []
    for tau in (20.0, 40.0):
        x = s_c.clone().requires_grad_(True)
        soft_target_kd(x, t_c, tau).backward()
        grads.append(x.grad.norm().item())
    assert grads[0] == pytest.approx(grads[1], rel=0.05)


def test_soft_target_kd_all_masked_is_zero_with_grad(logits):
    s, t = logits
    s = s.clone().requires_grad_(True)
    out = soft_target_kd(s, t, mask=torch.zeros(3, 5, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert s.grad is not None and torch.all(s.grad == 0)


def test_soft_target_kd_errors(logits):
    s, t = logits
    with pytest.raises(UserError, match="temperature"):
        soft_target_kd(s, t, temperature=0.0)
    with pytest.raises(UserError, match="shape"):
        soft_target_kd(s, t[..., :6])
    with pytest.raises(UserError, match="mask"):
        soft_target_kd(s, t, mask=torch.ones(3, 4, dtype=torch.bool))


def test_hard_label_loss_vs_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, generator=g)
    y = torch.tensor([[1, 5, -100, 0], [-100, 2, 3, -100]])
    vals = []
    for b in range(2):
        for i in range(4):
            if y[b, i] != -100:
                row = x[b, i].double()
                vals.append(-(row[y[b, i]] - torch.logsumexp(row, 0)).item())
    assert hard_label_loss(x, y).item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)
    y_all = torch.full((2, 4), -100)
    assert hard_label_loss(x, y_all).item() == 0.0


def test_kd_loss_mixing(logits):
    s, t = logits
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 7, (3, 5), generator=g)
    y[1, 2] = -100
    keep = y != -100
    soft = _manual_kd(s, t, 3.0, keep)
    hard = F.cross_entropy(s[keep], y[keep]).item()
    assert kd_loss(s, t, y, 3.0, 1.0).item() == pytest.approx(soft, rel=1e-5)
    assert kd_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(hard, rel=1e-5)
    mixed = kd_loss(s, t, y, 3.0, 0.3).item()
    assert mixed == pytest.approx(0.3 * soft + 0.7 * hard, rel=1e-5)


def test_kd_loss_mask_applies_to_both_terms(logits):
    s, t = logits
    y = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    soft = _manual_kd(s, t, 2.0, mask)
    hard = F.cross_entropy(s[mask], y[mask]).item()
    got = kd_loss(s, t, y, 2.0, 0.5, mask=mask).item()
    assert got == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-5)


def test_kd_loss_bad_alpha_and_labels(logits):
    s, t = logits
    y = torch.zeros(3, 5, dtype=torch.long)
    for alpha in (-0.1, 1.5):
        with pytest.raises(UserError, match="alpha"):
            kd_loss(s, t, y, 1.0, alpha)
    with pytest.raises(UserError, match="labels"):
        kd_loss(s, t, None, 1.0, 0.5)
    assert kd_loss(s, t, None, 2.0, 1.0).item() == pytest.approx(_manual_kd(s, t, 2.0), rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_soft_cross_entropy_vs_manual(logits, tau):
    s, t = logits
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(4)) > 0.3
    assert soft_cross_entropy(s, t, tau).item() == pytest.approx(_manual_soft_ce(s, t, tau), 1e-5)
    got = soft_cross_entropy(s, t, tau, mask=mask).item()
    assert got == pytest.approx(_manual_soft_ce(s, t, tau, mask), rel=1e-5)


def test_hidden_mse_masked_vs_manual():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    total, n = 0.0, 0
    for b in range(2):
        for i in range(6):
            if mask[b, i]:
                for d in range(8):
                    total += (s[b, i, d].item() - t[b, i, d].item()) ** 2
                    n += 1
    assert hidden_mse(s, t, mask).item() == pytest.approx(total / n, rel=1e-5)
    assert hidden_mse(s, t).item() == pytest.approx(F.mse_loss(s, t).item(), rel=1e-6)
    s2 = s.clone()
    s2[mask == 0] = 100.0
    assert hidden_mse(s2, t, mask).item() == pytest.approx(total / n, rel=1e-5)
    with pytest.raises(UserError, match="project"):
        hidden_mse(s, t[..., :4])


def _manual_attention_mse(s, t, mask):
    b_, h_, l_, _ = s.shape
    total, n = 0.0, 0
    for b in range(b_):
        for h in range(h_):
            for i in range(l_):
                for j in range(l_):
                    if mask[b, i] and mask[b, j]:
                        total += (s[b, h, i, j].item() - t[b, h, i, j].item()) ** 2
                        n += 1
    return total / n


def test_attention_mse_vs_loop_and_padding_excluded():
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ref = _manual_attention_mse(s, t, mask)
    assert attention_mse(s, t, mask).item() == pytest.approx(ref, rel=1e-5)
    s2, t2 = s.clone(), t.clone()
    s2[1, :, 3:, :] = 50.0  # padded queries
    s2[1, :, :, 3:] = -1e4  # padded keys
    t2[1, :, :, 4] = float("-inf")
    assert attention_mse(s2, t2, mask).item() == pytest.approx(ref, rel=1e-5)
    assert attention_mse(s, t).item() == pytest.approx(F.mse_loss(s, t).item(), rel=1e-6)


def test_attention_mse_grad_only_on_kept_entries():
    s = torch.randn(1, 2, 4, 4, requires_grad=True)
    t = torch.randn(1, 2, 4, 4)
    t[0, :, :, 3] = float("-inf")  # whatever padding holds stays out of the gradient
    mask = torch.tensor([[1, 1, 1, 0]])
    attention_mse(s, t, mask).backward()
    assert torch.all(s.grad[0, :, 3, :] == 0) and torch.all(s.grad[0, :, :, 3] == 0)
    assert torch.all(s.grad[0, :, :3, :3] != 0)


def test_attention_mse_head_mismatch():
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 12, 5, 5)
    with pytest.raises(UserError) as info:
        attention_mse(s, t)
    assert "4" in str(info.value) and "12" in str(info.value) and "average" in str(info.value)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    got = attention_mse(s, t, mask, average_heads=True).item()
    ref = _manual_attention_mse(s.mean(1, keepdim=True), t.mean(1, keepdim=True), mask)
    assert got == pytest.approx(ref, rel=1e-5)


def test_projection_parameter_counts():
    shared = Projection(32, 64, num_layers=4, shared=True)
    per_layer = Projection(32, 64, num_layers=4, shared=False)
    one = 32 * 64 + 64
    assert sum(p.numel() for p in shared.parameters()) == one
    assert sum(p.numel() for p in per_layer.parameters()) == 4 * one
    x = torch.randn(2, 3, 32)
    assert per_layer(x, 3).shape == (2, 3, 64)
    assert torch.equal(shared(x, 0), shared(x, 3))
    assert not torch.equal(per_layer(x, 0), per_layer(x, 3))
    with pytest.raises(IndexError):
        per_layer(x, 4)


def test_projection_same_width_is_linear_not_identity():
    p = Projection(16, 16, num_layers=1, shared=True)
    assert sum(q.numel() for q in p.parameters()) == 16 * 16 + 16
    x = torch.randn(2, 16)
    assert not torch.allclose(p(x, 0), x)
    with pytest.raises(UserError, match="width"):
        p(torch.randn(2, 8), 0)
