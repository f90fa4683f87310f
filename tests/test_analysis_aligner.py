"""The fast_align-model word aligner: recovery of known links, symmetrisation, I/O."""

from __future__ import annotations

import math
import random
import shutil
import subprocess

import numpy as np
import pytest

from textdistill.analysis.aligner import (
    Alignments,
    EncodedCorpus,
    encode,
    fit_alignment,
    parse_pharaoh,
    read_pharaoh,
    symmetrize,
)
from textdistill.errors import UserError


def permuted_corpus(n_sent=1500, vocab=40, seed=0):
    """Word-for-word translation (x_k -> y_k) with adjacent words 1 and 2 swapped.

    Returns source, target and the true (source i, target j) links per sentence.
    """
    rng = np.random.default_rng(seed)
    src, tgt, gold = [], [], []
    for _ in range(n_sent):
        n = int(rng.integers(3, 10))
        words = rng.integers(0, vocab, size=n)
        perm = list(range(n))  # perm[j] = source position of target word j
        perm[1], perm[2] = perm[2], perm[1]
        src.append([f"x{w}" for w in words])
        tgt.append([f"y{words[i]}" for i in perm])
        gold.append(sorted((i, j) for j, i in enumerate(perm)))
    return src, tgt, gold


def precision_recall(pred, gold):
    p = sum(len(a) for a in pred)
    g = sum(len(b) for b in gold)
    hit = sum(len(set(a) & set(b)) for a, b in zip(pred, gold, strict=True))
    return hit / p, hit / g


@pytest.fixture(scope="module")
def corpus():
    return permuted_corpus()


@pytest.fixture(scope="module")
def models(corpus):
    src, tgt, _ = corpus
    return (fit_alignment(src, tgt, variational_bayes=False),
            fit_alignment(src, tgt, reverse=True, variational_bayes=False))


def test_forward_recovers_true_links(corpus, models):
    _, _, gold = corpus
    prec, rec = precision_recall(list(models[0].align()), gold)
    assert prec > 0.98 and rec > 0.98


def test_reverse_recovers_true_links_in_source_target_order(corpus, models):
    _, _, gold = corpus
    prec, rec = precision_recall(list(models[1].align()), gold)
    assert prec > 0.98 and rec > 0.98


def test_symmetrized_links(corpus, models):
    _, _, gold = corpus
    for method in ("grow-diag-final-and", "intersection"):
        sym = symmetrize(models[0].align(), models[1].align(), method)
        prec, rec = precision_recall(list(sym), gold)
        assert prec > 0.98 and rec > 0.97, method


def test_lexical_table_is_full_and_normalised(corpus, models):
    src, tgt, _ = corpus
    table = models[0].lexical_table()
    cooc = {(x, y) for s, t in zip(src, tgt, strict=True) for x in s for y in t}
    n_real = table.indptr[table.null_row]
    assert n_real == len(cooc)  # every co-occurring pair, nothing pruned, nothing more
    assert table.indptr[-1] - n_real == len({y for t in tgt for y in t})  # null row
    sums = table.row_sums()
    np.testing.assert_allclose(sums, 1.0, atol=1e-9)
    row = table.row("x3")
    assert max(row, key=row.get) == "y3" and row["y3"] > 0.95
    assert set(table.row(None)) == {y for t in tgt for y in t}


def test_variational_bayes_rows_are_subnormalised_and_sharper(corpus):
    src, tgt, _ = corpus
    em = fit_alignment(src, tgt, iterations=3, variational_bayes=False).lexical_table()
    vb = fit_alignment(src, tgt, iterations=3, variational_bayes=True, alpha=0.01).lexical_table()
    vb_sums = vb.row_sums()
    assert np.all(vb_sums < 1.0 + 1e-12)
    assert vb.row("x5")["y5"] >= em.row("x5")["y5"] - 1e-6
    norm = vb.normalized()
    np.testing.assert_allclose(norm.row_sums(), 1.0, atol=1e-12)


def test_tension_is_optimised_within_bounds(corpus):
    src, tgt, _ = corpus
    fixed = fit_alignment(src, tgt, iterations=3, optimize_tension=False, tension=4.0)
    tuned = fit_alignment(src, tgt, iterations=3, optimize_tension=True, tension=4.0)
    assert fixed.tension == 4.0
    assert tuned.tension != 4.0 and 0.1 <= tuned.tension <= 14.0
    assert tuned.history[1]["tension"] == 4.0  # first pass never moves λ (as fast_align)


