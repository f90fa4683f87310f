"""The ``textdistill`` command: each subcommand is a thin wrapper over a stage function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from textdistill.clitools import user_errors
from textdistill.config import (
    DataConfig,
    DistillConfig,
    EvaluateConfig,
    FinetuneConfig,
    Recipe,
    Seq2SeqConfig,
    load_config,
)

app = typer.Typer(
    help="Knowledge distillation for NLP: fine-tune teachers, distill students, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="List, inspect and build corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
err = Console(stderr=True)

Overrides = Annotated[
    list[str] | None, typer.Argument(help="Dotted overrides such as data.batch_size=16.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
Resume = Annotated[bool, typer.Option(help="Continue from the checkpoint in the output folder.")]


def _report(summary: dict, out: Path, what: str) -> None:
    """One closing line, from the main process only."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        best = summary["best_dev"]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
        err.print(f"{what} saved in {out / 'model'}; best dev: {shown or 'n/a'}", soft_wrap=True)


@app.command()
@user_errors
def finetune(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: ConfigOpt = None,
    overrides: Overrides = None,
    resume: Resume = False,
) -> None:
    """Fine-tune an encoder (default: all-MiniLM-L6-v2) into a classifier: the teacher."""
    from textdistill.distill import run_finetune

    cfg = load_config(FinetuneConfig, config, overrides)
    summary = run_finetune(cfg, out, resume=resume)
    _report(summary, out, "teacher")


@app.command()
@user_errors
def distill(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: ConfigOpt = None,
    overrides: Overrides = None,
    resume: Resume = False,
) -> None:
    """Train a student from a teacher (or on labels alone when no teacher is set)."""
    from textdistill.distill import run_distill

    cfg = load_config(DistillConfig, config, overrides)
    summary = run_distill(cfg, out, resume=resume)
    _report(summary, out, "student")


def _display_name(model: str) -> str:
    """``runs/x/student/model`` is shown as ``student``."""
    path = Path(model)
    return path.parent.name if path.name == "model" and path.parent.name else path.name or model


@app.command()
@user_errors
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    config: ConfigOpt = None,
    overrides: Overrides = None,
    resume: Resume = False,
) -> None:
    """Train a translation model: a teacher on gold data, or a student (Seq-KD, word-KD)."""
    from textdistill.seq2seq.train import run_train

    cfg = load_config(Seq2SeqConfig, config, overrides)
    summary = run_train(cfg, out, resume=resume)
    _report(summary, out, "model")


@app.command()
@user_errors
def evaluate(
    models: Annotated[list[str], typer.Argument(help="Model folders; the first is the reference.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for metrics.json.")],
    corpus: str = "rotten-tomatoes",
    split: str = "test",
) -> None:
    """Accuracy, macro-F1, MCC, size, latency and throughput of models, as a table."""
    from textdistill.config import validate
    from textdistill.evaluate import format_table, run_evaluate

    cfg = validate(EvaluateConfig, {"models": models, "split": split,
                                    "data": DataConfig(corpus=corpus).model_dump()})
    table = run_evaluate(cfg, {_display_name(m): m for m in models}, out)
    Console(width=None if sys.stdout.isatty() else 140).print(format_table(table))


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).")],
    overrides: Overrides = None,
    run_dir: Annotated[Path | None, typer.Option(help="Default: runs/<recipe name>.")] = None,
    resume: Resume = False,
    only: Annotated[str | None, typer.Option(
        help="Run only these stages (comma-separated); the stages they use must be up to "
             "date. Independent stages can so run in separate processes.")] = None,
) -> None:
    """Run a recipe: its stages in order, skipping those whose output is up to date."""
    from textdistill.recipe import run_recipe

    cfg = load_config(Recipe, recipe, overrides)
    stages = [name.strip() for name in only.split(",") if name.strip()] if only else None
    run_recipe(cfg, run_dir or Path("runs") / cfg.name, resume=resume, only=stages)


