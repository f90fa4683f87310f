"""The ``textdistill`` command: each subcommand is a thin wrapper over a stage function."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from textdistill.clitools import user_errors
from textdistill.config import Recipe, load_config
from textdistill.errors import UserError
from textdistill.stages import STAGES, StageKind

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
Resume = Annotated[bool, typer.Option(
    help="Continue the run in the output folder from its checkpoint (same settings; see "
         "README for the ones that may change).")]
Overwrite = Annotated[bool, typer.Option(
    help="Replace the outputs of an earlier run in the output folder (they are removed first).")]


def _options(model: type[BaseModel]) -> str:
    """The config's top-level options with defaults and descriptions, for a command's help."""
    lines = ["Options of the stage (KEY=VALUE, --key VALUE or --flag/--no-flag; nested keys "
             "dotted, e.g. data.batch_size=16; values are YAML):", ""]
    for name, info in model.model_fields.items():
        if name in ("kind", "name"):
            continue
        default = "required" if info.is_required() else repr(info.get_default(
            call_default_factory=True))
        if len(default) > 40:
            default = "..."
        about = " ".join((info.description or "").split())
        lines.append(escape(f"{name} [{default}] {about}".rstrip()))
    return "\n\n".join(lines)


def _words_to_overrides(model: type[BaseModel], words: list[str]) -> tuple[list[str], dict]:
    """Command-line words as dotted overrides: ``key=value``, ``--key value``, ``--key=value``,
    ``--flag``/``--no-flag``; bare words fill the model's positional list field."""
    overrides: list[str] = []
    bare: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--"):
            key, eq, value = word[2:].partition("=")
            key = key.replace("-", "_")
            if not eq:
                field = model.model_fields.get(key)
                if key.startswith("no_") and field is None and key[3:] in model.model_fields:
                    key, value = key[3:], "false"
                elif field is not None and field.annotation is bool:
                    value = "true"
                elif i == len(words) or words[i].startswith("--"):
                    if field is not None:
                        raise UserError(f"option --{word[2:]} needs a value: --{word[2:]} VALUE "
                                        f"or {key}=VALUE")
                    value = "true"  # an unknown key: validation names it
                else:
                    value = words[i]
                    i += 1
            if key == model.positional:  # --tgt a --tgt b: items of the list
                bare.append(value)
            else:
                overrides.append(f"{key}={value}")
        elif "=" in word:
            overrides.append(word)
        else:
            bare.append(word)
    values: dict = {}
    if bare:
        if model.positional is None:
            raise UserError(f"unexpected argument '{bare[0]}': options look like key=value or "
                            "--key value")
        values[model.positional] = bare
    return overrides, values


def _stage_command(kind: str, stage: StageKind) -> None:
    model = stage.config(kind)

    @user_errors
    def command(
        ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
        config: Annotated[Path | None, typer.Option("--config", "-c",
                                                    help="YAML config file.")] = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
    ) -> None:
        if resume and overwrite:
            raise UserError("--resume continues the earlier run and --overwrite replaces it: "
                            "give one of them")
        overrides, values = _words_to_overrides(model, list(ctx.args))
        cfg = load_config(model, config, overrides, values)
        result = stage.execute(cfg, out, resume, overwrite)
        from accelerate import PartialState

        if PartialState().is_main_process:
            stage.show(result, out)

    command.__doc__ = stage.help
    app.command(kind, help=stage.help, epilog=_options(model),
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                )(command)


for _kind, _stage in STAGES.items():
    _stage_command(_kind, _stage)


@app.command()
@user_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).")],
    overrides: Overrides = None,
    run_dir: Annotated[Path | None, typer.Option(help="Default: runs/<recipe name>.")] = None,
    resume: Resume = False,
    overwrite: Annotated[bool, typer.Option(
        help="Rerun every stage anew, replacing the outputs of earlier runs.")] = False,
    only: Annotated[str | None, typer.Option(
        help="Run only these stages (comma-separated); the stages they use must be up to "
             "date. Independent stages can so run in separate processes.")] = None,
    jobs: Annotated[int, typer.Option(
        help="Run up to this many stages at once when they do not use each other, each in "
             "its own process, the CPU threads split between them (latency figures of an "
             "evaluation that overlaps training are then noisy).")] = 1,
) -> None:
    """Run a recipe: its stages in order, skipping those whose output is up to date."""
    from textdistill.recipe import run_recipe

    if resume and overwrite:
        raise UserError("--resume continues the earlier run and --overwrite replaces it: "
                        "give one of them")
    cfg = load_config(Recipe, recipe, overrides)
    stages = [name.strip() for name in only.split(",") if name.strip()] if only else None
    run_recipe(cfg, run_dir or Path("runs") / cfg.name, resume=resume, only=stages,
               overwrite=overwrite, jobs=jobs)


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A recipe's run folder.")]) -> None:
    """Write (again) the HTML report of a recipe run: tables, curves, figures."""
    from textdistill.report import write_report

    typer.echo(str(write_report(run_dir)))


@data_app.command("list")
@user_errors
def data_list() -> None:
    """Names of the registered corpora."""
    from textdistill.data.corpora import all_corpora

    for name in all_corpora():
        typer.echo(name)


@data_app.command("inspect")
@user_errors
def data_inspect(
    target: Annotated[list[str], typer.Argument(
        help="A corpus name (see 'data list'), a file or dataset folder, or a classification "
             "data config as key=value words (e.g. train=a.csv dev=b.csv columns.text=review)."
    )],
    fmt: Annotated[str, typer.Option("--format", help="auto, csv, tsv, jsonl, parquet or hf."
                                     )] = "auto",
    text: Annotated[str, typer.Option(help="Text column of a labelled file.")] = "text",
    text_pair: Annotated[str | None, typer.Option(help="Second text column (pairs).")] = None,
    label: Annotated[str, typer.Option(help="Label column of a labelled file.")] = "label",
) -> None:
    """Rows, labels and text lengths of a corpus, a file, or a data config's splits."""
    from textdistill.config import DataConfig
    from textdistill.data.corpora import describe, describe_config

    if all("=" in word for word in target):
        info = describe_config(load_config(DataConfig, None, target))
    elif len(target) == 1:
        info = describe(target[0], fmt=fmt, text=text, text_pair=text_pair, label=label)
    else:
        raise UserError("give one corpus name or file, or a data config as key=value words")
    typer.echo(json.dumps(info, indent=2))


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
    try:
        app()
    finally:
        _end_processes()


def _end_processes() -> None:
    """Under ``accelerate launch``: leave the process group before exiting, as PyTorch asks
    (a process that exits with its group open can break a peer's last collective)."""
    if "torch" not in sys.modules:  # nothing was run (e.g. --help): no group, no import
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
