"""The ``analyze`` command (registered by the main CLI as ``app.command("analyze")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from textdistill.clitools import user_errors
from textdistill.errors import UserError


def _parse_lang_refs(items: list[str]) -> dict[str, Path]:
    refs: dict[str, Path] = {}
    for item in items:
        lang, sep, path = item.partition("=")
        if not sep or not lang or not path:
            raise UserError(f"--lang-ref {item!r}: expected LANG=PATH, e.g. de=train.de")
        if lang in refs:
            raise UserError(f"--lang-ref: language {lang!r} given twice")
        refs[lang] = Path(path)
    return refs


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"analysis of {result['source']['path']} ({result['tokenize']} tokens)")
    for col, justify in (
        ("corpus", "left"),
        ("pairs", "right"),
        ("skipped", "right"),
        ("C(d)", "right"),
        ("C tok-w", "right"),
        ("F(d)", "right"),
        ("FRS", "right"),
        ("BLEU", "right"),
        ("chrF", "right"),
        ("λ fwd/rev", "right"),
    ):
        table.add_column(col, justify=justify, overflow="fold")
    rows = ([result["real"]] if result.get("real") else []) + result["corpora"]
    for r in rows:
        table.add_row(
            r["name"],
            str(r["aligned_pairs"]),
            str(r["skipped_lines"]),
            _fmt(r.get("complexity")),
            _fmt(r.get("complexity_token_weighted")),
            _fmt(r.get("faithfulness")),
            _fmt(r.get("reordering")),
            _fmt(r.get("bleu"), 2),
            _fmt(r.get("chrf"), 2),
            f"{r['tension_forward']:.2f}/{r['tension_reverse']:.2f}",
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table to 80 columns
        console = Console(width=160)
    console.print(table)
    for r in rows:
        lm = r.get("language_mode")
        if lm:
            props = ", ".join(f"{k} {v:.3f}" for k, v in lm["mode_proportions"].items())
            console.print(
                f"{r['name']}: language modes {props}; mode entropy "
                f"{_fmt(lm['mode_entropy'])}, mean sentence entropy "
                f"{_fmt(lm['mean_sentence_entropy'])} nats"
            )


@user_errors
def analyze_command(
    src: Annotated[Path, typer.Option("--src", help="Source side, one sentence per line.")],
    tgt: Annotated[
        list[Path],
        typer.Option("--tgt", help="Target side(s) aligned with --src; repeat for several."),
    ],
    real: Annotated[
        Path | None,
        typer.Option("--real", help="Human target side of --src (for F(d), BLEU, chrF)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Save a complexity-vs-faithfulness scatter plot (PNG)."),
    ] = None,
    tokenize: Annotated[
        str, typer.Option("--tokenize", help="Tokenization: words or subwords.")
    ] = "words",
    tokenizer: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="Hugging Face tokenizer folder for --tokenize subwords."),
    ] = None,
    iterations: Annotated[int, typer.Option("--iterations", help="EM iterations.")] = 5,
    variational_bayes: Annotated[
        bool,
        typer.Option("--variational-bayes/--no-variational-bayes", help="Dirichlet prior (-v)."),
    ] = True,
    alpha: Annotated[float, typer.Option("--alpha", help="Dirichlet alpha (-a).")] = 0.01,
    p0: Annotated[float, typer.Option("--p0", help="Null alignment probability.")] = 0.08,
    tension: Annotated[float, typer.Option("--tension", help="Initial tension (-T).")] = 4.0,
    favor_diagonal: Annotated[
        bool, typer.Option("--favor-diagonal/--no-favor-diagonal", help="Diagonal prior (-d).")
    ] = True,
    optimize_tension: Annotated[
        bool, typer.Option("--optimize-tension/--no-optimize-tension", help="Tune λ (-o).")
    ] = True,
    symmetrization: Annotated[
        str, typer.Option("--symmetrization", help="grow-diag-final-and, intersection, ...")
    ] = "grow-diag-final-and",
    epsilon: Annotated[
        float, typer.Option("--epsilon", help="Smoothing of p_d(y|x) in F(d).")
    ] = 1e-6,
    lang_ref: Annotated[
        list[str] | None,
        typer.Option("--lang-ref", help="LANG=PATH real target side per language (repeat)."),
    ] = None,
    alignments_dir: Annotated[
        Path | None,
        typer.Option("--alignments-dir", help="Write Pharaoh alignments and lexical tables."),
    ] = None,
) -> None:
    """Measure complexity, faithfulness, reordering, BLEU/chrF of parallel corpora."""
    from textdistill.analysis.analyze import analyze, plot_complexity_faithfulness
    from textdistill.paths import atomic_write_json

    if plot is not None and real is None:
        raise UserError("--plot needs --real: faithfulness is measured against it")
    result = analyze(
        src,
        tgt,
        real,
        tokenize=tokenize,
        tokenizer=tokenizer,
        iterations=iterations,
        diagonal=favor_diagonal,
        optimize_tension=optimize_tension,
        variational_bayes=variational_bayes,
        alpha=alpha,
        p0=p0,
        tension=tension,
        symmetrization=symmetrization,
        epsilon=epsilon,
        language_refs=_parse_lang_refs(lang_ref or []) or None,
        alignments_dir=alignments_dir,
    )
    _print_table(result)
    if json_out is not None:
        atomic_write_json(json_out, result)
        typer.echo(f"wrote {json_out}")
    if plot is not None:
        plot_complexity_faithfulness(result, plot)
        typer.echo(f"wrote {plot}")
