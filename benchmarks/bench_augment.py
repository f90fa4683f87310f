"""Masked-LM candidates of TinyBERT's augmentation: the naive loop against the batched path.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_augment.py [--sentences 200]
        [--mlm FOLDER] [--candidates 15] [--batch-size 64] [--precision fp32 auto]

On the first N rotten-tomatoes training snippets, every word that gets masked-LM candidates
(alphabetic, not a stopword, one WordPiece) is masked in a copy of its sentence. Per precision
(``auto``: bf16 where the CPU has it; the encoder's weights cast once, the output layer in
fp32, as ``augment`` runs), both paths compute the K candidates of every copy with the same
model: ``mlm_candidates_naive`` (one forward pass per word, logits at every position) and
``mlm_candidates`` (``batch_size`` copies of one length per pass, the output layer at the
masked positions only); their candidates must be equal, and each precision's are compared with
fp32's (mean shared candidates out of K). The baseline is TinyBERT's own loop
(``data_augmentation.py``) as it runs: fp32, one pass per word over ``[CLS] masked sentence
[SEP] sentence [SEP]`` (the sentence again as a second segment), logits at every position,
autograd on (the script calls the model outside ``no_grad``); its candidates differ from ours
(the second segment), so only its time is compared. The model is ``--mlm`` or
all-MiniLM-L6-v2 with a new head (the time does not depend on the head's weights).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from textdistill.augment import (
    MLM,
    CandidateVocabulary,
    InferenceMLM,
    WordSplitter,
    masked_copy,
    mlm_candidates,
    mlm_candidates_naive,
)
from textdistill.config import DataConfig
from textdistill.data.corpora import load_classification
from textdistill.models.mlm import load_mlm
from textdistill.precision import resolve_precision


def original_loop(model, copies, k: int) -> None:
    """The cost of TinyBERT's script: one fp32 pass per masked word over the masked sentence
    and the sentence itself as a second segment, logits at every position, autograd on."""
    device = next(model.parameters()).device
    for copy in copies:
        plain = list(copy.ids[1:])
        plain[copy.position - 1] = copy.word_id
        ids = torch.tensor([list(copy.ids) + plain], device=device)
        segments = torch.tensor([[0] * len(copy.ids) + [1] * len(plain)], device=device)
        logits = model(input_ids=ids, token_type_ids=segments).logits
        logits[0, copy.position].argsort(descending=True)[:k].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--mlm", default="minilm")
    parser.add_argument("--candidates", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", nargs="+", default=["fp32", "auto"])
    args = parser.parse_args()

    torch.manual_seed(0)
    model, tokenizer, _ = load_mlm(args.mlm)
    model.eval()
    train = load_classification(DataConfig(corpus="rotten-tomatoes")).split("train")
    texts = [e.text for e in train[:args.sentences]]
    split = WordSplitter(tokenizer)
    copies = []
    for text in texts:
        words = split(text)
        copies += [masked_copy(words, j, tokenizer, args.max_length)
                   for j, w in enumerate(words) if w.source == MLM]
    vocab = CandidateVocabulary(tokenizer, model.config.vocab_size)
    tokens = sum(len(c.ids) for c in copies)
    print(f"{len(texts)} sentences, {len(copies)} masked words ({tokens / len(copies):.1f} "
          f"tokens per masked copy), K = {args.candidates}, batch size {args.batch_size}; "
          f"{torch.get_num_threads()} torch thread(s), {platform.processor() or 'cpu'}")
    original_loop(model, copies[:2], args.candidates)  # warm up
    start = time.perf_counter()
    original_loop(model, copies, args.candidates)
    original_s = time.perf_counter() - start
    print(f"TinyBERT's loop (fp32): {original_s:.2f} s ({len(copies) / original_s:.1f} words/s)")
    reference = None
    for name in args.precision:
        precision = resolve_precision(name)
        mlm = InferenceMLM(model, precision)
        mlm_candidates_naive(mlm, vocab, copies[:2], args.candidates)  # warm up
        mlm_candidates(mlm, vocab, copies[:2], args.candidates, 2)
        start = time.perf_counter()
        naive = mlm_candidates_naive(mlm, vocab, copies, args.candidates)
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = mlm_candidates(mlm, vocab, copies, args.candidates, args.batch_size)
        batched_s = time.perf_counter() - start
        reference = reference or batched
        shared = sum(len(set(a) & set(b)) for a, b in zip(batched, reference, strict=True))
        same = "equal" if batched == naive else "DIFFERENT"
        print(f"{precision}: naive {naive_s:.2f} s ({len(copies) / naive_s:.1f} words/s), "
              f"batched {batched_s:.2f} s ({len(copies) / batched_s:.1f} words/s): "
              f"{naive_s / batched_s:.1f}x faster, candidates {same}; "
              f"{original_s / batched_s:.1f}x faster than TinyBERT's loop; "
              f"{shared / len(copies):.2f} of {args.candidates} candidates shared with "
              f"{args.precision[0]}'s")


if __name__ == "__main__":
    main()
