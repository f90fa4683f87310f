"""The Seq-Inter selection by sentence BLEU."""

from __future__ import annotations

import pytest

from textdistill.errors import UserError
from textdistill.metrics import sentence_bleu
from textdistill.seq2seq.generate import Hypothesis, select_by_sentence_bleu

REFS = ["the cat sat on the mat .", "a dog runs in the green park today ."]


def test_select_by_sentence_bleu():
    kbest = [
        [Hypothesis("a cat .", -0.1), Hypothesis("the cat sat on the mat .", -2.0),
         Hypothesis("the cat sat .", -0.5)],
        [("dogs run .", -0.2), ("a dog runs in the green park today .", -3.0)],
    ]
    assert select_by_sentence_bleu(kbest, REFS) == [REFS[0], REFS[1]]
    # Equal sentence BLEU: the higher model score wins, then the earlier rank.
    tie = [[("x y z", -3.0), ("z y x", -1.0), ("y x z", -1.0)]]
    assert sentence_bleu("x y z", "q") == sentence_bleu("z y x", "q")
    assert select_by_sentence_bleu(tie, ["q"]) == ["z y x"]
    assert select_by_sentence_bleu([[{"text": "b", "score": None}, "a"]], ["a"]) == ["a"]
    with pytest.raises(UserError, match="k-best list 0 is empty"):
        select_by_sentence_bleu([[]], ["a"])
    with pytest.raises(UserError, match="2 k-best lists but 1 references"):
        select_by_sentence_bleu(kbest, REFS[:1])