def test_zero_iterations_follow_the_diagonal_prior():
    src = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    tgt = [["p", "q", "r", "s"], ["t", "u", "v", "w"]]
    model = fit_alignment(src, tgt, iterations=0)
    assert list(model.align()) == [[(i, i) for i in range(4)]] * 2


def test_model1_without_diagonal_and_without_null(corpus):
    src, tgt, _ = corpus
    model = fit_alignment(src[:600], tgt[:600], diagonal=False, use_null=False)
    # Without a positional prior repeated words are ambiguous: check word translations.
    links = [(s[i], t[j]) for s, t, al in zip(src, tgt, model.align(), strict=False) for i, j in al]
    assert sum(x[1:] == y[1:] for x, y in links) / len(links) > 0.98
    assert model.lexical_table().indptr[-1] == model.lexical_table().indptr[-2]  # empty null


def test_integer_ids_and_thread_count_give_same_result(corpus):
    src, tgt, _ = corpus
    s_enc, t_enc = encode(src[:300]), encode(tgt[:300])
    a = fit_alignment(s_enc, t_enc, iterations=3)
    b = fit_alignment(
        [list(s) for s in _split(s_enc)],
        [list(t) for t in _split(t_enc)],
        iterations=3,
        num_threads=1,
    )
    assert list(a.align()) == list(b.align())
    np.testing.assert_allclose(a.table.probs, b.table.probs, rtol=1e-9, atol=1e-12)
    assert b.table.cond_vocab is None


def _split(enc: EncodedCorpus):
    return [enc.sentence(k).tolist() for k in range(len(enc))]


def fast_align_z(j, m, n, lam):
    """fast_align's ComputeZ(j, m, n) as its C++ evaluates it (unsigned counts wrap)."""
    low = int(j * n / m)
    r = math.exp(-lam / n)
    above = (n - low) % 2**32
    z = 0.0
    if above:
        z += math.exp(-lam * abs((low + 1) / n - j / m)) * (1 - r**above) / (1 - r)
    if low:
        z += math.exp(-lam * abs(low / n - j / m)) * (1 - r**low) / (1 - r)
    return z


def reference_fit(src, tgt, iterations, vb, alpha=0.01, p0=0.08, lam=4.0, optimize=True,
                  fast_align=False):
    """A literal per-token implementation of the model and the estimation rules; with
    ``fast_align``, of fast_align's tension update (empirical feature at the 0-based target
    index, model feature Σ_j Σ_i h·e^(λh) / ComputeZ(j, n, m) per sentence pair)."""
    from scipy.special import digamma

    def prior(j, m, n, lam):  # j is 0-based; returns per-source-position probabilities
        h = [-abs((i + 1) / n - (j + 1) / m) for i in range(n)]
        e = [math.exp(lam * x) for x in h]
        z = sum(e)
        return [(1 - p0) * x / z for x in e], h

    t = {}
    for s, f in zip(src, tgt, strict=True):
        for x in [None, *s]:
            for y in f:
                t[(x, y)] = 1.0
    toks = sum(len(f) for f in tgt)
    for it in range(iterations):
        counts = dict.fromkeys(t, 0.0)
        emp, weights = 0.0, []
        for s, f in zip(src, tgt, strict=True):
            n, m = len(s), len(f)
            for j, y in enumerate(f):
                a, h = prior(j, m, n, lam)
                pn = t[(None, y)] * p0
                ps = [t[(x, y)] * a[i] for i, x in enumerate(s)]
                tot = pn + sum(ps)
                counts[(None, y)] += pn / tot
                for i, x in enumerate(s):
                    counts[(x, y)] += ps[i] / tot
                    emp += ps[i] / tot * (-abs((i + 1) / n - j / m) if fast_align else h[i])
                weights.append((j, m, n, 1 - pn / tot))
        if optimize and it > 0:
            for _ in range(8):
                mod = 0.0
                for j, m, n, w in weights:
                    if fast_align:
                        hs = [-abs((i + 1) / n - (j + 1) / m) for i in range(n)]
                        mod += sum(h * math.exp(lam * h) for h in hs) / fast_align_z(
                            j + 1, n, m, lam)
                        continue
                    a, h = prior(j, m, n, lam)
                    mod += w * sum(x * y for x, y in zip(a, h, strict=True)) / (1 - p0)
                lam = min(14.0, max(0.1, lam + (emp / toks - mod / toks) * 20.0))
        rows = {}
        for (x, y), c in counts.items():
            rows.setdefault(x, []).append((y, c))
        for x, row in rows.items():
            tot = sum(c for _, c in row)
            for y, c in row:
                if vb:
                    t[(x, y)] = math.exp(digamma(c + alpha) - digamma(tot + alpha * len(row)))
                else:
                    t[(x, y)] = c / tot
    links = []
    for s, f in zip(src, tgt, strict=True):
        sent = []
        for j, y in enumerate(f):
            a, _ = prior(j, len(f), len(s), lam)
            best, best_p = -1, t[(None, y)] * p0
            for i, x in enumerate(s):
                if t[(x, y)] * a[i] > best_p:
                    best, best_p = i, t[(x, y)] * a[i]
            if best >= 0:
                sent.append((best, j))
        links.append(sorted(sent))
    return t, lam, links


