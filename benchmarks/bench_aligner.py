"""Benchmark the word aligner on the l10n training split.

    TEXTDISTILL_DATA=../shared/data .venv/bin/python benchmarks/bench_aligner.py

Fits the forward model (source → target, word tokens, 5 EM iterations by default), then
the reverse model and grow-diag-final-and symmetrisation, and prints the wall-clock
times, the size of the lexical table and the peak resident memory of the process
(``resource.getrusage``).  Targets (2-core x86 CPU): forward ≤ 45 s, both directions
plus symmetrisation ≤ 90 s, peak memory < 4 GB.  Tokenisation and numba compilation
(or cache loading) are timed separately and not counted in the fit times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

FORWARD_TARGET_S = 45.0
BOTH_TARGET_S = 90.0
MEMORY_TARGET_MB = 4096.0


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="train", choices=["train", "dev", "test"])
    parser.add_argument("--src-lang", default="en")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--variational-bayes", action="store_true", help="fast_align -v")
    parser.add_argument("--threads", type=int, default=None, help="numba threads (default all)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from textdistill.analysis.aligner import encode, fit_alignment, symmetrize
    from textdistill.analysis.data import read_l10n_columns
    from textdistill.analysis.tokenize import word_tokenize
    from textdistill.errors import UserError

    figures: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "split": args.split,
        "direction": f"{args.src_lang}->{args.tgt_lang}",
        "iterations": args.iterations,
        "variational_bayes": args.variational_bayes,
    }

    t0 = time.perf_counter()
    fit_alignment([["a", "b"], ["b"]], [["x", "y"], ["y"]], iterations=2)
    symmetrize([[(0, 0)]], [[(0, 0)]])
    figures["numba_compile_or_cache_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        cols = read_l10n_columns(args.split, [args.src_lang, args.tgt_lang])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    src_tok = [word_tokenize(x) for x in cols[args.src_lang]]
    tgt_tok = [word_tokenize(x) for x in cols[args.tgt_lang]]
    keep = [bool(s) and bool(t) for s, t in zip(src_tok, tgt_tok, strict=True)]
    src = encode([s for s, k in zip(src_tok, keep, strict=True) if k])
    tgt = encode([t for t, k in zip(tgt_tok, keep, strict=True) if k])
    del cols, src_tok, tgt_tok
    figures["read_tokenize_encode_s"] = time.perf_counter() - t0
    figures["sentence_pairs"] = len(src)
    figures["source_tokens"] = int(src.lengths.sum())
    figures["target_tokens"] = int(tgt.lengths.sum())
    figures["source_types"] = src.n_types
    figures["target_types"] = tgt.n_types
    figures["cells_sum_m_times_n"] = int((src.lengths * tgt.lengths).sum())

    options = {
        "iterations": args.iterations,
        "variational_bayes": args.variational_bayes,
        "num_threads": args.threads,
    }
    t0 = time.perf_counter()
    fwd = fit_alignment(src, tgt, **options)
    figures["forward_s"] = time.perf_counter() - t0
    figures["forward_tension"] = fwd.tension
    figures["lexical_table_entries"] = fwd.lexical_table().nnz
    figures["forward_per_iteration_s"] = [round(h["seconds"], 3) for h in fwd.history[1:-1]]

    t0 = time.perf_counter()
    rev = fit_alignment(src, tgt, reverse=True, **options)
    figures["reverse_s"] = time.perf_counter() - t0
    figures["reverse_tension"] = rev.tension
    t0 = time.perf_counter()
    sym = symmetrize(fwd.align(), rev.align(), "grow-diag-final-and")
    figures["symmetrize_s"] = time.perf_counter() - t0
    figures["both_directions_and_symmetrization_s"] = (
        figures["forward_s"] + figures["reverse_s"] + figures["symmetrize_s"]
    )
    figures["links_forward"] = fwd.align().n_links
    figures["links_reverse"] = rev.align().n_links
    figures["links_grow_diag_final_and"] = sym.n_links
    figures["peak_rss_mb"] = peak_rss_mb()

    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:.2f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    if args.split == "train":
        checks = [
            ("forward fit", figures["forward_s"], FORWARD_TARGET_S, "s"),
            (
                "both + symmetrize",
                figures["both_directions_and_symmetrization_s"],
                BOTH_TARGET_S,
                "s",
            ),
            ("peak memory", figures["peak_rss_mb"], MEMORY_TARGET_MB, "MB"),
        ]
        for name, value, target, unit in checks:
            verdict = "ok" if value <= target else "OVER TARGET"
            print(f"{name}: {value:.1f} {unit} (target <= {target:.0f} {unit}) {verdict}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
