"""Distillation losses as pure functions on tensors, plus the width projection module.

Masks are optional bool (or 0/1) tensors over the leading dims: masked-out positions
contribute nothing and means are taken over kept positions only. Teacher tensors are always
detached. When nothing is kept, a zero that is still attached to the student's graph is
returned, so ``loss.backward()`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textdistill.errors import UserError
from textdistill.mapping import layer_map, layer_weights

__all__ = [
    "REGISTRY",
    "Projection",
    "TaskOutputs",
    "attention_mse",
    "divergence",
    "hard_label_loss",
    "hidden_mse",
    "soft_cross_entropy",
    "soft_target_loss",
]


def _check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be finite and > 0, got {temperature!r}; 1.0 disables "
                        "softening")


def _check_same_shape(student: Tensor, teacher: Tensor, what: str, hint: str) -> None:
    if student.shape != teacher.shape:
        raise UserError(
            f"student {what} have shape {tuple(student.shape)} but teacher {what} have shape "
            f"{tuple(teacher.shape)}; {hint}"
        )


def _empty_zero(t: Tensor) -> Tensor:
    """A zero scalar connected to ``t``'s graph (sum over an empty slice, never NaN)."""
    return t.reshape(-1)[:0].sum()


def _masked_mean_square(student: Tensor, teacher: Tensor, keep: Tensor, count: Tensor) -> Tensor:
    """Sum of squared fp32 differences where ``keep`` (broadcast) holds, over ``count``; zero
    (connected to the graph) when nothing is kept. Selecting by ``torch.where`` instead of by
    indexing spares the gather and the scatter of its gradient."""
    diff = torch.where(keep, student.float() - teacher.detach().float(), 0.0)
    return (diff * diff).sum() / count.clamp(min=1)


def _kept_rows(
    student: Tensor, teacher: Tensor, mask: Tensor | None, what: str
) -> tuple[Tensor, Tensor]:
    """Flatten (..., C) tensors to (K, C), keeping the rows where ``mask`` is true."""
    c = student.shape[-1]
    s = student.reshape(-1, c)
    t = teacher.detach().reshape(-1, c)
    if mask is None:
        return s, t
    if mask.shape != student.shape[:-1]:
        raise UserError(
            f"{what} mask has shape {tuple(mask.shape)} but the logits have leading shape "
            f"{tuple(student.shape[:-1])}; pass one mask entry per row (e.g. the attention mask)"
        )
    keep = mask.reshape(-1).to(torch.bool)
    return s[keep], t[keep]


def _tempered_log_probs(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None,
    what: str,
) -> tuple[Tensor, Tensor]:
    """Checked, masked log-softmax(logits / tau) of student and teacher, as (rows, C), fp32."""
    _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits, "logits",
                      "student and teacher must share the label set / vocabulary")
    s, t = _kept_rows(student_logits, teacher_logits, mask, what)
    return (F.log_softmax(s.float() / temperature, dim=-1),
            F.log_softmax(t.float() / temperature, dim=-1))


# -- divergences between the teacher's and the student's distributions, one row each ---------

def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) per row; terms with p = 0 count 0."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(w·a + (1 − w)·b) from log a and log b, computed stably."""
    return torch.logsumexp(torch.stack([log_a + math.log(weight_a),
                                        log_b + math.log1p(-weight_a)]), dim=0)


def _jsd(log_s: Tensor, log_t: Tensor, beta: float) -> Tensor:
    if beta == 0.0:
        return _kl(log_t, log_s)
    if beta == 1.0:
        return _kl(log_s, log_t)
    log_m = _log_mix(log_t, log_s, beta)
    return beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)


def _skew_kl(log_s: Tensor, log_t: Tensor, skew: float, reverse: bool) -> Tensor:
    if skew == 0.0:
        return _kl(log_s, log_t) if reverse else _kl(log_t, log_s)
    if reverse:
        return _kl(log_s, _log_mix(log_s, log_t, skew))
    return _kl(log_t, _log_mix(log_t, log_s, skew))


