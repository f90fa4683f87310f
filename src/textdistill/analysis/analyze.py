"""``analyze``: complexity, faithfulness, monotonicity and quality of parallel corpora.

Given a source file and one or more target files (plain text, one sentence per line,
aligned line by line), optionally the real (human) target side of the same source,
this aligns every corpus with :mod:`textdistill.analysis.aligner` and reports the
measures of :mod:`textdistill.analysis.measures`.  See ``docs/analysis.md``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textdistill.analysis.aligner import (
    ALIGNER,
    AlignmentModel,
    Alignments,
    EncodedCorpus,
    encode,
    fit_alignment,
    symmetrize,
)
from textdistill.analysis.data import read_lines
from textdistill.analysis.measures import (
    DEFAULT_EPSILON,
    LanguageModeEstimator,
    complexity,
    faithfulness,
    reordering_score,
)
from textdistill.analysis.tokenize import make_tokenizer
from textdistill.config import AlignerConfig
from textdistill.errors import UserError
from textdistill.metrics import corpus_bleu_chrf

MAX_REPORTED_SKIPS = 20


def _check_parallel(src: Path, n_src: int, other: Path, n_other: int, role: str) -> None:
    if n_other == 0:
        raise UserError(f"{role} {other} is empty")
    if n_other != n_src:
        extra = (
            "; --real must be the human target side aligned line by line with --src"
            if role == "real corpus"
            else "; source and target files must be aligned line by line"
        )
        raise UserError(f"{src} has {n_src} lines but {role} {other} has {n_other}{extra}")


def _names(paths: Sequence[Path]) -> list[str]:
    """A name per corpus: its file name, or its folder's for a ``generate`` stage's
    ``targets.txt``; repeats numbered."""
    names: list[str] = []
    for p in paths:
        name = p.parent.name if p.name == "targets.txt" and p.parent.name else p.name
        if name in names:
            k = 2
            while f"{name}#{k}" in names:
                k += 1
            name = f"{name}#{k}"
        names.append(name)
    return names


def _expand(al: Alignments, keep: np.ndarray) -> Alignments:
    """Alignments for every input line (skipped lines get no links)."""
    per = np.zeros(len(keep), dtype=np.int64)
    per[keep] = np.diff(al.offsets)
    offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(per, out=offsets[1:])
    return Alignments(offsets, al.src, al.tgt)


@dataclass
class _Aligned:
    forward: AlignmentModel
    reverse: AlignmentModel
    symmetric: Alignments
    keep: np.ndarray


def _align_corpus(
    src_enc: EncodedCorpus,
    keep: np.ndarray,
    tgt_tokens: list[list[str]],
    settings: AlignerConfig,
) -> _Aligned:
    src_k = src_enc.select(keep)
    tgt_k = encode([t for t, k in zip(tgt_tokens, keep.tolist(), strict=True) if k])
    kwargs = settings.model_dump(exclude={"symmetrization"})
    fwd = fit_alignment(src_k, tgt_k, **kwargs)
    rev = fit_alignment(src_k, tgt_k, reverse=True, **kwargs)
    sym = symmetrize(fwd.align(), rev.align(), settings.symmetrization)
    return _Aligned(fwd, rev, sym, keep)


def analyze(
    src: str | Path,
    tgt: str | Path | Sequence[str | Path],
    real: str | Path | None = None,
    tokenize: str = "words",
    tokenizer: str | Path | None = None,
    *,
    aligner: AlignerConfig = ALIGNER,
    epsilon: float = DEFAULT_EPSILON,
    language_refs: Mapping[str, str | Path] | None = None,
    alignments_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Measure one or more target corpora of the same source file.

    ``tgt`` is one path or several (e.g. the outputs of several teachers); ``real`` the
    human target side of the same ``src`` (same line count) — needed for faithfulness,
    BLEU and chrF, which compare each ``tgt`` with it.  Lines whose source or target
    tokenizes to nothing are skipped for alignment (counted per corpus in
    ``skipped_lines``; BLEU/chrF still use every line).  ``language_refs`` maps language
    codes to real target-side files of a multi-target corpus and adds the language-mode
    report of every corpus.  ``aligner`` holds the aligner's options.  ``alignments_dir``
    receives, per corpus, Pharaoh files ``NAME.fwd.align``, ``NAME.rev.align``,
    ``NAME.sym.align`` (one line per input line)
    and the full lexical tables ``NAME.lex.tsv`` (p(tgt|src)) and ``NAME.lex-rev.tsv``.

    Returns a JSON-serialisable dict (see ``docs/analysis.md``).
    """
    if not epsilon > 0:
        raise UserError(f"epsilon must be > 0, got {epsilon}")
    say = progress or (lambda _msg: None)
    tok = make_tokenizer(tokenize, tokenizer)
    src = Path(src)
    tgt_paths = [Path(tgt)] if isinstance(tgt, str | Path) else [Path(t) for t in tgt]
    real_path = Path(real) if real is not None else None
    if not tgt_paths and real_path is None:
        raise UserError("give at least one target corpus (--tgt) or the real one (--real)")

    src_lines = read_lines(src, "source file")
    if not src_lines:
        raise UserError(f"source file {src} is empty")
    corpora: list[tuple[str, Path, list[str]]] = []
    if real_path is not None:
        real_lines = read_lines(real_path, "real corpus")
        _check_parallel(src, len(src_lines), real_path, len(real_lines), "real corpus")
        corpora.append(("real", real_path, real_lines))
    for name, p in zip(_names(tgt_paths), tgt_paths, strict=True):
        lines = read_lines(p, "target file")
        _check_parallel(src, len(src_lines), p, len(lines), "target file")
        corpora.append((name, p, lines))

    estimator = None
    if language_refs:
        if len(language_refs) < 2:
            raise UserError("language modes need reference files for at least two languages")
        say("fitting the language classifier")
        estimator = LanguageModeEstimator().fit(
            {
                lang: [tok(line) for line in read_lines(p, f"{lang} reference")]
                for lang, p in language_refs.items()
            }
        )

    language_points: dict[str, np.ndarray] = {}
    say(f"tokenizing {src}")
    src_tokens = [tok(line) for line in src_lines]
    src_lengths = np.fromiter((len(t) for t in src_tokens), dtype=np.int64, count=len(src_tokens))
    src_enc = encode(src_tokens)
    out_dir = Path(alignments_dir) if alignments_dir is not None else None

    results: list[dict] = []
    real_table = None
    for name, path, lines in corpora:
        t0 = time.perf_counter()
        say(f"aligning {name}")
        tgt_tokens = [tok(line) for line in lines]
        keep = (src_lengths > 0) & np.array([len(t) > 0 for t in tgt_tokens], dtype=bool)
        if not keep.any():
            raise UserError(
                f"no line of {path} and {src} has tokens on both sides; nothing to align"
            )
        aligned = _align_corpus(src_enc, keep, tgt_tokens, aligner)
        skipped = np.flatnonzero(~aligned.keep)
        table = aligned.forward.lexical_table()
        res: dict = {
            "name": name,
            "path": str(path),
            "lines": len(lines),
            "aligned_pairs": int(aligned.keep.sum()),
            "skipped_lines": int(skipped.size),
            "skipped_line_numbers": (skipped[:MAX_REPORTED_SKIPS] + 1).tolist(),
            "source_tokens": int(src_lengths[aligned.keep].sum()),
            "target_tokens": int(sum(len(t) for t in tgt_tokens)),
            "target_types": len(table.outcome_vocab or []),
        }
        res.update(complexity(table))
        rs = reordering_score(aligned.symmetric)
        res["reordering"] = rs["reordering"]
        res["reordering_scored_sentences"] = rs["scored_sentences"]
        res["alignment_links"] = aligned.symmetric.n_links
        res["tension_forward"] = aligned.forward.tension
        res["tension_reverse"] = aligned.reverse.tension
        if name == "real" and real_path is not None:
            real_table = table
            res["faithfulness"] = 0.0
        elif real_table is not None:
            fa = faithfulness(real_table, table, epsilon)
            res["faithfulness"] = fa["faithfulness"]
            res["faithfulness_token_weighted"] = fa["faithfulness_token_weighted"]
            res["faithfulness_source_types"] = fa["source_types"]
            res.update(corpus_bleu_chrf(lines, corpora[0][2], signatures=True))
        if estimator is not None:
            res["language_mode"] = estimator.report(tgt_tokens)
            language_points[name] = estimator.distributions(tgt_tokens)
        if out_dir is not None:
            stem = name.replace("/", "_").replace("#", "_")
            _expand(aligned.forward.align(), aligned.keep).write(out_dir / f"{stem}.fwd.align")
            _expand(aligned.reverse.align(), aligned.keep).write(out_dir / f"{stem}.rev.align")
            _expand(aligned.symmetric, aligned.keep).write(out_dir / f"{stem}.sym.align")
            table.write(out_dir / f"{stem}.lex.tsv")
            aligned.reverse.lexical_table().write(out_dir / f"{stem}.lex-rev.tsv")
        res["seconds"] = round(time.perf_counter() - t0, 3)
        results.append(res)

    real_result = results.pop(0) if real_path is not None else None
    return {
        "source": {
            "path": str(src),
            "lines": len(src_lines),
            "empty_lines": int((src_lengths == 0).sum()),
        },
        "tokenize": tokenize,
        "tokenizer": str(tokenizer) if tokenizer is not None else None,
        "settings": {
            **aligner.model_dump(),
            "epsilon": epsilon,
            "table": "forward p(tgt|src), full, rows renormalised",
        },
        "real": real_result,
        "corpora": results,
        "language_points": language_points,
    }


