"""Distillation losses as pure functions on tensors, plus the width projection module.

Masks are optional bool (or 0/1) tensors over the leading dims: masked-out positions
contribute nothing and means are taken over kept positions only. Teacher tensors are always
detached. When nothing is kept, a zero that is still attached to the student's graph is
returned, so ``loss.backward()`` keeps working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textdistill.errors import UserError

__all__ = [
    "Projection",
    "attention_mse",
    "hard_label_loss",
    "hidden_mse",
    "kd_loss",
    "soft_cross_entropy",
    "soft_target_kd",
]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature!r}; 1.0 disables softening")


def _check_same_shape(student: Tensor, teacher: Tensor, what: str, hint: str) -> None:
    if student.shape != teacher.shape:
        raise UserError(
            f"student {what} have shape {tuple(student.shape)} but teacher {what} have shape "
            f"{tuple(teacher.shape)}; {hint}"
        )


def _empty_zero(t: Tensor) -> Tensor:
    """A zero scalar connected to ``t``'s graph (sum over an empty slice, never NaN)."""
    return t.reshape(-1)[:0].sum()


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
    """Checked, masked log-softmax(logits / tau) of student and teacher, as (rows, C)."""
    _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits, "logits",
                      "student and teacher must share the label set / vocabulary")
    s, t = _kept_rows(student_logits, teacher_logits, mask, what)
    return (F.log_softmax(s.float() / temperature, dim=-1),
            F.log_softmax(t.float() / temperature, dim=-1))


def soft_target_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Hinton KD: tau^2 * KL(softmax(t/tau) || softmax(s/tau)), mean over kept rows.

    Logits are (..., C); ``mask`` is (...).
    """
    log_p_s, log_p_t = _tempered_log_probs(student_logits, teacher_logits, temperature, mask,
                                           "soft-target")
    if log_p_s.shape[0] == 0:
        return _empty_zero(student_logits)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)
    return kl.mean() * (temperature**2)


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


def hard_label_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Cross-entropy over positions whose label is not ``ignore_index``; logits (..., C)."""
    if labels.shape != logits.shape[:-1]:
        raise UserError(
            f"labels have shape {tuple(labels.shape)} but the logits have leading shape "
            f"{tuple(logits.shape[:-1])}; give one label per prediction"
        )
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1).long()
    count = (flat_labels != ignore_index).sum()
    if int(count) == 0:
        return _empty_zero(logits)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    return total / count


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    temperature: float,
    alpha: float,
    mask: Tensor | None = None,
) -> Tensor:
    """``alpha * soft_target_kd + (1 - alpha) * hard_label_loss``.

    Positions with label -100 and, if given, positions where ``mask`` is false are ignored by
    both terms. ``labels`` may be None only when ``alpha == 1`` (pure soft targets, every
    position allowed by ``mask`` is used).
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1], got {alpha!r}; 1 = soft targets only")
    ignore = -100
    if labels is None:
        if alpha != 1.0:
            raise UserError(
                f"alpha is {alpha} but no labels were given; set alpha to 1 or provide labels"
            )
        return soft_target_kd(student_logits, teacher_logits, temperature, mask)
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
        total = total + alpha * soft_target_kd(student_logits, teacher_logits, temperature, keep)
    if alpha < 1.0:
        hard_labels = labels.masked_fill(~keep, ignore)
        total = total + (1.0 - alpha) * hard_label_loss(student_logits, hard_labels, ignore)
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
    s, t = _kept_rows(student_hidden, teacher_hidden, mask, "hidden-state")
    if s.numel() == 0:
        return _empty_zero(student_hidden)
    return F.mse_loss(s.float(), t.float(), reduction="mean")


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
    diff = (s - t)[pair.expand_as(s)]
    if diff.numel() == 0:
        return _empty_zero(student_scores)
    return diff.pow(2).mean()


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
        return self.maps[0 if self.shared else layer](x)