DIVERGENCES: dict[str, Callable[..., Tensor]] = {
    "kd": lambda log_s, log_t: _kl(log_t, log_s),
    "reverse_kl": lambda log_s, log_t: _kl(log_s, log_t),
    "jsd": _jsd,
    "skew_kl": _skew_kl,
    "tvd": lambda log_s, log_t: 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1),
}
"""Per-row divergence D(teacher, student) from log-probabilities (rows, C); extra keyword
parameters (``beta``, ``skew``, ``reverse``) come from the loss's config."""


def topk_buckets(student_logits: Tensor, teacher_top: Tensor, top_indices: Tensor
                 ) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities over k + 1 buckets — the teacher's k most
    probable classes (``top_indices``, with its log-probabilities ``teacher_top``) and the rest
    of the vocabulary — for a divergence against cached top-k teacher outputs. Grouping classes
    can only lower a divergence, so the top-k loss bounds the full one from below."""
    log_s = F.log_softmax(student_logits.float(), dim=-1)

    def with_rest(top: Tensor) -> Tensor:
        mass = top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6)
        return torch.cat([top, torch.log1p(-mass)], dim=-1)

    return (with_rest(log_s.gather(-1, top_indices.long())),
            with_rest(teacher_top.float()))


def divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: str = "kd",
    temperature: float = 1.0,
    mask: Tensor | None = None,
    top_indices: Tensor | None = None,
    **params: Any,
) -> Tensor:
    """τ² · mean over kept rows of D(softmax(t/τ), softmax(s/τ)), D one of :data:`DIVERGENCES`.

    Logits are (..., C); ``mask`` is (...). Computed in fp32. With ``top_indices`` (..., k),
    ``teacher_logits`` are the teacher's top-k log-probabilities at those classes (cached
    outputs) and D is taken over :func:`topk_buckets` (τ must be 1).
    """
    if kind not in DIVERGENCES:
        raise UserError(f"unknown divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")
    if top_indices is not None:
        if temperature != 1.0:
            raise UserError("top-k teacher outputs give no tempered distribution: use "
                            "temperature 1, or teacher_cache: false")
        student_logits, teacher_logits = topk_buckets(student_logits, teacher_logits,
                                                      top_indices)
    log_s, log_t = _tempered_log_probs(student_logits, teacher_logits, temperature, mask, kind)
    if log_s.shape[0] == 0:
        return _empty_zero(student_logits)
    return DIVERGENCES[kind](log_s, log_t, **params).mean() * temperature**2


def soft_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """TinyBERT prediction-layer loss: -sum softmax(t/tau) * log_softmax(s/tau), row mean.

    No tau^2 factor. Logits are (..., C); ``mask`` is (...).
    """
    log_p_s, log_p_t = _tempered_log_probs(student_logits, teacher_logits, temperature, mask,
                                           "soft cross-entropy")
    if log_p_s.shape[0] == 0:
        return _empty_zero(student_logits)
    return -(log_p_t.exp() * log_p_s).sum(-1).mean()


def hard_label_loss(
    logits: Tensor, labels: Tensor, smoothing: float = 0.0, ignore_index: int = -100
) -> Tensor:
    """Cross-entropy against ``(1 − ε)·one-hot + ε·uniform`` (ε = ``smoothing``), mean over the
    positions whose label is not ``ignore_index``; logits (..., C), labels (...)."""
    if labels.shape != logits.shape[:-1]:
        raise UserError(
            f"labels have shape {tuple(labels.shape)} but the logits have leading shape "
            f"{tuple(logits.shape[:-1])}; give one label per prediction"
        )
    if not 0.0 <= smoothing < 1.0:
        raise UserError(f"label smoothing must be in [0, 1), got {smoothing!r}")
    classes = logits.shape[-1]
    flat_labels = labels.reshape(-1).long()
    keep = flat_labels != ignore_index
    count = keep.sum()
    if int(count) == 0:
        return _empty_zero(logits)
    bad = keep & ((flat_labels < 0) | (flat_labels >= classes))
    if bool(bad.any()):
        raise UserError(f"label id {int(flat_labels[bad][0])} is out of range for {classes} "
                        "classes; labels must be 0..C-1 (or -100 to ignore a position)")
    total = F.cross_entropy(logits.reshape(-1, classes).float(), flat_labels,
                            ignore_index=ignore_index, reduction="sum", label_smoothing=smoothing)
    return total / count


def soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    temperature: float,
    alpha: float,
    kind: str = "kd",
    mask: Tensor | None = None,
    top_indices: Tensor | None = None,
    **params: Any,
) -> Tensor:
    """``alpha · divergence(kind) + (1 − alpha) · hard_label_loss`` (Hinton's KD for ``kd``);
    ``top_indices``: the teacher's logits are cached top-k log-probabilities (see
    :func:`divergence`).

    Positions with label -100 and, if given, positions where ``mask`` is false are ignored by
    both terms. ``labels`` may be None only when ``alpha == 1`` (soft targets only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1], got {alpha!r}; 1 = soft targets only")
    ignore = -100
    if labels is None:
        if alpha != 1.0:
            raise UserError(
                f"alpha is {alpha} but no labels were given; set alpha to 1 or provide labels"
            )
        return divergence(student_logits, teacher_logits, kind, temperature, mask, top_indices,
                          **params)
    keep = labels != ignore
    if mask is not None:
        if mask.shape != labels.shape:
            raise UserError(
                f"mask has shape {tuple(mask.shape)} but labels have shape "
                f"{tuple(labels.shape)}; they must match"
            )
        keep = keep & mask.to(torch.bool)
    total = _empty_zero(student_logits)
    if alpha > 0.0:
        total = total + alpha * divergence(student_logits, teacher_logits, kind, temperature,
                                           keep, top_indices, **params)
    if alpha < 1.0:
        total = total + (1.0 - alpha) * hard_label_loss(
            student_logits, labels.masked_fill(~keep, ignore), ignore_index=ignore)
    return total


