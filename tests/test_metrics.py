"""The metric functions: classification scores, corpus BLEU/chrF and sentence BLEU."""

from __future__ import annotations

import pytest
import sacrebleu
from sklearn.metrics import f1_score, matthews_corrcoef

from textdistill.errors import UserError
from textdistill.metrics import classification_metrics, corpus_bleu_chrf, sentence_bleu

REFS = ["the cat sat on the mat .", "a dog runs in the green park today ."]
HYPS = ["the cat sat on a mat .", "a dog runs in the park ."]


def test_classification_metrics():
    y_true, y_pred = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    got = classification_metrics(y_true, y_pred)
    assert got == {"accuracy": pytest.approx(0.6),
                   "macro_f1": pytest.approx(f1_score(y_true, y_pred, average="macro")),
                   "mcc": pytest.approx(matthews_corrcoef(y_true, y_pred))}
    assert all(type(v) is float for v in got.values())


def test_corpus_bleu_chrf():
    assert corpus_bleu_chrf(REFS, REFS) == {"bleu": pytest.approx(100.0),
                                            "chrf": pytest.approx(100.0)}
    got = corpus_bleu_chrf(HYPS, REFS)
    assert got == {"bleu": sacrebleu.corpus_bleu(HYPS, [REFS]).score,
                   "chrf": sacrebleu.corpus_chrf(HYPS, [REFS]).score}
    assert 0 < got["bleu"] < 100
    with pytest.raises(UserError, match="1 hypotheses but 2 references"):
        corpus_bleu_chrf(HYPS[:1], REFS)


def test_corpus_bleu_chrf_with_signatures():
    """What ``analyze`` reports: the same scores plus sacrebleu's signatures."""
    got = corpus_bleu_chrf(HYPS, REFS, signatures=True)
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    assert got == {"bleu": bleu.corpus_score(HYPS, [REFS]).score,
                   "chrf": chrf.corpus_score(HYPS, [REFS]).score,
                   "bleu_signature": str(bleu.get_signature()),
                   "chrf_signature": str(chrf.get_signature())}
    assert "nrefs:1" in got["bleu_signature"]


def test_sentence_bleu():
    assert sentence_bleu(REFS[0], REFS[0]) == pytest.approx(100.0)
    assert sentence_bleu(HYPS[1], REFS[1]) == sacrebleu.sentence_bleu(HYPS[1], [REFS[1]]).score
    assert 0 < sentence_bleu(HYPS[1], REFS[1]) < 100
