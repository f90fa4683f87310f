"""Recipes: stages run in order under one run directory, each skipped when its output is up to
date, so an interrupted recipe resumes where it stopped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from textdistill.config import (
    DistillConfig,
    EvaluateConfig,
    FinetuneConfig,
    GenerateConfig,
    Recipe,
    Seq2SeqConfig,
    TranslationEvalConfig,
    config_hash,
    save_config,
)
from textdistill.distill import run_distill, run_finetune
from textdistill.errors import UserError
from textdistill.evaluate import format_table, run_evaluate
from textdistill.paths import atomic_write_json

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _resolve(name: str, run_dir: Path, earlier: list[str]) -> str:
    """An earlier stage's name stands for that stage's model folder."""
    return str(run_dir / name / "model") if name in earlier else name


def _resolved(stage, run_dir: Path, earlier: list[str]):
    if isinstance(stage, FinetuneConfig):
        return stage.model_copy(update={"model": _resolve(stage.model, run_dir, earlier)})
    if isinstance(stage, DistillConfig):
        student = stage.student.model_copy(
            update={"vocab_from": _resolve(stage.student.vocab_from, run_dir, earlier)})
        teacher = _resolve(stage.teacher, run_dir, earlier) if stage.teacher else None
        return stage.model_copy(update={"teacher": teacher, "student": student})
    if isinstance(stage, Seq2SeqConfig):
        targets = stage.data.targets
        if targets in earlier:
            targets = str(run_dir / targets / "targets.txt")
        teacher = _resolve(stage.teacher, run_dir, earlier) if stage.teacher else None
        tokenizer = _resolve(stage.tokenizer, run_dir, earlier) if stage.tokenizer else None
        return stage.model_copy(update={
            "teacher": teacher, "tokenizer": tokenizer,
            "data": stage.data.model_copy(update={"targets": targets})})
    if isinstance(stage, GenerateConfig):
        kbest = stage.kbest_from
        if kbest in earlier:
            kbest = str(run_dir / kbest / "kbest.jsonl")
        return stage.model_copy(update={"model": _resolve(stage.model, run_dir, earlier),
                                        "kbest_from": kbest})
    unknown = [m for m in stage.models if m not in earlier and not Path(m).is_dir()]
    if unknown:
        raise UserError(f"stage '{stage.name}' evaluates '{unknown[0]}', which is neither an "
                        "earlier stage nor a model folder")
    return stage


def run_stage(stage, out_dir: Path, run_dir: Path, earlier: list[str], resume: bool) -> dict:
    """Run one stage (names of earlier stages already resolved) into ``out_dir``."""
    if isinstance(stage, FinetuneConfig):
        return run_finetune(stage, out_dir, resume=resume)
    if isinstance(stage, DistillConfig):
        return run_distill(stage, out_dir, resume=resume)
    if isinstance(stage, Seq2SeqConfig):
        from textdistill.seq2seq.train import run_train

        return run_train(stage, out_dir, resume=resume)
    if isinstance(stage, GenerateConfig):
        from textdistill.seq2seq.train import run_generate

        return run_generate(stage, out_dir)
    models = {m: _resolve(m, run_dir, earlier) for m in stage.models}
    save_config(stage, out_dir / "config.yaml")
    if isinstance(stage, TranslationEvalConfig):
        from textdistill.seq2seq.train import run_evaluate_mt

        table = run_evaluate_mt(stage, models, out_dir)
        console.print_json(data=table)
        return table
    table = run_evaluate(stage, models, out_dir)
    console.print(format_table(table))
    return table


def _references(stage, earlier: list[str]) -> list[str]:
    """The earlier stages that ``stage`` names (as a model, teacher, tokenizer, targets...)."""
    names: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, str) and value in earlier:
            names.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(stage.model_dump(exclude={"name"}))
    return [name for name in earlier if name in names]


def run_recipe(recipe: Recipe, run_dir: str | Path, resume: bool = False,
               only: list[str] | None = None) -> dict:
    """Run every stage of ``recipe`` under ``run_dir`` (or the stages named in ``only``, whose
    inputs must then be up to date); returns the metrics of every up-to-date stage by name.

    A stage is skipped when its marker holds the digest of its configuration and of the
    digests of the stages it uses, so a change reruns that stage and every stage downstream
    of it, and nothing else; stages that do not use each other can run in separate processes
    (``only``)."""
    run_dir = Path(run_dir)
    names = [stage.name for stage in recipe.stages]
    unknown = [name for name in only or [] if name not in names]
    if unknown:
        raise UserError(f"recipe '{recipe.name}' has no stage '{unknown[0]}'; its stages are "
                        f"{', '.join(names)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(recipe, run_dir / "config.yaml")
    metrics: dict[str, dict] = {}
    digests: dict[str, str] = {}
    earlier: list[str] = []
    for stage in recipe.stages:
        resolved = _resolved(stage, run_dir, earlier)
        deps = _references(stage, earlier)
        out_dir = run_dir / stage.name
        marker = out_dir / "stage.json"
        digest = digests[stage.name] = config_hash(resolved, "".join(digests[d] for d in deps))
        earlier.append(stage.name)
        if marker.is_file() and json.loads(marker.read_text()).get("config") == digest:
            if only is None or stage.name in only:
                console.print(f"[green]skip[/] stage '{stage.name}': output is up to date")
            metrics[stage.name] = json.loads((out_dir / "metrics.json").read_text())
            if type(stage) is EvaluateConfig and only is None:
                console.print(format_table(metrics[stage.name]))
            continue
        if only is not None and stage.name not in only:
            continue
        missing = [d for d in deps if d not in metrics]
        if missing:
            raise UserError(f"stage '{stage.name}' needs stage '{missing[0]}', which is not up "
                            "to date: run it first or name it too")
        console.print(f"[bold]stage[/] '{stage.name}' ({stage.kind})")
        marker.unlink(missing_ok=True)
        can_resume = resume and (out_dir / "checkpoint" / "state.json").is_file()
        run_stage(resolved, out_dir, run_dir, earlier[:-1], can_resume)
        metrics[stage.name] = json.loads((out_dir / "metrics.json").read_text())
        atomic_write_json(marker, {"config": digest})
    if only is None:
        atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics
