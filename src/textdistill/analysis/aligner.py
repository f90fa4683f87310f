"""A word aligner with the model of fast_align (Dyer, Chahuneau & Smith, 2013).

The model is IBM Model 2 reparameterised with a single "diagonal tension" λ and a
fixed null-alignment probability p₀.  For a target sentence ``f`` of length ``m`` and a
source sentence ``e`` of length ``n`` every target word ``f_j`` (``j = 1..m``) picks one
source position ``a_j``:

* ``p(a_j = 0) = p₀`` (the null word),
* ``p(a_j = i) = (1 − p₀) · exp(λ·h(i, j, m, n)) / Z_λ(j, m, n)`` for ``i = 1..n`` with
  ``h(i, j, m, n) = −|i/n − j/m|``,

and ``p(f_j | e_{a_j})`` comes from a lexical table that EM re-estimates.  Without
``diagonal`` the alignment distribution is uniform over the ``n + 1`` choices (IBM Model
1).  With ``variational_bayes`` the M step uses a symmetric Dirichlet prior (mean-field
update ``exp(ψ(c + α) − ψ(Σ (c + α))))``; with ``optimize_tension`` λ follows gradient
steps on the expected log-likelihood after every EM pass but the first.

Everything runs on integer arrays: a corpus is a flat array of token ids with sentence
offsets (CSR), the lexical table is stored only for source/target pairs that co-occur in
some sentence pair (CSR rows per conditioning word, the null word last) and every
(sentence, target position, source position) cell knows the index of its table entry, so
an EM pass is a single numba loop without lookups.  See ``docs/analysis.md`` for how
the options map to fast_align's command line and where we deliberately differ.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numba as nb
import numpy as np

from textdistill.config import AlignerConfig
from textdistill.errors import UserError
from textdistill.paths import atomic_write_text

ALIGNER = AlignerConfig()
"""The defaults of the aligner's options, defined once in the config."""

NULL_TOKEN = "<eps>"
"""How the null word is written in exported lexical tables (fast_align's name)."""

SYMMETRIZATION_METHODS = (
    "intersection",
    "union",
    "grow-diag",
    "grow-diag-final",
    "grow-diag-final-and",
)

_TENSION_MIN = 0.1
_TENSION_MAX = 14.0
_TENSION_STEPS = 8
_TENSION_RATE = 20.0
_MAX_CHUNKS = 4


# ---------------------------------------------------------------------------
# Corpus encoding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedCorpus:
    """Sentences as one flat ``int32`` id array plus ``int64`` offsets (CSR).

    Sentence ``k`` is ``ids[offsets[k]:offsets[k + 1]]``.  ``vocab[i]`` is the token
    of id ``i`` when the corpus was encoded from strings, else ``None``.
    """

    ids: np.ndarray
    offsets: np.ndarray
    vocab: list[str] | None = None
    n_types: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sentence(self, k: int) -> np.ndarray:
        return self.ids[self.offsets[k] : self.offsets[k + 1]]

    def tokens(self, k: int) -> list[str]:
        if self.vocab is None:
            raise ValueError("this corpus was encoded from ids and has no vocabulary")
        return [self.vocab[i] for i in self.sentence(k)]

    def select(self, keep: np.ndarray) -> EncodedCorpus:
        """The corpus restricted to the sentences where ``keep`` is true (same ids)."""
        keep = np.asarray(keep, dtype=bool)
        lengths = self.lengths[keep]
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        token_keep = np.repeat(keep, self.lengths)
        return EncodedCorpus(self.ids[token_keep], offsets, self.vocab, self.n_types)


def encode(
    sentences: Iterable[Sequence[str]], vocab: dict[str, int] | None = None
) -> EncodedCorpus:
    """Map token strings to contiguous ids (first-seen order) and flatten them.

    ``vocab`` (token → id, ids ``0..len-1``) is extended in place when given, so two
    corpora can share one id space.
    """
    index: dict[str, int] = {} if vocab is None else vocab
    sentences = list(sentences)
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    flat = [index.setdefault(tok, len(index)) for sent in sentences for tok in sent]
    ids = np.asarray(flat, dtype=np.int32) if flat else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    words = [""] * len(index)
    for tok, i in index.items():
        words[i] = tok
    return EncodedCorpus(ids, offsets, words, len(index))


