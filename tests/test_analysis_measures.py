"""Complexity, faithfulness, reordering and language modes on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from textdistill.analysis.aligner import LexicalTable, fit_alignment
from textdistill.analysis.measures import (
    LanguageModeEstimator,
    complexity,
    faithfulness,
    fuzzy_reordering_scores,
    reordering_score,
    row_entropies,
)


def make_table(rows: dict[str, dict[str, float]], counts: dict[str, int] | None = None):
    """A LexicalTable from {x: {y: p}} (plus an empty null row)."""
    xs = list(rows)
    ys = sorted({y for r in rows.values() for y in r})
    indptr, indices, probs = [0], [], []
    for x in xs:
        for y, p in rows[x].items():
            indices.append(ys.index(y))
            probs.append(p)
        indptr.append(len(indices))
    indptr.append(len(indices))  # null row
    cnt = np.array([(counts or {}).get(x, 1) for x in xs])
    return LexicalTable(
        np.array(indptr), np.array(indices, dtype=np.int32), np.array(probs), xs, ys, cnt
    )


def synthetic(k: int, n_sent=2000, vocab=20, seed=0):
    """Each source word x_v is translated uniformly into one of k words y_v_0..y_v_{k-1}."""
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n_sent):
        words = rng.integers(0, vocab, size=int(rng.integers(4, 9)))
        src.append([f"x{w}" for w in words])
        tgt.append([f"y{w}_{rng.integers(0, k)}" for w in words])
    return src, tgt


# --- complexity -------------------------------------------------------------------------


def test_complexity_of_hand_made_table():
    table = make_table(
        {"a": {"p": 1.0}, "b": {"q": 0.5, "r": 0.5}, "c": {"s": 0.25, "t": 0.25, "u": 0.5}},
        counts={"a": 1, "b": 3, "c": 0},  # "c" never occurs: left out
    )
    ent = row_entropies(table)
    assert ent[0] == 0.0 and math.isclose(ent[1], math.log(2))
    c = complexity(table)
    assert c["source_types"] == 2
    assert math.isclose(c["complexity"], math.log(2) / 2)
    assert math.isclose(c["complexity_token_weighted"], 3 * math.log(2) / 4)


def test_deterministic_mapping_has_zero_complexity():
    src, tgt = synthetic(1)
    for vb in (False, True):
        c = complexity(fit_alignment(src, tgt, variational_bayes=vb).lexical_table())
        assert c["complexity"] < 1e-3 and c["source_types"] == 20


@pytest.mark.parametrize("k", [2, 3, 5])
def test_uniform_k_translations_give_ln_k(k):
    src, tgt = synthetic(k)
    c = complexity(fit_alignment(src, tgt).lexical_table())
    assert abs(c["complexity"] - math.log(k)) < 0.02
    assert abs(c["complexity_token_weighted"] - math.log(k)) < 0.02


# --- faithfulness -----------------------------------------------------------------------


def test_corpus_compared_with_itself_is_faithful():
    src, tgt = synthetic(3)
    a = fit_alignment(src, tgt).lexical_table()
    b = fit_alignment(src, tgt).lexical_table()
    f = faithfulness(a, b)
    assert f["faithfulness"] < 1e-3 and f["source_types"] == 20
    assert faithfulness(a, a)["faithfulness"] < 1e-3


def test_simplified_corpus_is_less_faithful_and_less_complex():
    src, real = synthetic(3)
    distilled = [[y.split("_")[0] + "_0" for y in t] for t in real]  # one translation each
    rt = fit_alignment(src, real).lexical_table()
    dt = fit_alignment(src, distilled).lexical_table()
    assert complexity(dt)["complexity"] < 1e-3
    assert abs(complexity(rt)["complexity"] - math.log(3)) < 0.02
    # p_real spreads 1/3 over three words, p_d keeps one of them and has (smoothed) ε for
    # the other two: KL = 1/3 ln(1/3) + 2/3 ln(1/(3ε)) up to O(ε).
    eps = 1e-6
    f = faithfulness(rt, dt, epsilon=eps)["faithfulness"]
    assert abs(f - (math.log(1 / 3) / 3 + 2 / 3 * math.log(1 / (3 * eps)))) < 0.05
    # The other direction (is the real data "faithful" to the distilled?) is ln 3.
    assert abs(faithfulness(dt, rt, epsilon=eps)["faithfulness"] - math.log(3)) < 0.05


def test_faithfulness_smoothing_rule():
    eps = 1e-3
    real = make_table({"a": {"p": 0.5, "q": 0.5}, "b": {"r": 1.0}})
    dist = make_table({"a": {"p": 1.0}, "c": {"r": 1.0}})
    f = faithfulness(real, dist, epsilon=eps)
    # Only "a" is in both tables; Y_a = {p, q}.
    qp, qq = (1 + eps) / (1 + 2 * eps), eps / (1 + 2 * eps)
    expected = 0.5 * math.log(0.5 / qp) + 0.5 * math.log(0.5 / qq)
    assert f["source_types"] == 1
    assert math.isclose(f["faithfulness"], expected, rel_tol=1e-12)
    with pytest.raises(ValueError):
        faithfulness(real, dist, epsilon=0)


# --- fuzzy reordering score -------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "score"),
    [
        ([(0, 0), (1, 1), (2, 2), (3, 3)], 1.0),  # monotone
        ([(0, 3), (1, 2), (2, 1), (3, 0)], 0.0),  # reversed: the minimum
        ([(0, 0), (1, 2), (3, 5)], 1.0),  # unaligned words in between do not break chunks
        ([(0, 0), (1, 0), (2, 1)], 1.0),  # many-to-one, monotone
        ([(0, 0), (0, 1), (1, 2)], 1.0),  # one-to-many, monotone
        ([(0, 1), (1, 2), (2, 0)], 0.5),  # chunks [1 2] [0]: 1 - (2-1)/(3-1)
        ([(0, 2), (1, 3), (2, 0), (3, 1)], 1 - 1 / 3),  # two chunks of two
        ([(4, 7)], 1.0),  # a single link
    ],
)
def test_fuzzy_reordering_score(links, score):
    assert fuzzy_reordering_scores([links])[0] == pytest.approx(score)


def test_reordering_corpus_mean_skips_sentences_without_links():
    scores = fuzzy_reordering_scores([[(0, 0), (1, 1)], [], [(0, 1), (1, 0)]])
    assert scores[0] == 1.0 and math.isnan(scores[1]) and scores[2] == 0.0
    r = reordering_score([[(0, 0), (1, 1)], [], [(0, 1), (1, 0)]])
    assert r == {"reordering": 0.5, "scored_sentences": 2, "sentences_without_links": 1}
    assert reordering_score([[]])["reordering"] is None


def test_reordering_of_aligner_output_tracks_word_order():
    rng = np.random.default_rng(3)
    src = [[f"x{w}" for w in rng.integers(0, 30, size=6)] for _ in range(800)]
    mono = [[f"y{w[1:]}" for w in s] for s in src]
    rev = [list(reversed(t)) for t in mono]
    r_mono = reordering_score(fit_alignment(src, mono).align())["reordering"]
    r_rev = reordering_score(fit_alignment(src, rev, diagonal=False).align())["reordering"]
    assert r_mono > 0.99 and r_rev < 0.1


# --- language modes ---------------------------------------------------------------------


def test_language_mode_estimator():
    est = LanguageModeEstimator().fit(
        {
            "de": [["der", "hund", "bellt"], ["die", "katze", "schläft"]],
            "fr": [["le", "chien", "aboie"], ["le", "chat", "dort"]],
            "es": [["el", "perro", "ladra"], ["el", "gato", "duerme"]],
        }
    )
    assert est.word_distribution("hund").tolist() == [1.0, 0.0, 0.0]
    rep = est.report([["der", "hund"], ["le", "chat"], ["el", "gato"], ["der", "chat"], ["???"]])
    assert rep["sentences"] == 4 and rep["unknown_sentences"] == 1
    assert rep["mode_proportions"]["de"] == pytest.approx(0.5)
    assert rep["mode_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    # Only the mixed sentence "der chat" has within-sentence entropy ln 2.
    assert rep["mean_sentence_entropy"] == pytest.approx(math.log(2) / 4)
    one = est.report([["der", "hund"], ["die", "katze"]])
    assert one["mode_entropy"] == 0.0 and one["mode_proportions"]["de"] == 1.0
    assert one["dominant_share"] == 1.0 and rep["dominant_share"] == pytest.approx(3 / 4)


def test_language_mode_estimator_uses_a_uniform_prior_over_languages():
    # "x" occurs once in each side, but the German side has 4 tokens and the French 8:
    # p(x|de) = 1/4, p(x|fr) = 1/8, so p(de|x) = (1/4) / (1/4 + 1/8) = 2/3
    est = LanguageModeEstimator().fit({"de": [["x", "a", "b", "c"]],
                                       "fr": [["x", "d", "e", "f", "g", "h", "i", "j"]]})
    assert est.word_distribution("x").tolist() == pytest.approx([2 / 3, 1 / 3])
    dist = est.distributions([["x", "a"], ["???"], ["d"]])
    assert dist.shape == (2, 2)
    assert dist[0].tolist() == pytest.approx([(2 / 3 + 1) / 2, (1 / 3) / 2])
    assert dist[1].tolist() == [0.0, 1.0]
    rep = est.report([["x", "a"], ["d"], ["x"]])
    assert rep["dominant_share"] == pytest.approx(1 / 3)  # only "d" (1.0); 0.833, 0.667 not