@pytest.mark.parametrize("vb", [False, True])
def test_matches_literal_reference_implementation(corpus, vb):
    pytest.importorskip("scipy")
    src, tgt, _ = corpus
    src, tgt = src[:60], tgt[:60]
    t, lam, links = reference_fit(src, tgt, iterations=3, vb=vb)
    model = fit_alignment(src, tgt, iterations=3, variational_bayes=vb)
    assert model.tension == pytest.approx(lam, rel=1e-9)
    assert list(model.align()) == links
    table = model.lexical_table()
    got = {
        (x, y): p for x in sorted(set(w for s in src for w in s)) for y, p in table.row(x).items()
    }
    got.update({(None, y): p for y, p in table.row(None).items()})
    assert got.keys() == t.keys()
    for key, p in t.items():
        assert got[key] == pytest.approx(p, rel=1e-9, abs=1e-15), key


def test_fast_align_z_is_the_exact_sum_where_its_counts_do_not_wrap():
    from textdistill.analysis.aligner import _fast_align_z

    for j, m, n, lam in [(1, 3, 5, 4.0), (3, 3, 7, 0.5), (2, 5, 2, 9.0), (4, 4, 1, 3.0)]:
        exact = sum(math.exp(-lam * abs(i / n - j / m)) for i in range(1, n + 1))
        assert _fast_align_z(j, m, n, lam) == pytest.approx(exact, rel=1e-12)
        assert fast_align_z(j, m, n, lam) == pytest.approx(exact, rel=1e-12)
    # j > m (fast_align's swapped lengths): the count above the diagonal wraps, r**count is 0
    for j, m, n, lam in [(5, 2, 3, 4.0), (7, 3, 4, 1.5)]:
        low = int(j * n / m)
        r = math.exp(-lam / n)
        expected = (math.exp(-lam * abs((low + 1) / n - j / m)) / (1 - r)
                    + math.exp(-lam * abs(low / n - j / m)) * (1 - r**low) / (1 - r))
        assert _fast_align_z(j, m, n, lam) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("vb", [False, True])
def test_fast_align_compatible_mode_matches_a_literal_fast_align_update(vb):
    pytest.importorskip("scipy")
    rng = random.Random(3)
    words = [f"w{k}" for k in range(12)]
    src = [[rng.choice(words) for _ in range(rng.randint(1, 7))] for _ in range(80)]
    tgt = [[w.upper() for w in rng.sample(s, len(s))] + [rng.choice(words).upper()
            for _ in range(rng.randint(0, 4))] for s in src]  # longer and shorter targets
    assert any(len(t) > len(s) for s, t in zip(src, tgt, strict=True))
    t, lam, links = reference_fit(src, tgt, iterations=3, vb=vb, fast_align=True)
    model = fit_alignment(src, tgt, iterations=4, variational_bayes=vb,
                          fast_align_compatible=True)  # -I 4: 3 EM passes, then aligning
    assert len([h for h in model.history if "iteration" in h]) == 3
    assert model.tension == pytest.approx(lam, rel=1e-9)
    assert list(model.align()) == links
    for (x, y), p in t.items():  # (digamma: scipy's against the aligner's own series)
        assert model.lexical_table().row(x)[y] == pytest.approx(p, rel=1e-7, abs=1e-15)
    default = fit_alignment(src, tgt, iterations=3, variational_bayes=vb)
    assert default.tension != pytest.approx(lam, rel=1e-6)  # the consistent gradient differs
    with pytest.raises(UserError, match=r"iterations must be >= 1 \(fast_align -I\)"):
        fit_alignment(src, tgt, iterations=0, fast_align_compatible=True)