def hidden_mse(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None
) -> Tensor:
    """MSE between (B, L, D) states, averaged over kept tokens and D; ``mask`` is (B, L).

    The student must already be projected to the teacher width (see :class:`Projection`).
    """
    _check_same_shape(
        student_hidden,
        teacher_hidden,
        "hidden states",
        "project the student to the teacher width and use the same tokenizer",
    )
    if mask is None:
        return F.mse_loss(student_hidden.float(), teacher_hidden.detach().float())
    if mask.shape != student_hidden.shape[:-1]:
        raise UserError(
            f"hidden-state mask has shape {tuple(mask.shape)} but the states have leading shape "
            f"{tuple(student_hidden.shape[:-1])}; pass the attention mask of the batch"
        )
    keep = mask.to(torch.bool).unsqueeze(-1)
    return _masked_mean_square(student_hidden, teacher_hidden, keep,
                               keep.sum() * student_hidden.shape[-1])


def attention_mse(
    student_scores: Tensor,
    teacher_scores: Tensor,
    attention_mask: Tensor | None = None,
    average_heads: bool = False,
) -> Tensor:
    """TinyBERT attention loss: MSE between pre-softmax scores (B, H, L, L).

    Entries whose query or key position is padding (``attention_mask`` (B, L) == 0) are
    excluded; the mean is over kept (query, key) entries and heads. If head counts differ,
    ``average_heads=True`` averages each side over its heads first.
    """
    if student_scores.dim() != 4 or teacher_scores.dim() != 4:
        raise UserError(
            "attention scores must have shape (batch, heads, length, length), got "
            f"{tuple(student_scores.shape)} and {tuple(teacher_scores.shape)}"
        )
    teacher_scores = teacher_scores.detach()
    hs, ht = student_scores.shape[1], teacher_scores.shape[1]
    if average_heads:
        student_scores = student_scores.mean(dim=1, keepdim=True)
        teacher_scores = teacher_scores.mean(dim=1, keepdim=True)
    elif hs != ht:
        raise UserError(
            f"student has {hs} attention heads but teacher has {ht}; attention distillation "
            "compares heads one-to-one, so enable head averaging (average_heads) or match heads"
        )
    _check_same_shape(
        student_scores, teacher_scores, "attention scores", "use the same tokenizer and batch"
    )
    s, t = student_scores.float(), teacher_scores.float()
    if attention_mask is None:
        return (s - t).pow(2).mean()
    b, h, length, _ = s.shape
    if attention_mask.shape != (b, length):
        raise UserError(
            f"attention mask has shape {tuple(attention_mask.shape)} but the scores need "
            f"({b}, {length}); pass the tokenizer's attention_mask for this batch"
        )
    m = attention_mask.to(torch.bool)
    pair = (m[:, :, None] & m[:, None, :]).unsqueeze(1)  # (B, 1, L, L): query and key kept
    return _masked_mean_square(s, t, pair, pair.sum() * h)


