"""The ``analyze`` stage (and command): measures of parallel corpora, and their table."""

from __future__ import annotations

from pathlib import Path

from textdistill.config import AlignerConfig, AnalyzeConfig, save_config


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(result: dict) -> None:
    """The measures of every corpus, as a table (and the language modes)."""
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


def _with_corpus_files(cfg: AnalyzeConfig, folder: Path) -> AnalyzeConfig:
    """``cfg`` with ``src`` (and ``real``, and per-language ``lang_refs``) written from its
    ``data`` into ``folder`` (the stage's own output folder, never the repository)."""
    from textdistill.data.parallel import load_pairs
    from textdistill.paths import atomic_write_text

    def write(name: str, lines: list[str]) -> str:
        atomic_write_text(folder / name, "".join(line + "\n" for line in lines))
        return str(folder / name)

    data = cfg.data.model_copy(update={"targets": None})
    langs = data.target_langs
    pairs = load_pairs(data, cfg.split)  # several languages: one line per pair, as trained
    update: dict = {"src": write(f"{cfg.split}.{data.src_lang}", [s for s, _ in pairs])}
    if cfg.real is None:
        update["real"] = write(f"{cfg.split}.{data.tgt_lang}", [t for _, t in pairs])
    if len(langs) > 1 and not cfg.lang_refs:
        update["lang_refs"] = {
            lang: write(f"train.{lang}", [t for _, t in load_pairs(
                data.model_copy(update={"tgt_lang": lang, "multi_target": "sample"}), "train")])
            for lang in langs}
    return cfg.model_copy(update=update)


def run_analyze(cfg: AnalyzeConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """The ``analyze`` stage: ``metrics.json`` (every measure), ``complexity_faithfulness.png``
    when the real targets are given, ``language_modes.png`` (each corpus's sentences on the
    simplex of three languages) with three language references, and ``alignments/`` when
    asked for."""
    from textdistill.analysis.analyze import (
        analyze,
        plot_complexity_faithfulness,
        plot_language_simplex,
    )
    from textdistill.paths import atomic_write_json

    out_dir = Path(out_dir)
    if cfg.data is not None:
        cfg = _with_corpus_files(cfg, out_dir / "inputs")
    aligner = AlignerConfig(**cfg.model_dump(include=set(AlignerConfig.model_fields)))
    result = analyze(cfg.src, cfg.tgt, cfg.real, tokenize=cfg.tokenize, tokenizer=cfg.tokenizer,
                     aligner=aligner, epsilon=cfg.epsilon, language_refs=cfg.lang_refs or None,
                     alignments_dir=out_dir / "alignments" if cfg.alignments else None)
    points = result.pop("language_points")
    save_config(cfg, out_dir / "config.yaml")
    atomic_write_json(out_dir / "metrics.json", result)
    if cfg.real is not None:
        plot_complexity_faithfulness(result, out_dir / "complexity_faithfulness.png")
    if len(cfg.lang_refs or {}) == 3:
        shares = {c["name"]: c["language_mode"]["dominant_share"]
                  for c in [result["real"] or {}, *result["corpora"]] if "language_mode" in c}
        plot_language_simplex(points, list(cfg.lang_refs), out_dir / "language_modes.png",
                              shares)
    return result