def test_encode_builds_csr_and_shares_vocab():
    vocab: dict[str, int] = {}
    a = encode([["a", "b"], [], ["b", "c", "a"]], vocab)
    b = encode([["c", "d"]], vocab)
    assert a.ids.tolist() == [0, 1, 1, 2, 0]
    assert a.offsets.tolist() == [0, 2, 2, 5]
    assert b.ids.tolist() == [2, 3] and b.vocab == ["a", "b", "c", "d"]
    assert a.tokens(2) == ["b", "c", "a"]
    assert a.select(np.array([True, False, True])).offsets.tolist() == [0, 2, 5]


@pytest.mark.parametrize(
    ("src", "tgt", "message"),
    [
        ([["a"]], [["x"], ["y"]], "source has 1 sentences but target has 2"),
        ([], [], "empty corpus"),
        ([["a"], []], [["x"], ["y"]], "1 source sentence(s) are empty (first: sentence 2)"),
    ],
)
def test_bad_corpora_raise_user_errors(src, tgt, message):
    with pytest.raises(UserError) as err:
        fit_alignment(src, tgt)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"p0": 1.0}, {"tension": 0.0}, {"iterations": -1}, {"variational_bayes": True, "alpha": 0.0}],
)
def test_bad_parameters_raise_user_errors(kwargs):
    with pytest.raises(UserError):
        fit_alignment([["a"]], [["b"]], **kwargs)


# --- symmetrisation on a hand-made example ---------------------------------------------
# 5 x 5 sentence pair.  Forward (each target word has <= 1 source word):
#   (0,0) (1,1) (2,2) (4,3);  reverse (each source word has <= 1 target word):
#   (0,0) (1,2) (2,2) (4,4).
# intersection: (0,0) (2,2).
# grow-diag: (0,0) reaches its diagonal neighbour (1,1) (source 1 unaligned); (1,2) is in
#   the union and next to (1,1) and (2,2) but source 1 and target 2 are both aligned by
#   then, so it stays out; (4,3)/(4,4) touch no alignment point.
# final-and: forward (4,3) joins (source 4 and target 3 both unaligned); reverse (4,4)
#   does not (source 4 is now aligned) -- plain grow-diag-final does add it.
FWD = [[(0, 0), (1, 1), (2, 2), (4, 3)]]
REV = [[(0, 0), (1, 2), (2, 2), (4, 4)]]
EXPECTED = {
    "intersection": [(0, 0), (2, 2)],
    "union": [(0, 0), (1, 1), (1, 2), (2, 2), (4, 3), (4, 4)],
    "grow-diag": [(0, 0), (1, 1), (2, 2)],
    "grow-diag-final-and": [(0, 0), (1, 1), (2, 2), (4, 3)],
    "grow-diag-final": [(0, 0), (1, 1), (2, 2), (4, 3), (4, 4)],
}


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_symmetrize_hand_computed(method):
    assert list(symmetrize(FWD, REV, method)) == [EXPECTED[method]]
    # Alignments objects work the same as plain lists.
    fa, ra = Alignments.from_lists(FWD), Alignments.from_lists(REV)
    assert symmetrize(fa, ra, method) == [EXPECTED[method]]


def test_grow_diag_repeats_until_nothing_is_added():
    # A chain of diagonal neighbours grown from one intersection point.
    fwd = [[(0, 0), (1, 1), (2, 2), (3, 3)]]
    rev = [[(0, 0)]]
    assert list(symmetrize(fwd, rev, "grow-diag")) == [[(0, 0), (1, 1), (2, 2), (3, 3)]]
    assert list(symmetrize(fwd, rev, "intersection")) == [[(0, 0)]]