def as_encoded(corpus: EncodedCorpus | Sequence[Sequence[int | str]]) -> EncodedCorpus:
    """Accept an :class:`EncodedCorpus`, token strings, or integer id sequences."""
    if isinstance(corpus, EncodedCorpus):
        return corpus
    sentences = list(corpus)
    first = next((s for s in sentences if len(s)), None)
    if first is not None and isinstance(first[0], str):
        return encode(sentences)
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    offsets = np.zeros(len(sentences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1]:
        ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sentences if len(s)])
    else:
        ids = np.zeros(0, dtype=np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError("token ids must be non-negative")
    if ids.size and ids.max() >= 2**31 - 1:
        raise ValueError("token ids must fit in int32")
    n_types = int(ids.max()) + 1 if ids.size else 0
    return EncodedCorpus(ids.astype(np.int32), offsets, None, n_types)


# ---------------------------------------------------------------------------
# Alignments (Pharaoh links) in CSR form
# ---------------------------------------------------------------------------


class Alignments(Sequence):
    """Word links per sentence: ``alignments[k]`` is a list of ``(i, j)`` pairs.

    ``i`` indexes the source sentence and ``j`` the target sentence (0-based), the
    Pharaoh ``i-j`` convention, whatever direction the model was fitted in.  Stored as
    ``offsets`` (``int64``, one more than sentences) and ``src``/``tgt`` (``int32``).
    """

    def __init__(self, offsets: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.src = np.asarray(src, dtype=np.int32)
        self.tgt = np.asarray(tgt, dtype=np.int32)
        if len(self.offsets) < 1 or self.offsets[-1] != len(self.src):
            raise ValueError("inconsistent alignment arrays")
        if len(self.src) != len(self.tgt):
            raise ValueError("inconsistent alignment arrays")

    @classmethod
    def from_lists(cls, links: Iterable[Iterable[tuple[int, int]]]) -> Alignments:
        sents = [sorted(set((int(i), int(j)) for i, j in s)) for s in links]
        lengths = np.fromiter((len(s) for s in sents), dtype=np.int64, count=len(sents))
        offsets = np.zeros(len(sents) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = [p for s in sents for p in s]
        arr = np.asarray(flat, dtype=np.int64).reshape(-1, 2)
        if arr.size and arr.min() < 0:
            raise ValueError("alignment positions must be non-negative")
        return cls(offsets, arr[:, 0], arr[:, 1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        a, b = self.offsets[k], self.offsets[k + 1]
        return list(zip(self.src[a:b].tolist(), self.tgt[a:b].tolist(), strict=True))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        src, tgt, off = self.src.tolist(), self.tgt.tolist(), self.offsets.tolist()
        for k in range(len(self)):
            yield list(zip(src[off[k] : off[k + 1]], tgt[off[k] : off[k + 1]], strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Alignments):
            return list(self) == list(other)
        if isinstance(other, Sequence):
            return list(self) == [sorted(set(map(tuple, s))) for s in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_links(self) -> int:
        return len(self.src)

    def transpose(self) -> Alignments:
        """Swap source and target positions (``i-j`` becomes ``j-i``)."""
        return Alignments(self.offsets, self.tgt, self.src)._sorted()

    def _sorted(self) -> Alignments:
        sent = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))
        order = np.lexsort((self.tgt, self.src, sent))
        return Alignments(self.offsets, self.src[order], self.tgt[order])

    def to_pharaoh(self) -> list[str]:
        """One ``"i-j i-j ..."`` line per sentence (empty string: no links)."""
        return [" ".join(f"{i}-{j}" for i, j in links) for links in self]

    def write(self, path: str | Path) -> None:
        """Write Pharaoh format, one line per sentence, atomically."""
        lines = self.to_pharaoh()
        atomic_write_text(path, "".join(line + "\n" for line in lines))


_LINK_RE = re.compile(r"[0-9]+-[0-9]+")


def parse_pharaoh(lines: Iterable[str]) -> Alignments:
    """Parse Pharaoh lines (``"0-0 1-2"``); raises :class:`UserError` on bad links."""
    links = []
    for number, line in enumerate(lines, 1):
        pairs = []
        for item in line.split():
            if not _LINK_RE.fullmatch(item):
                raise UserError(f"line {number}: {item!r} is not an i-j alignment link")
            left, _, right = item.partition("-")
            pairs.append((int(left), int(right)))
        links.append(pairs)
    return Alignments.from_lists(links)


def read_pharaoh(path: str | Path) -> Alignments:
    with open(path, encoding="utf-8") as f:
        return parse_pharaoh(f.read().splitlines())


# ---------------------------------------------------------------------------
# Lexical table
# ---------------------------------------------------------------------------


@dataclass
class LexicalTable:
    """p(y | x) over co-occurring pairs, one CSR row per conditioning word ``x``.

    Row ``r < n_rows - 1`` belongs to conditioning id ``r``; the last row is the null
    word.  ``indices`` holds outcome ids and ``probs`` the probabilities; inside a row,
    entries are in order of first co-occurrence in the corpus.  Nothing is pruned: every
    pair that co-occurs in some sentence pair has an entry.  With variational Bayes the
    rows sum to slightly less than one (that is what the mean-field update gives);
    :meth:`normalized` rescales them.
    """

    indptr: np.ndarray
    indices: np.ndarray
    probs: np.ndarray
    cond_vocab: list[str] | None
    outcome_vocab: list[str] | None
    cond_counts: np.ndarray  # token frequency of each conditioning id in the training data

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def null_row(self) -> int:
        return self.n_rows - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row_ids(self, x: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[x], self.indptr[x + 1]
        return self.indices[a:b], self.probs[a:b]

    def _cond_id(self, x: str | int | None) -> int:
        if x is None:
            return self.null_row
        if isinstance(x, str):
            if self.cond_vocab is None:
                raise ValueError("this table has no vocabulary; look rows up by id")
            return self._lookup(x)
        return int(x)

    def _lookup(self, x: str) -> int:
        cache = getattr(self, "_cond_index", None)
        if cache is None:
            cache = {w: i for i, w in enumerate(self.cond_vocab or [])}
            self._cond_index = cache
        if x not in cache:
            raise KeyError(x)
        return cache[x]

    def row(self, x: str | int | None) -> dict[str | int, float]:
        """The distribution p(· | x) as a dict (keys are words when there is a vocabulary).

        ``x=None`` gives the null word's row.
        """
        ids, probs = self.row_ids(self._cond_id(x))
        keys = ids.tolist() if self.outcome_vocab is None else [self.outcome_vocab[i] for i in ids]
        return dict(zip(keys, probs.tolist(), strict=True))

    def row_sums(self, values: np.ndarray | None = None) -> np.ndarray:
        """Σ over each row of ``values`` (default: the probabilities); 0 for empty rows."""
        values = self.probs if values is None else values
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.indptr))
        return np.bincount(rows, weights=values, minlength=self.n_rows)

    def normalized(self) -> LexicalTable:
        """A copy whose non-empty rows sum to exactly one."""
        lengths = np.diff(self.indptr)
        sums = self.row_sums()
        sums[sums <= 0] = 1.0
        probs = self.probs / np.repeat(sums, lengths)
        return LexicalTable(
            self.indptr, self.indices, probs, self.cond_vocab, self.outcome_vocab, self.cond_counts
        )

    def to_lines(self, log: bool = False) -> list[str]:
        """``x<TAB>y<TAB>p`` lines (``log=True``: natural-log probabilities, as fast_align)."""
        lengths = np.diff(self.indptr)
        names = (
            [str(r) for r in range(self.n_rows - 1)]
            if self.cond_vocab is None
            else list(self.cond_vocab[: self.n_rows - 1])
        )
        names += [""] * (self.n_rows - 1 - len(names))
        names.append(NULL_TOKEN)
        xs = np.repeat(np.array(names, dtype=object), lengths)
        if self.outcome_vocab is None:
            ys = self.indices.astype(str)
        else:
            ys = np.array(self.outcome_vocab, dtype=object)[self.indices]
        vals = self.probs
        if log:
            with np.errstate(divide="ignore"):
                vals = np.log(vals)
        ps = [repr(v) for v in vals.tolist()]
        return ["\t".join(t) for t in zip(xs.tolist(), ys.tolist(), ps, strict=True)]

    def write(self, path: str | Path, log: bool = False) -> None:
        """Write the full table (every co-occurring pair), atomically."""
        atomic_write_text(path, "".join(line + "\n" for line in self.to_lines(log=log)))


# ---------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------


@nb.njit(cache=True)
def _digamma(x: float) -> float:
    # ψ(x) for x > 0: recurrence up to x >= 6, then the asymptotic expansion.
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    result += (
        math.log(x)
        - 0.5 * inv
        - inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 / 240.0)))
    )
    return result


@nb.njit(cache=True)
def _build_table(
    src_ids, src_off, tgt_ids, tgt_off, n_src, n_tgt, occ_order, occ_ptr, tok_sent, pair_off
):
    """Rows of co-occurring target ids per source id and the cell → entry index map."""
    stamp = np.full(n_tgt, -1, np.int64)
    indptr = np.zeros(n_src + 1, np.int64)
    for e in range(n_src):
        c = 0
        for k in range(occ_ptr[e], occ_ptr[e + 1]):
            s = tok_sent[occ_order[k]]
            for q in range(tgt_off[s], tgt_off[s + 1]):
                f = tgt_ids[q]
                if stamp[f] != e:
                    stamp[f] = e
                    c += 1
        indptr[e + 1] = indptr[e] + c
    nnz = indptr[n_src]
    indices = np.empty(nnz, np.int32)
    pair_idx = np.empty(pair_off[-1], np.int32)
    pos = np.zeros(n_tgt, np.int64)
    stamp[:] = -1
    for e in range(n_src):
        c = indptr[e]
        for k in range(occ_ptr[e], occ_ptr[e + 1]):
            s = tok_sent[occ_order[k]]
            for q in range(tgt_off[s], tgt_off[s + 1]):
                f = tgt_ids[q]
                if stamp[f] != e:
                    stamp[f] = e
                    indices[c] = f
                    c += 1
        for r in range(indptr[e], indptr[e + 1]):
            pos[indices[r]] = r
        for k in range(occ_ptr[e], occ_ptr[e + 1]):
            p = occ_order[k]
            s = tok_sent[p]
            n = src_off[s + 1] - src_off[s]
            base = pair_off[s] + (p - src_off[s])
            j = 0
            for q in range(tgt_off[s], tgt_off[s + 1]):
                pair_idx[base + j * n] = pos[tgt_ids[q]]
                j += 1
    return indptr, indices, pair_idx


@nb.njit(cache=True)
def _prior_row(n, j, m, lam, abuf):
    """Unnormalised exp(λ·h) for i = 1..n into abuf; returns (Z, Σ h·exp(λh))."""
    z = 0.0
    hz = 0.0
    tj = (j + 1.0) / m
    for i in range(n):
        h = -abs((i + 1.0) / n - tj)
        a = math.exp(lam * h)
        abuf[i] = a
        z += a
        hz += h * a
    return z, hz


@nb.njit(cache=True)
def _position_prior(n, j, m, lam, abuf, diagonal, use_null, p0):
    """Fill abuf with the unnormalised prior of target j over source positions; returns the
    factor that normalises it and the null word's prior."""
    if diagonal:
        z, _ = _prior_row(n, j, m, lam, abuf)
        return (1.0 - p0) / z, p0
    for i in range(n):
        abuf[i] = 1.0
    scale = 1.0 / (n + (1 if use_null else 0))
    return scale, scale


@nb.njit(parallel=True, cache=True)
def _e_step(
    src_off,
    tgt_off,
    pair_off,
    pair_idx,
    null_idx,
    prob,
    counts,
    tok_w,
    use_null,
    diagonal,
    p0,
    lam,
    max_n,
    emp_shift,
):
    """One E step; posteriors go to ``counts[chunk]``; returns per-chunk statistics.

    stats[:, 0] log-likelihood, [:, 1] Σ posterior·h over non-null links (h at target
    position j + 1 − ``emp_shift``: 0 is the model's own, 1 fast_align's 0-based index),
    [:, 2] Σ posterior of the null word.  ``tok_w`` gets 1 − q(null) per target token.
    """
    n_chunks = counts.shape[0]
    n_sent = len(src_off) - 1
    stats = np.zeros((n_chunks, 3))
    for c in nb.prange(n_chunks):
        lo = n_sent * c // n_chunks
        hi = n_sent * (c + 1) // n_chunks
        cnt = counts[c]
        abuf = np.empty(max_n)
        buf = np.empty(max_n)
        ll = 0.0
        emp = 0.0
        c0 = 0.0
        for s in range(lo, hi):
            n = src_off[s + 1] - src_off[s]
            m = tgt_off[s + 1] - tgt_off[s]
            base = pair_off[s]
            for j in range(m):
                tok = tgt_off[s] + j
                scale, null_prior = _position_prior(n, j, m, lam, abuf, diagonal, use_null, p0)
                tot = 0.0
                pn = 0.0
                if use_null:
                    pn = prob[null_idx[tok]] * null_prior
                    tot += pn
                row = base + j * n
                for i in range(n):
                    v = prob[pair_idx[row + i]] * abuf[i] * scale
                    buf[i] = v
                    tot += v
                if not tot > 0.0:
                    tok_w[tok] = 0.0
                    continue
                ll += math.log(tot)
                inv = 1.0 / tot
                if use_null:
                    q0 = pn * inv
                    cnt[null_idx[tok]] += q0
                    c0 += q0
                    tok_w[tok] = 1.0 - q0
                else:
                    tok_w[tok] = 1.0
                tj = (j + 1.0 - emp_shift) / m
                for i in range(n):
                    q = buf[i] * inv
                    cnt[pair_idx[row + i]] += q
                    emp += q * -abs((i + 1.0) / n - tj)
        stats[c, 0] = ll
        stats[c, 1] = emp
        stats[c, 2] = c0
    return stats


@nb.njit(cache=True)
def _m_step(counts, indptr, prob, vb, alpha):
    n_rows = len(indptr) - 1
    n_chunks = counts.shape[0]
    for r in range(n_rows):
        a = indptr[r]
        b = indptr[r + 1]
        tot = 0.0
        for k in range(a, b):
            v = 0.0
            for c in range(n_chunks):
                v += counts[c, k]
            prob[k] = v
            tot += v
        if vb:
            dt = _digamma(tot + alpha * (b - a)) if b > a else 0.0
            for k in range(a, b):
                prob[k] = math.exp(_digamma(prob[k] + alpha) - dt)
        else:
            if tot == 0.0:
                tot = 1.0
            for k in range(a, b):
                prob[k] /= tot


@nb.njit(cache=True)
def _run_sums(a, count, lam, n):
    """Σ_u exp(λ·(a − u/n)) and Σ_u (a − u/n)·exp(λ·(a − u/n)) for u = 0..count−1."""
    if count <= 0:
        return 0.0, 0.0
    z = 0.0
    hz = 0.0
    if count <= 16 or lam / n < 1e-4:
        for u in range(count):
            h = a - u / n
            e = math.exp(lam * h)
            z += e
            hz += h * e
        return z, hz
    # Geometric and arithmetico-geometric series with ratio r = exp(−λ/n).
    r = math.exp(-lam / n)
    one_minus_r = -math.expm1(-lam / n)
    r_count = math.exp(-lam * count / n)
    s0 = (1.0 - r_count) / one_minus_r
    s1 = (r * (1.0 - r_count) / one_minus_r - count * r_count) / one_minus_r
    ea = math.exp(lam * a)
    return ea * s0, ea * (a * s0 - s1 / n)


@nb.njit(cache=True)
def _prior_moments(j, m, n, lam):
    """Z_λ(j, m, n) and Σ_i h·exp(λh) for 0-based target position j, in O(1) time."""
    k = ((j + 1) * n) // m  # source positions i = 1..k lie at or below the diagonal
    t = (j + 1.0) / m
    z_lo, hz_lo = _run_sums(k / n - t, k, lam, n)
    z_hi, hz_hi = _run_sums(t - (k + 1.0) / n, n - k, lam, n)
    return z_lo + z_hi, hz_lo + hz_hi


@nb.njit(cache=True)
def _fast_align_z(j, m, n, lam):
    """fast_align's closed-form Z_λ for 1-based target position ``j`` of an (m, n) pair,
    computed as its code does, including where j·n/m exceeds n (its unsigned count of the
    positions above the diagonal then wraps around, and that run's geometric factor r^count
    underflows to 0)."""
    split = j * n / m
    low = int(split)
    r = math.exp(-lam / n)
    above = n - low
    if above < 0:
        above += 1 << 32
    z = 0.0
    if above:
        z += math.exp(lam * -abs((low + 1.0) / n - j / m)) * (1.0 - r ** above) / (1.0 - r)
    if low:
        z += math.exp(lam * -abs(low / n - j / m)) * (1.0 - r ** low) / (1.0 - r)
    return z


@nb.njit(cache=True)
def _fast_align_model_feature(cls_m, cls_n, pairs, lam):
    """fast_align's model expectation of h: for each (m, n) class, pairs × Σ_j of
    Σ_i h·exp(λh) at (j, m, n) over its normaliser evaluated with m and n swapped."""
    acc = 0.0
    for c in range(len(cls_m)):
        m = cls_m[c]
        n = cls_n[c]
        part = 0.0
        for j in range(m):
            _, hz = _prior_moments(j, m, n, lam)
            part += hz / _fast_align_z(j + 1, n, m, lam)
        acc += pairs[c] * part
    return acc


@nb.njit(cache=True)
def _model_feature(cls_m, cls_n, cls_ptr, weights, lam):
    """Σ over (m, n, j) classes of weight · E_λ[h | j, m, n]."""
    n_cls = len(cls_m)
    out = np.zeros(n_cls)
    for c in range(n_cls):
        m = cls_m[c]
        n = cls_n[c]
        acc = 0.0
        for j in range(m):
            w = weights[cls_ptr[c] + j]
            if w != 0.0:
                z, hz = _prior_moments(j, m, n, lam)
                acc += w * hz / z
        out[c] = acc
    return out.sum()


@nb.njit(cache=True)
def _viterbi(
    src_off, tgt_off, pair_off, pair_idx, null_idx, prob, use_null, diagonal, p0, lam, max_n, out
):
    """Best source position (or -1 for null) of every target token into ``out``.

    Ties go to the null word, then to the leftmost source position (as fast_align).
    """
    n_sent = len(src_off) - 1
    abuf = np.empty(max_n)
    for s in range(n_sent):
        n = src_off[s + 1] - src_off[s]
        m = tgt_off[s + 1] - tgt_off[s]
        base = pair_off[s]
        for j in range(m):
            tok = tgt_off[s] + j
            scale, null_prior = _position_prior(n, j, m, lam, abuf, diagonal, use_null, p0)
            best = -1
            best_p = -1.0
            if use_null:
                best_p = prob[null_idx[tok]] * null_prior
            row = base + j * n
            for i in range(n):
                v = prob[pair_idx[row + i]] * abuf[i] * scale
                if v > best_p:
                    best_p = v
                    best = i
            out[tok] = best


_NEIGHBOURS_I = np.array([-1, 0, 1, 0, -1, -1, 1, 1], dtype=np.int64)
_NEIGHBOURS_J = np.array([0, -1, 0, 1, -1, 1, -1, 1], dtype=np.int64)


@nb.njit(cache=True)
def _symmetrize(f_off, f_i, f_j, r_off, r_i, r_j, method, di, dj):
    n_sent = len(f_off) - 1
    out_off = np.zeros(n_sent + 1, np.int64)
    out_i = np.empty(len(f_i) + len(r_i), np.int32)
    out_j = np.empty(len(f_i) + len(r_i), np.int32)
    pos = 0
    for s in range(n_sent):
        n = 0
        m = 0
        for k in range(f_off[s], f_off[s + 1]):
            n = max(n, f_i[k] + 1)
            m = max(m, f_j[k] + 1)
        for k in range(r_off[s], r_off[s + 1]):
            n = max(n, r_i[k] + 1)
            m = max(m, r_j[k] + 1)
        fw = np.zeros((n, m), np.bool_)
        rv = np.zeros((n, m), np.bool_)
        for k in range(f_off[s], f_off[s + 1]):
            fw[f_i[k], f_j[k]] = True
        for k in range(r_off[s], r_off[s + 1]):
            rv[r_i[k], r_j[k]] = True
        al = np.zeros((n, m), np.bool_)
        src_al = np.zeros(n, np.bool_)
        tgt_al = np.zeros(m, np.bool_)
        for i in range(n):
            for j in range(m):
                if (method == 1 and (fw[i, j] or rv[i, j])) or (fw[i, j] and rv[i, j]):
                    al[i, j] = True
                    src_al[i] = True
                    tgt_al[j] = True
        if method >= 2:
            changed = True
            while changed:
                changed = False
                for i in range(n):
                    for j in range(m):
                        if not al[i, j]:
                            continue
                        for d in range(8):
                            k = i + di[d]
                            q = j + dj[d]
                            if k < 0 or k >= n or q < 0 or q >= m or al[k, q]:
                                continue
                            if not (fw[k, q] or rv[k, q]):
                                continue
                            if not src_al[k] or not tgt_al[q]:
                                al[k, q] = True
                                src_al[k] = True
                                tgt_al[q] = True
                                changed = True
        if method >= 3:
            for side in range(2):
                lo = f_off[s] if side == 0 else r_off[s]
                hi = f_off[s + 1] if side == 0 else r_off[s + 1]
                for k in range(lo, hi):
                    i = f_i[k] if side == 0 else r_i[k]
                    j = f_j[k] if side == 0 else r_j[k]
                    if al[i, j]:
                        continue
                    if method == 4:
                        ok = not src_al[i] and not tgt_al[j]
                    else:
                        ok = not src_al[i] or not tgt_al[j]
                    if ok:
                        al[i, j] = True
                        src_al[i] = True
                        tgt_al[j] = True
        for i in range(n):
            for j in range(m):
                if al[i, j]:
                    out_i[pos] = i
                    out_j[pos] = j
                    pos += 1
        out_off[s + 1] = pos
    return out_off, out_i[:pos], out_j[:pos]


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass
class AlignmentModel:
    """A fitted aligner: lexical table, final tension and the training alignments.

    ``reverse=False`` models p(target | source) (fast_align's default direction); with
    ``reverse=True`` it models p(source | target) (fast_align ``-r``).  Either way
    :meth:`align` reports links as ``(source position, target position)``.
    """

    table: LexicalTable
    tension: float
    p0: float
    diagonal: bool
    use_null: bool
    reverse: bool
    iterations: int
    variational_bayes: bool
    alpha: float
    history: list[dict] = field(default_factory=list)
    _alignments: Alignments | None = None

    def lexical_table(self) -> LexicalTable:
        """The full (unpruned) table: p(tgt | src), or p(src | tgt) when ``reverse``."""
        return self.table

    def align(self) -> Alignments:
        """Viterbi links of the training corpus, as ``(source i, target j)`` pairs."""
        assert self._alignments is not None
        return self._alignments


def _check_params(iterations, p0, tension, alpha, variational_bayes, fast_align_compatible):
    if iterations < (1 if fast_align_compatible else 0):
        raise UserError(f"iterations must be >= {1 if fast_align_compatible else 0}"
                        f"{' (fast_align -I)' if fast_align_compatible else ''}, got {iterations}")
    if not 0.0 <= p0 < 1.0:
        raise UserError(f"p0 must be in [0, 1), got {p0}")
    if not tension > 0.0:
        raise UserError(f"tension must be > 0, got {tension}")
    if variational_bayes and not alpha > 0.0:
        raise UserError(f"alpha must be > 0 with variational Bayes, got {alpha}")


def fit_alignment(
    src_ids: EncodedCorpus | Sequence[Sequence[int | str]],
    tgt_ids: EncodedCorpus | Sequence[Sequence[int | str]],
    *,
    iterations: int = ALIGNER.iterations,
    diagonal: bool = ALIGNER.diagonal,
    optimize_tension: bool = ALIGNER.optimize_tension,
    variational_bayes: bool = ALIGNER.variational_bayes,
    alpha: float = ALIGNER.alpha,
    p0: float = ALIGNER.p0,
    tension: float = ALIGNER.tension,
    fast_align_compatible: bool = ALIGNER.fast_align_compatible,
    use_null: bool = True,
    reverse: bool = False,
    num_threads: int | None = None,
) -> AlignmentModel:
    """Fit fast_align's model by EM and compute Viterbi alignments of the corpus.

    ``src_ids``/``tgt_ids`` are parallel corpora (same number of sentences, none empty):
    :class:`EncodedCorpus`, lists of token strings, or lists of integer ids.
    ``iterations`` counts EM passes that update the lexical table (fast_align ``-I N``
    runs ``N - 1`` of them plus a final alignment pass, so ``-I 5`` is
    ``iterations=4``).  ``fast_align_compatible`` reproduces fast_align's own tension
    update and takes ``iterations`` as its ``-I``. ``num_threads`` limits numba's threads
    (default: all).
    """
    _check_params(iterations, p0, tension, alpha, variational_bayes, fast_align_compatible)
    src = as_encoded(src_ids)
    tgt = as_encoded(tgt_ids)
    if len(src) != len(tgt):
        raise UserError(
            f"source has {len(src)} sentences but target has {len(tgt)}; they must be parallel"
        )
    if len(src) == 0:
        raise UserError("cannot align an empty corpus")
    for name, corpus in (("source", src), ("target", tgt)):
        empty = np.flatnonzero(corpus.lengths == 0)
        if empty.size:
            raise UserError(
                f"{empty.size} {name} sentence(s) are empty (first: sentence {empty[0] + 1}); "
                "drop those pairs before aligning"
            )
    if reverse:
        src, tgt = tgt, src

    old_threads = nb.get_num_threads()
    if num_threads is not None:
        nb.set_num_threads(max(1, min(int(num_threads), nb.config.NUMBA_NUM_THREADS)))
    try:
        model = _fit(
            src,
            tgt,
            iterations - 1 if fast_align_compatible else iterations,
            fast_align_compatible,
            diagonal,
            optimize_tension,
            variational_bayes,
            alpha,
            p0,
            tension,
            use_null,
            reverse,
        )
    finally:
        nb.set_num_threads(old_threads)
    return model


def _fit(
    src, tgt, iterations, compatible, diagonal, optimize_tension, vb, alpha, p0, tension,
    use_null, reverse
) -> AlignmentModel:
    """``iterations`` EM passes, then the Viterbi pass; ``compatible``: fast_align's tension
    update (see :func:`_fast_align_model_feature`)."""
    t_start = time.perf_counter()
    n_src = max(src.n_types, int(src.ids.max()) + 1)
    n_tgt = max(tgt.n_types, int(tgt.ids.max()) + 1)
    n_len = src.lengths
    m_len = tgt.lengths
    n_sent = len(src)
    max_n = int(n_len.max())

    # Cell layout: sentence s owns m*n cells, target-major (cell j*n + i).
    pair_off = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(n_len * m_len, out=pair_off[1:])
    occ_order = np.argsort(src.ids, kind="stable").astype(np.int64)
    occ_ptr = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(np.bincount(src.ids, minlength=n_src), out=occ_ptr[1:])
    tok_sent = np.repeat(np.arange(n_sent, dtype=np.int64), n_len)
    indptr, indices, pair_idx = _build_table(
        src.ids,
        src.offsets,
        tgt.ids,
        tgt.offsets,
        n_src,
        n_tgt,
        occ_order,
        occ_ptr,
        tok_sent,
        pair_off,
    )
    del occ_order, tok_sent
    if indptr[-1] >= 2**31 - 1:
        raise UserError("corpus too large: more than 2^31 co-occurring word pairs")
    # The null word co-occurs with every target type of the corpus.
    present = np.unique(tgt.ids) if use_null else np.zeros(0, dtype=np.int32)
    null_start = indptr[-1]
    indptr = np.append(indptr, null_start + len(present))
    indices = np.concatenate([indices, present.astype(np.int32)])
    if use_null:
        null_idx = (null_start + np.searchsorted(present, tgt.ids)).astype(np.int32)
    else:
        null_idx = np.zeros(len(tgt.ids), dtype=np.int32)
    nnz = len(indices)
    prob = np.ones(nnz)  # uniform start: only the alignment prior matters in pass 1
    # One count array per chunk; the E step is memory-bound, so a few chunks suffice.
    n_chunks = min(nb.get_num_threads(), _MAX_CHUNKS)
    counts = np.zeros((n_chunks, nnz))
    tok_w = np.zeros(len(tgt.ids))
    toks = float(len(tgt.ids))

    # (m, n, j) classes for the tension gradient.
    if diagonal and optimize_tension:
        key = m_len * (max_n + 1) + n_len
        uniq, inverse = np.unique(key, return_inverse=True)
        cls_m = (uniq // (max_n + 1)).astype(np.int64)
        cls_n = (uniq % (max_n + 1)).astype(np.int64)
        cls_ptr = np.zeros(len(uniq) + 1, dtype=np.int64)
        np.cumsum(cls_m, out=cls_ptr[1:])
        tgt_pos = np.arange(len(tgt.ids), dtype=np.int64) - np.repeat(tgt.offsets[:-1], m_len)
        tok_cls = cls_ptr[np.repeat(inverse, m_len)] + tgt_pos
        cls_pairs = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
        del tgt_pos
    history: list[dict] = [
        {"stage": "setup", "seconds": time.perf_counter() - t_start, "cooccurring_pairs": int(nnz)}
    ]

    lam = float(tension)
    for it in range(iterations):
        t0 = time.perf_counter()
        counts.fill(0.0)
        stats = _e_step(
            src.offsets,
            tgt.offsets,
            pair_off,
            pair_idx,
            null_idx,
            prob,
            counts,
            tok_w,
            use_null,
            diagonal,
            p0,
            lam,
            max_n,
            1.0 if compatible else 0.0,
        ).sum(axis=0)
        loglik, emp_feat, c0 = stats
        record = {
            "iteration": it + 1,
            "log_likelihood": float(loglik),
            "perplexity": float(math.exp(-loglik / toks)),
            "posterior_p0": float(c0 / toks),
            "tension": lam,
        }
        if diagonal and optimize_tension and it > 0:
            weights = np.bincount(tok_cls, weights=tok_w, minlength=int(cls_ptr[-1]))
            emp = emp_feat / toks
            for _ in range(_TENSION_STEPS):
                if compatible:
                    mod = _fast_align_model_feature(cls_m, cls_n, cls_pairs, lam) / toks
                else:
                    mod = _model_feature(cls_m, cls_n, cls_ptr, weights, lam) / toks
                lam = float(min(_TENSION_MAX, max(_TENSION_MIN, lam + (emp - mod) * _TENSION_RATE)))
            record["tension_after"] = lam
        _m_step(counts, indptr, prob, vb, alpha)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
    del counts

    best = np.empty(len(tgt.ids), dtype=np.int64)
    _viterbi(
        src.offsets,
        tgt.offsets,
        pair_off,
        pair_idx,
        null_idx,
        prob,
        use_null,
        diagonal,
        p0,
        lam,
        max_n,
        best,
    )
    aligned = best >= 0
    per_sent = np.add.reduceat(aligned.astype(np.int64), tgt.offsets[:-1]) if n_sent else []
    link_off = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(per_sent, out=link_off[1:])
    tgt_pos = np.arange(len(tgt.ids), dtype=np.int64) - np.repeat(tgt.offsets[:-1], m_len)
    a_src = best[aligned]
    a_tgt = tgt_pos[aligned]
    links = Alignments(link_off, a_src, a_tgt)
    if reverse:
        links = links.transpose()
    else:
        links = links._sorted()

    table = LexicalTable(
        indptr=indptr,
        indices=indices,
        probs=prob,
        cond_vocab=src.vocab,
        outcome_vocab=tgt.vocab,
        cond_counts=np.bincount(src.ids, minlength=n_src),
    )
    history.append({"stage": "total", "seconds": time.perf_counter() - t_start})
    return AlignmentModel(
        table=table,
        tension=lam,
        p0=p0,
        diagonal=diagonal,
        use_null=use_null,
        reverse=reverse,
        iterations=iterations,
        variational_bayes=vb,
        alpha=alpha,
        history=history,
        _alignments=links,
    )


def symmetrize(
    fwd: Alignments | Sequence[Sequence[tuple[int, int]]],
    rev: Alignments | Sequence[Sequence[tuple[int, int]]],
    method: str = "grow-diag-final-and",
) -> Alignments:
    """Combine forward and reverse links (both as ``(source i, target j)``).

    Methods: ``intersection``, ``union``, ``grow-diag``, ``grow-diag-final`` and
    ``grow-diag-final-and`` (Koehn et al. 2003; neighbours as (Δsource, Δtarget) in the
    order (−1,0) (0,−1) (1,0) (0,1) (−1,−1) (−1,1) (1,−1) (1,1); the grow step repeats
    over the current alignment in row-major order until nothing is added; "final" adds
    forward then reverse links whose source *or* target word (``-and``: both words) is
    still unaligned).
    """
    if method not in SYMMETRIZATION_METHODS:
        raise UserError(
            f"unknown symmetrization {method!r}; choose one of {', '.join(SYMMETRIZATION_METHODS)}"
        )
    f = fwd if isinstance(fwd, Alignments) else Alignments.from_lists(fwd)
    r = rev if isinstance(rev, Alignments) else Alignments.from_lists(rev)
    if len(f) != len(r):
        raise UserError(f"forward has {len(f)} sentences but reverse has {len(r)}")
    code = SYMMETRIZATION_METHODS.index(method)
    off, si, sj = _symmetrize(
        f.offsets, f.src, f.tgt, r.offsets, r.src, r.tgt, code, _NEIGHBOURS_I, _NEIGHBOURS_J
    )
    return Alignments(off, si, sj)