def log_relation(a: Tensor, b: Tensor, heads: int, attention_mask: Tensor | None = None
                 ) -> Tensor:
    """log softmax(A_r B_r^T / sqrt(d_r)) of (B, L, W) states split into ``heads`` relation
    heads of width d_r = W / heads: (B, heads, L, L), padded keys (``attention_mask`` == 0)
    given probability 0."""
    batch, length, width = a.shape
    if width % heads:
        raise UserError(f"{heads} relation heads do not divide the attention width {width}: "
                        "choose relation_heads that divides both models' widths")
    d = width // heads
    a_r = a.float().view(batch, length, heads, d).transpose(1, 2)
    b_r = b.float().view(batch, length, heads, d).transpose(1, 2)
    scores = torch.matmul(a_r, b_r.transpose(-1, -2)) / math.sqrt(d)
    if attention_mask is not None:
        keys = attention_mask.to(torch.bool)[:, None, None, :]
        scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(log_teacher: Tensor, log_student: Tensor,
                attention_mask: Tensor | None = None) -> Tensor:
    """KL(teacher || student) of the (B, R, L, L) row distributions, averaged over the real
    query rows and the R heads (padded keys carry probability 0 on both sides)."""
    _check_same_shape(log_student, log_teacher, "relations",
                      "use the same tokenizer and batch (and relation heads)")
    log_t = log_teacher.detach()
    terms = log_t.exp() * (log_t - log_student)
    if attention_mask is None:
        return terms.sum(-1).mean()
    keep = attention_mask.to(torch.bool)
    terms = terms.masked_fill(~keep[:, None, None, :], 0.0)
    rows = terms.sum(-1).masked_fill(~keep[:, None, :], 0.0)  # (B, R, L)
    return rows.sum() / (keep.sum() * rows.shape[1]).clamp(min=1)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, d) -> (B, L, H * d), the heads side by side as the projection gave them."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


class Projection(nn.Module):
    """Learned linear maps from student width to teacher width (TinyBERT's W_h / W_e).

    ``shared=True`` uses one Linear for every layer; otherwise one Linear per layer. A Linear
    is used even when the widths are equal. Weights start as N(0, 0.02), biases at zero.
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_layers: int, shared: bool) -> None:
        super().__init__()
        for name, value in (
            ("student_dim", student_dim),
            ("teacher_dim", teacher_dim),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"projection {name} must be a positive integer, got {value!r}")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.num_layers = num_layers
        self.shared = shared
        count = 1 if shared else num_layers
        self.maps = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(count))
        for lin in self.maps:
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, layer: int = 0) -> Tensor:
        """Project ``x`` (..., student_dim) for ``layer`` in 0..num_layers-1."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"projection layer {layer} out of range 0..{self.num_layers - 1}")
        if x.shape[-1] != self.student_dim:
            raise UserError(
                f"projection expects student width {self.student_dim} but got {x.shape[-1]}; "
                "check the student model's hidden_size"
            )
        lin = self.maps[0 if self.shared else layer]
        return lin(x.to(lin.weight.dtype))  # bf16 activations meet fp32 weights in fp32


# -- the registry: every loss once, with what it reads and what it learns ---------------------

