"""Layer maps g(m): which teacher layer each student layer learns from.

Layers are numbered as in ``output_hidden_states``: index 0 is the embedding output (mapped
0 -> 0 by the embedding loss, never listed here), transformer layers are 1..N for the teacher
and 1..M for the student.
"""

from __future__ import annotations

import math

from textdistill.errors import UserError

STRATEGIES = ("uniform", "top", "bottom", "explicit")


def _check_depth(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")


def layer_map(
    strategy: str,
    student_layers: int,
    teacher_layers: int,
    explicit: list[int] | None = None,
) -> list[int]:
    """Return ``g`` as a list of length ``student_layers``; element m-1 is g(m) in 1..N.

    - ``uniform``: g(m) = round-half-up(m * N / M); the last student layer maps to the last
      teacher layer, and for N divisible by M this is m * N / M (TinyBERT). Strictly increasing.
    - ``top``: g(m) = N - M + m (the student learns from the last M teacher layers).
    - ``bottom``: g(m) = m (the first M teacher layers).
    - ``explicit``: the given list, which must have length M with every index in 1..N.

    A student deeper than the teacher (M > N) has no one-to-one map, so ``uniform``, ``top``
    and ``bottom`` refuse it; an explicit map may repeat teacher layers.
    """
    _check_depth("student_layers", student_layers)
    _check_depth("teacher_layers", teacher_layers)
    m_layers, n_layers = student_layers, teacher_layers

    if strategy == "explicit":
        if explicit is None:
            raise UserError(
                "layer map strategy 'explicit' needs a list of teacher layers, one per student "
                f"layer ({m_layers} indices in 1..{n_layers})"
            )
        if len(explicit) != m_layers:
            raise UserError(
                f"explicit layer map has {len(explicit)} entries but the student has {m_layers} "
                f"layers; give one teacher layer (1..{n_layers}) per student layer"
            )
        for pos, idx in enumerate(explicit, start=1):
            if isinstance(idx, bool) or not isinstance(idx, int) or not 1 <= idx <= n_layers:
                raise UserError(
                    f"explicit layer map entry {pos} is {idx!r}, outside the valid teacher layer "
                    f"range 1..{n_layers} (0 is the embedding layer and is mapped separately)"
                )
        return list(explicit)

    if explicit is not None:
        raise UserError(
            f"an explicit layer list was given with strategy {strategy!r}; "
            "set the strategy to 'explicit' or drop the list"
        )
    if strategy not in STRATEGIES:
        raise UserError(
            f"unknown layer map strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}"
        )
    if m_layers > n_layers:
        raise UserError(
            f"the student has {m_layers} layers but the teacher only {n_layers}; strategy "
            f"{strategy!r} needs a student no deeper than the teacher, use 'explicit' instead"
        )

    if strategy == "uniform":
        # round-half-up(m*N/M) in exact integer arithmetic
        return [(2 * m * n_layers + m_layers) // (2 * m_layers) for m in range(1, m_layers + 1)]
    if strategy == "top":
        return [n_layers - m_layers + m for m in range(1, m_layers + 1)]
    return list(range(1, m_layers + 1))  # bottom


def layer_weights(weights: list[float] | None, student_layers: int) -> list[float]:
    """Per-student-layer loss weights; all 1.0 when ``weights`` is None."""
    _check_depth("student_layers", student_layers)
    if weights is None:
        return [1.0] * student_layers
    if len(weights) != student_layers:
        raise UserError(
            f"layer weights has {len(weights)} entries but the student has {student_layers} "
            "layers; give one weight per student layer or leave it unset"
        )
    out: list[float] = []
    for pos, w in enumerate(weights, start=1):
        try:
            value = float(w)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise UserError(f"layer weight {pos} is {w!r}; weights must be finite numbers >= 0")
        out.append(value)
    return out
