"""Recipes: stages run in order under one run directory, each skipped when its output is up to
date, so an interrupted recipe resumes where it stopped."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from textdistill.config import Recipe, config_hash, save_config
from textdistill.errors import UserError
from textdistill.paths import atomic_write_json
from textdistill.report import write_report
from textdistill.runs import one_writer, training_changes
from textdistill.stages import STAGES, show_evaluation

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _resolved(stage, run_dir: Path, earlier: list[str]):
    """``stage`` with every field that names an earlier stage replaced by that stage's output
    (its model folder, targets or k-best file, as ``STAGES[kind].refs`` says)."""
    data = stage.model_dump()
    for dotted, artifact in STAGES[stage.kind].refs.items():
        *parents, key = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        value = node.get(key)

        def resolve(name, artifact=artifact):
            return str(run_dir / name / artifact) if name in earlier else name

        if isinstance(value, list):
            node[key] = [resolve(v) for v in value]
        elif isinstance(value, str):
            node[key] = resolve(value)
    return type(stage).model_validate(data)


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
               only: list[str] | None = None, overwrite: bool = False) -> dict:
    """Run every stage of ``recipe`` under ``run_dir`` (or the stages named in ``only``, whose
    inputs must then be up to date); returns the metrics of every up-to-date stage by name.

    A stage is skipped when its marker holds the digest of its configuration and of the
    digests of the stages it uses, so a change reruns that stage and every stage downstream
    of it, and nothing else; stages that do not use each other can run in separate processes
    (``only``). A stage that reruns starts anew, unless ``resume`` and its checkpoint was made
    with the same settings; ``overwrite`` reruns every stage anew."""
    run_dir = Path(run_dir)
    with one_writer(run_dir) if only is None else nullcontext():
        return _run_recipe(recipe, run_dir, resume, only, overwrite)


def _run_recipe(recipe: Recipe, run_dir: Path, resume: bool, only: list[str] | None,
                overwrite: bool) -> dict:
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
        if (not overwrite and marker.is_file()
                and json.loads(marker.read_text()).get("config") == digest):
            if only is None or stage.name in only:
                console.print(f"[green]skip[/] stage '{stage.name}': output is up to date")
            metrics[stage.name] = json.loads((out_dir / "metrics.json").read_text())
            if STAGES[stage.kind].show is show_evaluation and only is None:
                show_evaluation(metrics[stage.name], out_dir)
            continue
        if only is not None and stage.name not in only:
            continue
        missing = [d for d in deps if d not in metrics]
        if missing:
            raise UserError(f"stage '{stage.name}' needs stage '{missing[0]}', which is not up "
                            "to date: run it first or name it too")
        console.print(f"[bold]stage[/] '{stage.name}' ({stage.kind})")
        marker.unlink(missing_ok=True)
        changed = training_changes(out_dir, resolved) if resume and out_dir.is_dir() else []
        if changed:
            console.print(f"stage '{stage.name}': settings changed ({', '.join(changed[:4])}); "
                          "training anew")
        kind = STAGES[stage.kind]
        metrics[stage.name] = kind.execute(resolved, out_dir, resume and not changed,
                                           overwrite=True)
        if kind.show is show_evaluation:
            kind.show(metrics[stage.name], out_dir)
        atomic_write_json(marker, {"config": digest})
    if only is None:
        atomic_write_json(run_dir / "metrics.json", metrics)
        console.print(f"report: {write_report(run_dir)}")
    return metrics