def _save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure atomically (PNG unless ``path`` says otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix or ".png"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_language_simplex(points: dict[str, np.ndarray], languages: list[str],
                          path: str | Path, shares: dict[str, float | None] | None = None
                          ) -> None:
    """One 2-simplex per corpus (corners: the three languages) with a point per sentence at
    its p(l | y), written atomically; ``shares`` (the share of sentences whose dominant
    language has p > 0.9) go in the panel titles."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(languages) != 3:
        raise UserError(f"the language simplex needs three languages, got {len(languages)}")
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    fig = Figure(figsize=(3.6 * len(points), 3.6))
    FigureCanvasAgg(fig)
    for k, (name, dist) in enumerate(points.items(), start=1):
        ax = fig.add_subplot(1, len(points), k)
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="0.3", lw=0.8)
        xy = dist @ corners if len(dist) else np.zeros((0, 2))
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.3, color="tab:blue")
        for (x, y), lang in zip(corners, languages, strict=True):
            ax.annotate(lang, (x, y), textcoords="offset points", ha="center",
                        xytext=(0, 6 if y else -12), fontsize=9)
        share = (shares or {}).get(name)
        ax.set_title(name + (f"\np > 0.9: {share:.1%}" if share is not None else ""),
                     fontsize=9)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_complexity_faithfulness(result: dict, path: str | Path) -> None:
    """Scatter plot of complexity (x) against faithfulness (y), written atomically.

    Needs a result with a real corpus (faithfulness); the real corpus is drawn at F = 0.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if result.get("real") is None:
        raise UserError("the complexity/faithfulness plot needs --real (faithfulness)")
    points = [(c["name"], c.get("complexity"), c.get("faithfulness")) for c in result["corpora"]]
    real = result["real"]
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = [p[1] for p in points if p[1] is not None and p[2] is not None]
    ys = [p[2] for p in points if p[1] is not None and p[2] is not None]
    ax.scatter(xs, ys, color="tab:blue", label="corpora")
    for name, x, y in points:
        if x is not None and y is not None:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if real.get("complexity") is not None:
        ax.scatter([real["complexity"]], [0.0], color="tab:red", marker="*", s=120, label="real")
    ax.set_xlabel("complexity C(d) (nats)")
    ax.set_ylabel("faithfulness F(d) = KL(real || d) (nats)")
    ax.set_title("complexity vs faithfulness")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
