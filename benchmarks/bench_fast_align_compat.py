"""The analyzer's C(d) against fast_align's, side by side on the same tokens.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_fast_align_compat.py \
        --fast-align /path/to/fast_align [--iterations 5] [--no-vb]

fast_align is not a dependency: build it from https://github.com/clab/fast_align (cmake,
a C++ compiler) and give the binary. On the l10n training split (English → German,
lower-cased ``\\w+|[^\\w\\s]`` word tokens, pairs with an empty side dropped) it runs
``fast_align -d -o -v -I N -t -10000 -p TABLE`` forward (``--no-vb``: without ``-v``, and
the analyzer without variational Bayes), then the analyzer twice: with
``fast_align_compatible`` (``iterations=N``, fast_align's tension update and ``-I``
counting) and with its default consistent gradient (``iterations=N-1``, the same number of
EM passes). For each: C(d) (mean entropy of p(y|x) over source types, nats), the number of
source types, the final tension, and the F1 of its Viterbi links against fast_align's.
Prints a Markdown table; target: the compatible mode within 0.1% of fast_align's C(d).
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def table_complexity(path: Path) -> tuple[float, int]:
    """C(d) of a fast_align ``-p`` table (tab-separated ``e f log-prob`` lines): rows
    renormalised, the null word's row left out, plain mean over source types."""
    rows: dict[str, list[float]] = defaultdict(list)
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            e, _, logp = line.rstrip("\n").split("\t")
            if e != "<eps>":
                rows[e].append(math.exp(float(logp)))
    total = 0.0
    for probs in rows.values():
        z = sum(probs)
        total -= sum(p / z * math.log(p / z) for p in probs if p > 0)
    return total / len(rows), len(rows)


def link_f1(ours, theirs) -> float:
    hit = both = 0
    n_ours = n_theirs = 0
    for a, b in zip(ours, theirs, strict=True):
        a, b = set(a), set(b)
        hit += len(a & b)
        n_ours += len(a)
        n_theirs += len(b)
    both = n_ours + n_theirs
    return 2 * hit / both if both else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast-align", required=True, type=Path)
    parser.add_argument("--iterations", type=int, default=5, help="fast_align -I")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--no-vb", action="store_true", help="plain EM: fast_align without -v")
    args = parser.parse_args(argv)
    vb = not args.no_vb

    from textdistill.analysis.aligner import encode, fit_alignment, parse_pharaoh
    from textdistill.analysis.data import read_l10n_columns
    from textdistill.analysis.measures import complexity
    from textdistill.analysis.tokenize import word_tokenize

    cols = read_l10n_columns("train", ["en", args.tgt_lang])
    pairs = [(word_tokenize(s), word_tokenize(t))
             for s, t in zip(cols["en"], cols[args.tgt_lang], strict=True)]
    pairs = [(s, t) for s, t in pairs if s and t]
    work = Path(tempfile.mkdtemp(prefix="fast-align-"))
    corpus = work / "corpus.txt"
    corpus.write_text("".join(f"{' '.join(s)} ||| {' '.join(t)}\n" for s, t in pairs),
                      encoding="utf-8")
    start = time.perf_counter()
    flags = ["-d", "-o"] + (["-v"] if vb else [])
    run = subprocess.run([str(args.fast_align), "-i", str(corpus), *flags, "-I",
                          str(args.iterations), "-t", "-10000", "-p", str(work / "table")],
                         capture_output=True, text=True, check=True)
    fa_seconds = time.perf_counter() - start
    tensions = re.findall(r"final tension: ([\d.]+)", run.stderr)
    fa_links = list(parse_pharaoh(run.stdout.splitlines()))
    fa_c, fa_types = table_complexity(work / "table")

    src = encode([s for s, _ in pairs])
    tgt = encode([t for _, t in pairs])
    rows = [("fast_align", fa_c, fa_types, float(tensions[-1]) if tensions else float("nan"),
             1.0, fa_seconds)]
    for label, iterations, compatible in (
            (f"analyzer, fast_align_compatible, iterations={args.iterations}",
             args.iterations, True),
            (f"analyzer, consistent gradient, iterations={args.iterations - 1}",
             args.iterations - 1, False)):
        start = time.perf_counter()
        model = fit_alignment(src, tgt, iterations=iterations, fast_align_compatible=compatible,
                              variational_bayes=vb)
        seconds = time.perf_counter() - start
        c = complexity(model.lexical_table())
        rows.append((label, c["complexity"], c["source_types"], model.tension,
                     link_f1(model.align(), fa_links), seconds))
    print(f"\n{platform.processor() or platform.machine()}; l10n train en→{args.tgt_lang}, "
          f"{len(pairs):,} pairs, {' '.join(flags)}, fast_align -I {args.iterations}")
    print("| aligner | C(d) nats | vs fast_align | source types | final tension | "
          "Viterbi link F1 vs fast_align | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label, c, types, tension, f1, seconds in rows:
        print(f"| {label} | {c:.4f} | {100 * (c / fa_c - 1):+.2f}% | {types:,} | "
              f"{tension:.4f} | {f1:.3f} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
