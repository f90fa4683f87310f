"""TinyBERT's augmentation of long documents: what ``within_tokens`` and a short masked-LM
window save.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_augment_long.py [--articles 40]
        [--corpus bbc-news] [--mlm FOLDER] [--window 256] [--context 256 64]

On the first N training articles of ``--corpus``, ``Augmenter.plan`` (candidates of every
word: the masked LM batched, GloVe) runs once per setting: every word with a masked-LM context
of ``data.max_length`` = each ``--context``, and only the words within the student's
``--window`` tokens (``within_tokens``) with each context. Prints masked copies, seconds and
the projection to the whole training split. The model is ``--mlm`` or all-MiniLM-L6-v2 with a
new head (the time does not depend on the head's weights); precision auto (bf16 where the CPU
has it), as ``augment`` runs.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from textdistill.augment import Augmenter, load_glove
from textdistill.config import DataConfig
from textdistill.data.corpora import load_classification
from textdistill.models.mlm import load_mlm
from textdistill.precision import resolve_precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument("--corpus", default="bbc-news")
    parser.add_argument("--mlm", default="minilm")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--context", type=int, nargs="+", default=[256, 64])
    args = parser.parse_args()

    model, tokenizer, _ = load_mlm(args.mlm)
    train = load_classification(DataConfig(corpus=args.corpus)).split("train")
    examples = train[:args.articles]
    glove = load_glove()
    precision = resolve_precision("auto")
    print(f"{args.corpus}: the first {len(examples)} of {len(train)} training texts; precision "
          f"{precision}, {torch.get_num_threads()} torch thread(s), "
          f"{platform.processor() or 'cpu'}")
    for within in (None, args.window):
        for context in args.context:
            augmenter = Augmenter(model, tokenizer, glove, max_length=context,
                                  precision=precision, within_tokens=within)
            augmenter.plan(examples[:2])  # warm up
            start = time.perf_counter()
            _, counts = augmenter.plan(examples)
            seconds = time.perf_counter() - start
            print(f"words changed: {'all' if within is None else f'first {within} tokens'}, "
                  f"masked-LM context {context} tokens: {counts['mlm_words']} masked copies, "
                  f"{counts['past_window']} words kept past the window, {seconds:.1f} s "
                  f"({seconds / len(examples):.2f} s per text; the whole split "
                  f"{seconds / len(examples) * len(train) / 60:.0f} min)")


if __name__ == "__main__":
    main()
