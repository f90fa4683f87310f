"""The divergence family and the hard-label loss, each against an independent float64 loop over
rows (not against the code under test), with masks, temperatures and label mixing."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textdistill.config import LOSS_SPECS
from textdistill.errors import UserError
from textdistill.losses import DIVERGENCES, REGISTRY, divergence, hard_label_loss, soft_target_loss


def _softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def _kl(p, q):
    return float(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True)))


def _row_value(kind, ps, pt, **kw):
    """D(teacher, student) for one row of probabilities, written from the formulas."""
    if kind == "kd":
        return _kl(pt, ps)
    if kind == "reverse_kl":
        return _kl(ps, pt)
    if kind == "jsd":
        b = kw["beta"]
        if b == 0:
            return _kl(pt, ps)
        if b == 1:
            return _kl(ps, pt)
        m = b * pt + (1 - b) * ps
        return b * _kl(pt, m) + (1 - b) * _kl(ps, m)
    if kind == "skew_kl":
        lam = kw["skew"]
        if kw["reverse"]:
            return _kl(ps, lam * ps + (1 - lam) * pt)
        return _kl(pt, lam * pt + (1 - lam) * ps)
    if kind == "tvd":
        return 0.5 * float(np.abs(pt - ps).sum())
    raise AssertionError(kind)


def _manual(kind, s, t, tau, keep=None, **kw):
    """tau² · mean over kept rows of D, float64, row by row."""
    s = s.detach().double().numpy().reshape(-1, s.shape[-1])
    t = t.detach().double().numpy().reshape(-1, t.shape[-1])
    keep = np.ones(len(s), bool) if keep is None else keep.numpy().reshape(-1).astype(bool)
    vals = [_row_value(kind, _softmax(s[i] / tau), _softmax(t[i] / tau), **kw)
            for i in np.nonzero(keep)[0]]
    return float(np.mean(vals)) * tau * tau


CASES = [
    ("kd", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("skew_kl", {"skew": 0.1, "reverse": False}),
    ("skew_kl", {"skew": 0.3, "reverse": True}),
    ("tvd", {}),
]


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 7, generator=g) * 2, torch.randn(3, 5, 7, generator=g) * 2


@pytest.mark.parametrize("tau", [1.0, 3.0])
@pytest.mark.parametrize(("kind", "kw"), CASES)
def test_divergence_matches_formula_with_mask(logits, kind, kw, tau):
    s, t = logits
    assert divergence(s, t, kind, tau, **kw).item() == pytest.approx(
        _manual(kind, s, t, tau, **kw), rel=1e-5)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) > 0.4
    got = divergence(s, t, kind, tau, mask, **kw)
    assert got.item() == pytest.approx(_manual(kind, s, t, tau, mask, **kw), rel=1e-5)
    # masked-out rows are never read: garbage there changes nothing
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = 1e4, float("nan")
    assert divergence(s2, t2, kind, tau, mask, **kw).item() == pytest.approx(got.item(), rel=1e-6)


@pytest.mark.parametrize(("kind", "kw"), CASES)
def test_divergence_is_zero_for_equal_and_positive_otherwise(logits, kind, kw):
    s, t = logits
    assert divergence(s, s.clone(), kind, 2.0, **kw).item() == pytest.approx(0.0, abs=1e-6)
    assert divergence(s, t, kind, 2.0, **kw).item() > 1e-3


def test_divergences_differ_from_each_other(logits):
    s, t = logits
    values = [divergence(s, t, kind, 1.0, **kw).item() for kind, kw in CASES[:4] + CASES[6:]]
    assert len({round(v, 6) for v in values}) == len(values)


def test_jsd_tends_to_forward_and_reverse_kl(logits):
    s, t = logits
    fwd = divergence(s, t, "kd", 1.0).item()
    rev = divergence(s, t, "reverse_kl", 1.0).item()
    assert divergence(s, t, "jsd", 1.0, beta=1e-4).item() / 1e-4 == pytest.approx(fwd, rel=1e-2)
    assert divergence(s, t, "jsd", 1.0, beta=1 - 1e-4).item() / 1e-4 == pytest.approx(rev,
                                                                                      rel=1e-2)


def test_skew_kl_without_skew_is_kl(logits):
    s, t = logits
    assert divergence(s, t, "skew_kl", 2.0, skew=0.0, reverse=False).item() == pytest.approx(
        divergence(s, t, "kd", 2.0).item(), rel=1e-6)
    assert divergence(s, t, "skew_kl", 2.0, skew=0.0, reverse=True).item() == pytest.approx(
        divergence(s, t, "reverse_kl", 2.0).item(), rel=1e-6)


def test_teacher_gets_no_gradient(logits):
    s, t = logits
    for kind, kw in CASES:
        x, y = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
        divergence(x, y, kind, 2.0, **kw).backward()
        assert y.grad is None and x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("kind", "kw"), CASES)
def test_mixing_with_labels_and_token_mask(logits, kind, kw):
    s, t = logits
    y = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    y[1, 2] = -100
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 4] = False
    keep = (y != -100) & mask
    soft = _manual(kind, s, t, 2.0, keep, **kw)
    hard = F.cross_entropy(s[keep].double(), y[keep]).item()
    got = soft_target_loss(s, t, y, 2.0, 0.3, kind, mask, **kw).item()
    assert got == pytest.approx(0.3 * soft + 0.7 * hard, rel=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_temperature_is_a_clear_error(logits, bad):
    s, t = logits
    with pytest.raises(UserError, match="temperature must be finite and > 0"):
        divergence(s, t, "reverse_kl", bad)


def test_unknown_divergence(logits):
    with pytest.raises(UserError, match="unknown divergence 'kl2'"):
        divergence(*logits, "kl2")


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_hard_label_loss_with_smoothing_vs_loop(eps):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, generator=g) * 3
    y = torch.tensor([[1, 5, -100, 0], [-100, 2, 3, -100]])
    vals = []
    for b in range(2):
        for i in range(4):
            if y[b, i] == -100:
                continue
            logp = x[b, i].double() - torch.logsumexp(x[b, i].double(), 0)
            target = torch.full((6,), eps / 6, dtype=torch.float64)
            target[y[b, i]] += 1 - eps
            vals.append(-(target * logp).sum().item())
    assert hard_label_loss(x, y, eps).item() == pytest.approx(sum(vals) / len(vals), rel=1e-5)


def test_hard_label_loss_with_smoothing_matches_torch_and_other_ignore_index():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 11, generator=g)
    y = torch.randint(0, 11, (3, 5), generator=g)
    y[0, 3:] = -100
    for eps in (0.0, 0.1, 0.3):
        ref = F.cross_entropy(x.reshape(-1, 11), y.reshape(-1), label_smoothing=eps)
        assert hard_label_loss(x, y, eps).item() == pytest.approx(ref.item(), rel=1e-5)
    y7 = y.masked_fill(y == -100, 7)
    ref = F.cross_entropy(x.reshape(-1, 11), y7.reshape(-1), ignore_index=7,
                          label_smoothing=0.1)
    assert hard_label_loss(x, y7, 0.1, ignore_index=7).item() == pytest.approx(ref.item(),
                                                                               rel=1e-5)


def test_hard_label_loss_bad_labels():
    x = torch.randn(2, 4, 6)
    with pytest.raises(UserError, match=r"labels have shape \(2, 3\)"):
        hard_label_loss(x, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(UserError, match=r"labels have shape \(4,\)"):
        hard_label_loss(x[:, 0], torch.zeros(4, dtype=torch.long))  # would broadcast silently
    with pytest.raises(UserError, match="label id 6 is out of range for 6 classes"):
        hard_label_loss(x, torch.full((2, 4), 6))
    with pytest.raises(UserError, match="label id -3 is out of range"):
        hard_label_loss(x, torch.full((2, 4), -3))
    with pytest.raises(UserError, match="smoothing"):
        hard_label_loss(x, torch.zeros(2, 4, dtype=torch.long), 1.0)


def test_registry_and_configs_name_the_same_losses():
    assert set(REGISTRY) == set(LOSS_SPECS)
    assert set(DIVERGENCES) <= set(REGISTRY)
    soft = {name for name, spec in LOSS_SPECS.items() if "alpha" in spec.model_fields}
    assert soft == set(DIVERGENCES)