@dataclass
class TaskOutputs:
    """What a task adapter gives the losses for one model on one batch."""

    logits: Tensor | None
    """(..., C): class logits, or token logits (B, T, V) for seq2seq (None: a bare encoder)."""
    mask: Tensor | None = None
    """(...): the rows of ``logits`` that count (the target-token mask); None: all."""
    hidden_states: tuple[Tensor, ...] | None = None
    """(B, L, D) per layer, the embedding output first."""
    attention_scores: list[Tensor] | None = None
    """(B, H, L, L) pre-softmax self-attention scores per layer."""
    attention_qkv: list[tuple[Tensor, Tensor, Tensor]] | None = None
    """(Q, K, V) of each self-attention layer, each (B, H, L, d_head)."""
    attention_mask: Tensor | None = None
    """(B, L): the real (non-padding) positions of ``hidden_states`` and the scores."""
    top_indices: Tensor | None = None
    """(..., k): set when ``logits`` are cached top-k log-probabilities at these classes."""
    length_logits: Tensor | None = None
    """(B, C): a non-autoregressive model's target-length class logits."""
    length_labels: Tensor | None = None
    """(B,): the gold length class of each target."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes that layer maps and projections need."""

    layers: int
    hidden: int
    heads: int


class LayerMatch(nn.Module):
    """A layer map g(m) with per-layer weights and, for state losses, learned projections."""

    def __init__(self, mapping: list[int], weights: list[float],
                 projection: Projection | None = None) -> None:
        super().__init__()
        self.mapping, self.weights, self.projection = mapping, weights, projection


def _build_embedding(spec, student: ModelShape, teacher: ModelShape) -> LayerMatch:
    return LayerMatch([0], [1.0], Projection(student.hidden, teacher.hidden, 1, shared=True))


def _layer_match(spec, student: ModelShape, teacher: ModelShape) -> tuple[list[int], list[float]]:
    lm = spec.layer_map
    return (layer_map(lm.strategy, student.layers, teacher.layers, lm.layers),
            layer_weights(lm.weights, student.layers))


def _build_hidden(spec, student: ModelShape, teacher: ModelShape) -> LayerMatch:
    mapping, weights = _layer_match(spec, student, teacher)
    return LayerMatch(mapping, weights, Projection(student.hidden, teacher.hidden, len(mapping),
                                                   shared=spec.shared_projection))


def _build_attention(spec, student: ModelShape, teacher: ModelShape) -> LayerMatch:
    if student.heads != teacher.heads and not spec.average_heads:
        raise UserError(
            f"the attention loss compares heads one to one, but the student has {student.heads} "
            f"heads and the teacher {teacher.heads}: set average_heads: true on the attention "
            "loss or drop it"
        )
    return LayerMatch(*_layer_match(spec, student, teacher))


_SOFT_COMMON = {"loss", "weight", "temperature", "alpha"}


def _soft_term(spec, s: TaskOutputs, t: TaskOutputs, labels, _) -> Tensor:
    params = spec.model_dump(exclude=_SOFT_COMMON)
    return soft_target_loss(s.logits, t.logits, labels, spec.temperature, spec.alpha, spec.loss,
                            s.mask, t.top_indices, **params)


def _embedding_term(spec, s: TaskOutputs, t: TaskOutputs, labels, match: LayerMatch) -> Tensor:
    projected = match.projection(s.hidden_states[0], 0)
    return hidden_mse(projected, t.hidden_states[0], s.attention_mask)


def _hidden_term(spec, s: TaskOutputs, t: TaskOutputs, labels, match: LayerMatch) -> Tensor:
    return sum(
        w * hidden_mse(match.projection(s.hidden_states[m], m - 1), t.hidden_states[g],
                       s.attention_mask)
        for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1)
    )


def _attention_term(spec, s: TaskOutputs, t: TaskOutputs, labels, match: LayerMatch) -> Tensor:
    return sum(
        w * attention_mse(s.attention_scores[m - 1], t.attention_scores[g - 1], s.attention_mask,
                          average_heads=spec.average_heads)
        for m, (g, w) in enumerate(zip(match.mapping, match.weights, strict=True), start=1)
    )