def _register_generate() -> None:
    from textdistill.seq2seq.command import generate_command

    app.command("generate", help="Decode a corpus with a teacher (beam, greedy, sampling, "
                "k-best): the distilled corpus.")(generate_command)


def _register_analyze() -> None:
    from textdistill.analysis.command import analyze_command

    app.command("analyze", help="Complexity, faithfulness, reordering and BLEU of a corpus.")(
        analyze_command
    )


_register_analyze()
_register_generate()


@data_app.command("list")
@user_errors
def data_list() -> None:
    """Names of the registered corpora."""
    from textdistill.data.corpora import all_corpora

    for name in all_corpora():
        typer.echo(name)


@data_app.command("inspect")
@user_errors
def data_inspect(name: str) -> None:
    """Split sizes and label counts of a corpus."""
    from textdistill.data.corpora import describe

    typer.echo(json.dumps(describe(name), indent=2))


@data_app.command(
    "build",
    short_help="Build a corpus from Debian packages: l10n.",
    help="Build a corpus from Debian packages (needs apt-get and dpkg-deb, or --debs and "
    "--lists). l10n: English with German, French and Spanish translations from gettext "
    "catalogs, translated package descriptions and the Debian Reference, filtered, split by a "
    "seeded shuffle, with a manifest (parallel/l10n.manifest.json). The GIMP manual, Debian "
    "Administrator's Handbook and GNOME help parts of the shipped corpus are not built.",
)
@user_errors
def data_build(
    name: Annotated[str, typer.Argument(help="Corpus to build: l10n.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Data directory (default: $TEXTDISTILL_DATA, else "
        "~/.cache/textdistill/data); writes parallel/l10n.*.")] = None,
    packages: Annotated[Path | None, typer.Option(
        "--packages", help="File of Debian package names with gettext catalogs, one a line "
        "(default: a built-in list of 59 bookworm packages, about 740 MB).")] = None,
    sources: Annotated[str, typer.Option(
        "--sources", help="Comma-separated source kinds: gettext, ddtp (package "
        "descriptions), debref (Debian Reference).")] = "gettext,ddtp,debref",
    work: Annotated[Path | None, typer.Option(
        "--work", help="Cache of downloads and APT lists (default: OUT/.l10n-work).")] = None,
    debs: Annotated[Path | None, typer.Option(
        "--debs", help="Use the .deb files in this folder instead of downloading.")] = None,
    lists: Annotated[Path | None, typer.Option(
        "--lists", help="Use the Translation-{en,de,fr,es} files in this folder (an APT "
        "lists folder) instead of apt-get update.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split shuffle.")] = 13,
    dev: Annotated[int, typer.Option("--dev", help="Rows in the dev split.")] = 2000,
    test: Annotated[int, typer.Option("--test", help="Rows in the test split.")] = 2000,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an existing corpus.")] = False,
) -> None:
    """Build a corpus from Debian packages (``textdistill.data.build_l10n``)."""
    from textdistill.data.build_l10n import (
        DEFAULT_PACKAGES,
        build_l10n,
        parse_sources,
        read_package_list,
    )
    from textdistill.errors import UserError
    from textdistill.paths import data_dir

    if name != "l10n":
        raise UserError(f"unknown corpus '{name}' to build; buildable: l10n")
    target = out or data_dir()
    manifest = build_l10n(
        target, sources=parse_sources(sources),
        packages=read_package_list(packages) if packages else DEFAULT_PACKAGES,
        work=work, debs_dir=debs, lists_dir=lists, seed=seed, dev=dev, test=test, force=force,
        report=lambda message: typer.echo(message, err=True),
    )
    sizes = " / ".join(f"{n:,}" for n in manifest["counts"]["splits"].values())
    typer.echo(f"l10n written to {target / 'parallel'}: {sizes} rows (train / dev / test)",
               err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