def reference_symmetrize(fwd, rev, method):
    """Straight from the textbook pseudo-code, on Python sets (one sentence)."""
    f, r = set(fwd), set(rev)
    union = f | r
    al = set(f & r) if method != "union" else set(union)
    if method in ("intersection", "union"):
        return sorted(al)
    n = max([i for i, _ in union], default=-1) + 1
    m = max([j for _, j in union], default=-1) + 1
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    changed = True
    while changed:
        changed = False
        for i in range(n):
            for j in range(m):
                if (i, j) not in al:
                    continue
                for di, dj in neighbours:
                    k, q = i + di, j + dj
                    src_free = all(a != k for a, _ in al)
                    tgt_free = all(b != q for _, b in al)
                    if (k, q) in union and (k, q) not in al and (src_free or tgt_free):
                        al.add((k, q))
                        changed = True
    if method != "grow-diag":
        for links in (sorted(f), sorted(r)):
            for i, j in links:
                src_free = all(a != i for a, _ in al)
                tgt_free = all(b != j for _, b in al)
                ok = src_free and tgt_free if method.endswith("-and") else src_free or tgt_free
                if ok and (i, j) not in al:
                    al.add((i, j))
    return sorted(al)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_symmetrize_matches_reference_on_random_links(method):
    rng = np.random.default_rng(7)
    fwd, rev = [], []
    for _ in range(200):
        n, m = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        # forward: each target word gets at most one source word; reverse the other way.
        fwd.append([(int(rng.integers(0, n)), j) for j in range(m) if rng.random() < 0.8])
        rev.append([(i, int(rng.integers(0, m))) for i in range(n) if rng.random() < 0.8])
    got = list(symmetrize(fwd, rev, method))
    want = [reference_symmetrize(f, r, method) for f, r in zip(fwd, rev, strict=True)]
    assert got == want


def test_prior_normaliser_closed_form_matches_direct_sum():
    from textdistill.analysis.aligner import _prior_moments, _prior_row

    rng = np.random.default_rng(1)
    buf = np.empty(400)
    for _ in range(2000):
        m, n = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        j, lam = int(rng.integers(0, m)), float(rng.uniform(0.1, 14.0))
        z, hz = _prior_moments(j, m, n, lam)
        z2, hz2 = _prior_row(n, j, m, lam, buf)
        assert z == pytest.approx(z2, rel=1e-10) and hz == pytest.approx(hz2, rel=1e-9, abs=1e-12)


def test_symmetrize_errors():
    with pytest.raises(UserError, match="unknown symmetrization"):
        symmetrize(FWD, REV, "grow")
    with pytest.raises(UserError, match="forward has 1 sentences but reverse has 2"):
        symmetrize(FWD, REV + REV)


# --- Pharaoh format ----------------------------------------------------------------------


def test_pharaoh_round_trip(tmp_path):
    links = [[(0, 0), (2, 1), (1, 2)], [], [(3, 0)]]
    al = Alignments.from_lists(links)
    assert al.to_pharaoh() == ["0-0 1-2 2-1", "", "3-0"]
    path = tmp_path / "out.align"
    al.write(path)
    assert path.read_text() == "0-0 1-2 2-1\n\n3-0\n"
    assert read_pharaoh(path) == al
    assert al.transpose()[0] == [(0, 0), (1, 2), (2, 1)]
    with pytest.raises(UserError, match="line 1: '0:1' is not an i-j alignment link"):
        parse_pharaoh(["0:1"])


def test_model_writes_pharaoh_and_full_lexical_table(tmp_path, corpus, models):
    fwd = models[0]
    fwd.align().write(tmp_path / "fwd.align")
    lines = (tmp_path / "fwd.align").read_text().splitlines()
    assert len(lines) == len(corpus[0])
    assert all(all("-" in item for item in line.split()) for line in lines)
    table = fwd.lexical_table()
    table.write(tmp_path / "lex.tsv")
    rows = (tmp_path / "lex.tsv").read_text().splitlines()
    assert len(rows) == table.nnz
    x, y, p = rows[0].split("\t")
    assert math.isclose(table.row(x)[y], float(p))
    assert any(r.startswith("<eps>\t") for r in rows)
    table.write(tmp_path / "lex.log.tsv", log=True)
    first = (tmp_path / "lex.log.tsv").read_text().splitlines()[0].split("\t")
    assert math.isclose(math.exp(float(first[2])), float(p))


# --- optional cross-check with eflomal (GPL; only when installed) ------------------------


@pytest.mark.skipif(shutil.which("eflomal-align") is None, reason="eflomal is not installed")
def test_agrees_with_eflomal_on_easy_data(tmp_path, corpus, models):
    src, tgt, _ = corpus
    (tmp_path / "s").write_text("".join(" ".join(s) + "\n" for s in src))
    (tmp_path / "t").write_text("".join(" ".join(t) + "\n" for t in tgt))
    subprocess.run(
        [
            "eflomal-align",
            "-s",
            tmp_path / "s",
            "-t",
            tmp_path / "t",
            "-f",
            tmp_path / "f",
            "-r",
            tmp_path / "r",
        ],
        check=True,
        capture_output=True,
    )
    theirs = read_pharaoh(tmp_path / "f")
    prec, _ = precision_recall(list(models[0].align()), list(theirs))
    assert prec > 0.95