def _build_last_layer(spec, student: ModelShape, teacher: ModelShape) -> LayerMatch:
    """MiniLM's pair: the student's last layer and ``teacher_layer`` (default: the last)."""
    layer = spec.teacher_layer or teacher.layers
    if layer > teacher.layers:
        raise UserError(f"teacher_layer {layer} is beyond the teacher's {teacher.layers} layers")
    if spec.loss == "minilm" and student.heads != teacher.heads:
        raise UserError(f"the minilm loss compares heads one to one, but the student has "
                        f"{student.heads} heads and the teacher {teacher.heads}: use minilmv2 "
                        "(relation heads) instead")
    if spec.loss == "minilmv2" and (student.hidden % spec.relation_heads
                                    or teacher.hidden % spec.relation_heads):
        common = [r for r in range(1, min(student.hidden, teacher.hidden) + 1)
                  if student.hidden % r == 0 and teacher.hidden % r == 0]
        raise UserError(f"relation_heads {spec.relation_heads} must divide both attention widths "
                        f"(student {student.hidden}, teacher {teacher.hidden}): use one of "
                        f"{', '.join(map(str, common))}")
    return LayerMatch([layer], [1.0])


def _minilm_term(spec, s: TaskOutputs, t: TaskOutputs, labels, match: LayerMatch) -> Tensor:
    (sq, sk, sv), (tq, tk, tv) = s.attention_qkv[-1], t.attention_qkv[match.mapping[0] - 1]
    heads, mask = sq.shape[1], s.attention_mask
    pairs = [((sq, sk), (tq, tk)), ((sv, sv), (tv, tv))]  # attention, value relation
    return sum(relation_kl(log_relation(*map(merge_heads, tp), heads, mask),
                           log_relation(*map(merge_heads, sp), heads, mask), mask)
               for sp, tp in pairs)


def _minilmv2_term(spec, s: TaskOutputs, t: TaskOutputs, labels, match: LayerMatch) -> Tensor:
    index = {"query": 0, "key": 1, "value": 2}
    student, teacher = s.attention_qkv[-1], t.attention_qkv[match.mapping[0] - 1]
    mask, heads = s.attention_mask, spec.relation_heads
    total = _empty_zero(student[0])
    for name in spec.relations:
        xs, xt = merge_heads(student[index[name]]), merge_heads(teacher[index[name]])
        total = total + relation_kl(log_relation(xt, xt, heads, mask),
                                    log_relation(xs, xs, heads, mask), mask)
    return total


@dataclass(frozen=True)
class LossTerm:
    """A registered loss: ``compute(spec, student, teacher, labels, match)``, the
    :class:`TaskOutputs` fields it ``reads``, and ``build(spec, student_shape, teacher_shape)``
    for its layer map and learned parameters (kept in the training state, not in the saved
    student). Its parameters are its config model (``config.LOSS_SPECS``)."""

    compute: Callable[..., Tensor]
    reads: frozenset[str]
    build: Callable[..., LayerMatch] | None = None


def _hard_term(spec, s: TaskOutputs, t, labels: Tensor, _) -> Tensor:
    if s.mask is not None:  # only the rows that count (a NAT model's masked positions)
        labels = labels.masked_fill(~s.mask.bool(), -100)
    return hard_label_loss(s.logits, labels, spec.smoothing)


def _length_term(spec, s: TaskOutputs, t, labels, _) -> Tensor:
    return F.cross_entropy(s.length_logits.float(), s.length_labels)


REGISTRY: dict[str, LossTerm] = {
    "hard": LossTerm(_hard_term, frozenset({"logits"})),
    **{kind: LossTerm(_soft_term, frozenset({"logits"})) for kind in DIVERGENCES},
    "soft_ce": LossTerm(lambda spec, s, t, labels, _: soft_cross_entropy(
        s.logits, t.logits, spec.temperature, s.mask), frozenset({"logits"})),
    "embedding": LossTerm(_embedding_term, frozenset({"hidden_states"}),
                          build=_build_embedding),
    "hidden": LossTerm(_hidden_term, frozenset({"hidden_states"}), build=_build_hidden),
    "attention": LossTerm(_attention_term, frozenset({"attention_scores"}),
                          build=_build_attention),
    "length": LossTerm(_length_term, frozenset({"length_logits"})),
    "minilm": LossTerm(_minilm_term, frozenset({"attention_qkv"}), build=_build_last_layer),
    "minilmv2": LossTerm(_minilmv2_term, frozenset({"attention_qkv"}),
                         build=_build_last_layer),
}
"""Every loss by name (the names of ``config.LOSS_SPECS``)."""
