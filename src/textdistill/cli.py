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
data_app = typer.Typer(help="List and inspect corpora.", no_args_is_help=True)
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
) -> None:
    """Run a recipe: its stages in order, skipping those whose output is up to date."""
    from textdistill.recipe import run_recipe

    cfg = load_config(Recipe, recipe, overrides)
    run_recipe(cfg, run_dir or Path("runs") / cfg.name, resume=resume)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
