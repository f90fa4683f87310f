"""Corpus measures of Zhou, Gu & Neubig (2020) and friends.

* :func:`complexity` — C(d) = mean over source word types x of
  H(y | x) = −Σ_y p(y|x) ln p(y|x) (nats), from an aligner's lexical table; also the
  version weighted by source-token frequency (the conditional entropy H(Y | X) under
  the corpus' source-word distribution).
* :func:`faithfulness` — F(d) = mean over x of KL(p_real(y|x) ‖ p_d(y|x)) with
  additive ε smoothing of p_d (see the function).
* :func:`fuzzy_reordering_scores` / :func:`reordering_score` — Talbot et al. (2011).
* :class:`LanguageModeEstimator` — the word-level language classifier p(l | y) used for
  the multi-modality study.

``docs/analysis.md`` states every convention (which table, zeros, edge cases).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numba as nb
import numpy as np

from textdistill.analysis.aligner import Alignments, LexicalTable

DEFAULT_EPSILON = 1e-6


# ---------------------------------------------------------------------------
# Complexity
# ---------------------------------------------------------------------------


def row_entropies(table: LexicalTable) -> np.ndarray:
    """H(y | x) in nats for every row (rows renormalised to sum to one; 0 for empty rows)."""
    t = table.normalized()
    p = t.probs
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return t.row_sums(terms)


def complexity(table: LexicalTable) -> dict:
    """C(d) from a forward lexical table p(y | x).

    Averages over the source word types that occur in the aligned corpus (the null word
    is left out).  Returns ``complexity`` (plain mean over types),
    ``complexity_token_weighted`` (types weighted by their token counts) and
    ``source_types`` (how many types were averaged).
    """
    ent = row_entropies(table)[: table.null_row]
    counts = np.asarray(table.cond_counts[: table.null_row], dtype=np.float64)
    keep = (counts > 0) & (np.diff(table.indptr)[: table.null_row] > 0)
    if not keep.any():
        return {"complexity": None, "complexity_token_weighted": None, "source_types": 0}
    return {
        "complexity": float(ent[keep].mean()),
        "complexity_token_weighted": float((ent[keep] * counts[keep]).sum() / counts[keep].sum()),
        "source_types": int(keep.sum()),
    }


# ---------------------------------------------------------------------------
# Faithfulness
# ---------------------------------------------------------------------------


def _id_map(from_vocab: list[str] | None, to_index: dict[str, int], n: int) -> np.ndarray:
    if from_vocab is None:
        return np.arange(n, dtype=np.int64)
    return np.fromiter((to_index.get(w, -1) for w in from_vocab), dtype=np.int64, count=n)


def faithfulness(
    real: LexicalTable, distilled: LexicalTable, epsilon: float = DEFAULT_EPSILON
) -> dict:
    """F(d) = mean over source types x of KL(p_real(· | x) ‖ p_d(· | x)), in nats.

    Both tables are row-normalised first.  x ranges over the source types that have a
    row in both tables (the null word is left out).  Zeros: for each x let Y_x be the
    union of the two rows' supports; p_d is smoothed to
    ``(p_d(y|x) + ε) / (1 + ε·|Y_x|)`` over Y_x, which keeps it a distribution and
    makes the KL finite; p_real is used as is (terms with p_real = 0 contribute 0).  A
    table compared with itself gives F ≈ ε·|Y_x| ≈ 0.  Tables are matched by word
    strings when both have vocabularies, else by ids.

    Returns ``faithfulness``, ``faithfulness_token_weighted`` (weights: the real
    corpus' source-token counts), ``source_types`` and ``epsilon``.
    """
    if not epsilon > 0:
        raise ValueError("epsilon must be > 0")
    r = real.normalized()
    d = distilled.normalized()
    nr_x = r.null_row
    nd_x = d.null_row
    # Common id spaces: conditioning words by the real table's ids, outcomes by a union.
    if (r.cond_vocab is None) != (d.cond_vocab is None):
        raise ValueError("both tables need vocabularies, or neither")
    if r.cond_vocab is not None:
        x_index = {w: i for i, w in enumerate(r.cond_vocab[:nr_x])}
        y_vocab = list(r.outcome_vocab or [])
        y_index = {w: i for i, w in enumerate(y_vocab)}
        for w in d.outcome_vocab or []:
            if w not in y_index:
                y_index[w] = len(y_index)
        d_x = _id_map(d.cond_vocab[:nd_x], x_index, nd_x)
        d_y = _id_map(d.outcome_vocab, y_index, len(d.outcome_vocab or []))
        r_y_size = len(y_index)
    else:
        d_x = np.where(np.arange(nd_x) < nr_x, np.arange(nd_x), -1)
        r_y_size = int(max(r.indices.max(initial=-1), d.indices.max(initial=-1))) + 1
        d_y = np.arange(r_y_size, dtype=np.int64)

    r_len = np.diff(r.indptr)[:nr_x]
    r_rows = np.repeat(np.arange(nr_x, dtype=np.int64), r_len)
    r_end = r.indptr[nr_x]
    r_keys = r_rows * r_y_size + r.indices[:r_end].astype(np.int64)
    r_p = r.probs[:r_end]

    d_len = np.diff(d.indptr)[:nd_x]
    d_rows_local = np.repeat(np.arange(nd_x, dtype=np.int64), d_len)
    d_end = d.indptr[nd_x]
    d_rows = d_x[d_rows_local]
    d_valid = d_rows >= 0
    d_keys = d_rows[d_valid] * r_y_size + d_y[d.indices[:d_end].astype(np.int64)][d_valid]
    d_p = d.probs[:d_end][d_valid]
    order = np.argsort(d_keys, kind="stable")
    d_keys = d_keys[order]
    d_p = d_p[order]

    # Which real rows also exist in the distilled table.
    d_row_len = np.bincount(d_rows[d_valid], minlength=nr_x)[:nr_x]
    both_rows = (r_len > 0) & (d_row_len > 0)
    if not both_rows.any():
        return {
            "faithfulness": None,
            "faithfulness_token_weighted": None,
            "source_types": 0,
            "epsilon": epsilon,
        }

    pos = np.minimum(np.searchsorted(d_keys, r_keys), len(d_keys) - 1)
    found = d_keys[pos] == r_keys
    q = np.where(found, d_p[pos], 0.0)
    n_shared = np.bincount(r_rows[found], minlength=nr_x)
    union = r_len + d_row_len - n_shared
    q_s = (q + epsilon) / (1.0 + epsilon * union[r_rows])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(r_p > 0, r_p * (np.log(np.where(r_p > 0, r_p, 1.0)) - np.log(q_s)), 0.0)
    kl = np.bincount(r_rows, weights=terms, minlength=nr_x)
    weights = np.asarray(r.cond_counts[:nr_x], dtype=np.float64)
    keep = both_rows
    w = weights[keep]
    weighted = float((kl[keep] * w).sum() / w.sum()) if w.sum() > 0 else None
    return {
        "faithfulness": float(kl[keep].mean()),
        "faithfulness_token_weighted": weighted,
        "source_types": int(keep.sum()),
        "epsilon": epsilon,
    }


# ---------------------------------------------------------------------------
# Fuzzy reordering score
# ---------------------------------------------------------------------------


@nb.njit(cache=True)
def _frs_kernel(offsets, src, tgt, out):
    n_sent = len(offsets) - 1
    for s in range(n_sent):
        a = offsets[s]
        b = offsets[s + 1]
        m_links = b - a
        if m_links == 0:
            out[s] = np.nan
            continue
        if m_links == 1:
            out[s] = 1.0
            continue
        uniq = np.unique(tgt[a:b])
        chunks = 1
        prev = np.searchsorted(uniq, tgt[a])
        for k in range(a + 1, b):
            cur = np.searchsorted(uniq, tgt[k])
            step = cur - prev
            if step != 0 and step != 1:
                chunks += 1
            prev = cur
        out[s] = 1.0 - (chunks - 1.0) / (m_links - 1.0)


def fuzzy_reordering_scores(alignments: Alignments | Sequence[Sequence[tuple[int, int]]]):
    """Per-sentence fuzzy reordering score (Talbot et al., 2011); NaN without links.

    Links are sorted by source position, then target position, and every target
    position is replaced by its rank among the sentence's aligned target positions
    (unaligned words are skipped).  Two consecutive links are in the same chunk when the
    second one's target rank is equal to or one more than the first one's.  With M
    links and C chunks the score is ``1 − (C − 1)/(M − 1)``; 1.0 when M = 1.  Monotone
    alignments score 1, fully reversed ones 0.
    """
    al = alignments if isinstance(alignments, Alignments) else Alignments.from_lists(alignments)
    al = al._sorted()
    out = np.empty(len(al))
    _frs_kernel(al.offsets, al.src, al.tgt, out)
    return out


def reordering_score(alignments: Alignments | Sequence[Sequence[tuple[int, int]]]) -> dict:
    """Corpus fuzzy reordering score: mean over sentences that have at least one link."""
    scores = fuzzy_reordering_scores(alignments)
    ok = ~np.isnan(scores)
    return {
        "reordering": float(scores[ok].mean()) if ok.any() else None,
        "scored_sentences": int(ok.sum()),
        "sentences_without_links": int((~ok).sum()),
    }


# ---------------------------------------------------------------------------
# Language mode (multi-modality) estimator
# ---------------------------------------------------------------------------


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class LanguageModeEstimator:
    """Word-level language classifier p(l | y) and sentence language modes.

    Fit it on the real target sides of a multi-target corpus (e.g. en→{de, fr, es}): with
    p(y | l) = c_l(y) / N_l (word y's count over the token count of language l's side) and a
    uniform prior over languages, ``p(l | y) = p(y | l) / Σ_l' p(y | l')``.  A sentence's
    language distribution is the mean of p(l | y_t) over its tokens that were seen in
    fitting (unseen tokens are ignored; a sentence with none is "unknown").  Its mode is the
    arg-max language.
    """

    DOMINANT = 0.9
    """A sentence is in one language when that language's p(l | y) exceeds this."""

    def __init__(self) -> None:
        self.languages: list[str] = []
        self._dist: dict[str, np.ndarray] = {}

    def fit(self, corpora: Mapping[str, Iterable[Sequence[str]]]) -> LanguageModeEstimator:
        if len(corpora) < 2:
            raise ValueError("give at least two languages")
        self.languages = list(corpora)
        counts = {
            lang: Counter(tok for sent in sents for tok in sent) for lang, sents in corpora.items()
        }
        totals = np.array([max(1, sum(counts[lang].values())) for lang in self.languages], float)
        vocab = set().union(*counts.values())
        k = len(self.languages)
        dist: dict[str, np.ndarray] = {}
        for w in vocab:
            v = np.fromiter((counts[lang].get(w, 0) for lang in self.languages), float, k)
            v /= totals
            dist[w] = v / v.sum()
        self._dist = dist
        return self

    def distributions(self, sentences: Iterable[Sequence[str]]) -> np.ndarray:
        """(sentences with a known token, languages): each sentence's p(l | y)."""
        rows = [p for p in map(self.sentence_distribution, sentences) if p is not None]
        return np.array(rows).reshape(len(rows), len(self.languages))

    def word_distribution(self, word: str) -> np.ndarray | None:
        return self._dist.get(word)

    def sentence_distribution(self, tokens: Sequence[str]) -> np.ndarray | None:
        rows = [d for d in map(self._dist.get, tokens) if d is not None]
        if not rows:
            return None
        return np.mean(rows, axis=0)

    def report(self, sentences: Iterable[Sequence[str]]) -> dict:
        """Mode proportions and entropies for a corpus of tokenised target sentences.

        ``mode_proportions``: share of sentences (with a known distribution) per
        arg-max language; ``mode_entropy``: entropy (nats) of those proportions (0: one
        language, ln L: even spread); ``mean_sentence_entropy``: mean entropy of the
        per-sentence p(l | y) (language mixing inside sentences); ``mean_distribution``:
        the mean of p(l | y) over sentences; ``unknown_sentences``: sentences without
        a single known token; ``dominant_share``: share of sentences whose dominant language
        has p(l | y) > 0.9.
        """
        if not self.languages:
            raise ValueError("fit the estimator first")
        k = len(self.languages)
        modes = np.zeros(k)
        total = np.zeros(k)
        ent_sum = 0.0
        known = 0
        unknown = 0
        dominant = 0
        for sent in sentences:
            p = self.sentence_distribution(sent)
            if p is None:
                unknown += 1
                continue
            known += 1
            modes[int(np.argmax(p))] += 1
            total += p
            ent_sum += _entropy(p)
            dominant += int(p.max() > self.DOMINANT)
        props = modes / known if known else modes
        return {
            "languages": list(self.languages),
            "mode_proportions": dict(zip(self.languages, props.tolist(), strict=True)),
            "mode_entropy": _entropy(props) if known else None,
            "mean_sentence_entropy": ent_sum / known if known else None,
            "mean_distribution": dict(
                zip(self.languages, (total / known if known else total).tolist(), strict=True)
            ),
            "max_entropy": math.log(k),
            "dominant_share": dominant / known if known else None,
            "sentences": known,
            "unknown_sentences": unknown,
        }
