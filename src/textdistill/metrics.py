"""Pure metric functions: classification scores (scikit-learn), BLEU and chrF (sacrebleu)."""

from __future__ import annotations

from collections.abc import Sequence

from textdistill.errors import UserError


def classification_metrics(y_true: list[int], y_pred: list[int]) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation (scikit-learn)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }


def corpus_bleu_chrf(hypotheses: Sequence[str], references: Sequence[str], *,
                     signatures: bool = False) -> dict:
    """Corpus BLEU and chrF (sacrebleu defaults) of detokenized hypotheses: ``bleu``, ``chrf``
    and, with ``signatures``, sacrebleu's ``bleu_signature`` and ``chrf_signature``."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    hyps, refs = list(hypotheses), [list(references)]
    scores: dict = {"bleu": float(bleu.corpus_score(hyps, refs).score),
                    "chrf": float(chrf.corpus_score(hyps, refs).score)}
    if signatures:
        scores.update(bleu_signature=str(bleu.get_signature()),
                      chrf_signature=str(chrf.get_signature()))
    return scores


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """Smoothed sentence BLEU (sacrebleu's ``sentence_bleu``, exponential smoothing)."""
    import sacrebleu

    return sacrebleu.sentence_bleu(hypothesis, [reference]).score
