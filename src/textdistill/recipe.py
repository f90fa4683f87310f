"""Recipes: stages run in order under one run directory, each skipped when its output is up to
date, so an interrupted recipe resumes where it stopped."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class _Planned:
    """A stage to run: its resolved config, the stages it uses, its folder, its digest and
    the recipe it belongs to."""

    stage: Any
    resolved: Any
    deps: list[str]
    out_dir: Path
    digest: str
    recipe: str


def run_recipe(recipe: Recipe, run_dir: str | Path, resume: bool = False,
               only: list[str] | None = None, overwrite: bool = False, jobs: int = 1) -> dict:
    """Run every stage of ``recipe`` under ``run_dir`` (or the stages named in ``only``, whose
    inputs must then be up to date); returns the metrics of every up-to-date stage by name.

    A stage is skipped when its marker holds the digest of its configuration and of the
    digests of the stages it uses, so a change reruns that stage and every stage downstream
    of it, and nothing else. A stage that reruns starts anew, unless ``resume`` and its
    checkpoint was made with the same settings; ``overwrite`` reruns every stage anew. With
    ``jobs`` > 1, stages that do not use each other run at the same time, each in its own
    process, sharing the CPU threads between them."""
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    run_dir = Path(run_dir)
    with one_writer(run_dir) if only is None else nullcontext():
        return _run_recipe(recipe, run_dir, resume, only, overwrite, jobs)


def _run_recipe(recipe: Recipe, run_dir: Path, resume: bool, only: list[str] | None,
                overwrite: bool, jobs: int) -> dict:
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
    plan: list[_Planned] = []
    for stage in recipe.stages:
        resolved = _resolved(stage, run_dir, earlier)
        deps = _references(stage, earlier)
        out_dir = run_dir / stage.name
        marker = out_dir / "stage.json"
        digest = digests[stage.name] = config_hash(resolved, "".join(digests[d] for d in deps))
        earlier.append(stage.name)
        made = json.loads(marker.read_text()) if marker.is_file() else {}
        if not overwrite and made.get("config") == digest:
            if only is None or stage.name in only:
                console.print(f"[green]skip[/] stage '{stage.name}': output is up to date")
            metrics[stage.name] = json.loads((out_dir / "metrics.json").read_text())
            if STAGES[stage.kind].show is show_evaluation and only is None:
                show_evaluation(metrics[stage.name], out_dir)
            continue
        if only is not None and stage.name not in only:
            continue
        other = made.get("recipe")
        if not overwrite and other not in (None, recipe.name):
            raise UserError(f"stage '{stage.name}' in {run_dir} was made by recipe '{other}' "
                            f"with other settings; rename the stage in recipe '{recipe.name}', "
                            "use another --run-dir, or pass --overwrite to replace it")
        planned = {p.stage.name for p in plan}
        missing = [d for d in deps if d not in metrics and d not in planned]
        if missing:
            raise UserError(f"stage '{stage.name}' needs stage '{missing[0]}', which is not up "
                            "to date: run it first or name it too")
        plan.append(_Planned(stage, resolved, deps, out_dir, digest, recipe.name))
    if jobs == 1:
        for item in plan:
            metrics[item.stage.name] = _run_stage(item, resume)
    else:
        _run_side_by_side(plan, metrics, resume, jobs)
    if only is None:
        atomic_write_json(run_dir / "metrics.json", metrics)
        console.print(f"report: {write_report(run_dir)}")
    return metrics


def _run_stage(item: _Planned, resume: bool) -> dict:
    """Run one stage (anew, or on from its checkpoint) and mark its output up to date."""
    stage, out_dir = item.stage, item.out_dir
    console.print(f"[bold]stage[/] '{stage.name}' ({stage.kind})")
    marker = out_dir / "stage.json"
    marker.unlink(missing_ok=True)
    changed = training_changes(out_dir, item.resolved) if resume and out_dir.is_dir() else []
    if changed:
        console.print(f"stage '{stage.name}': settings changed ({', '.join(changed[:4])}); "
                      "training anew")
    kind = STAGES[stage.kind]
    metrics = kind.execute(item.resolved, out_dir, resume and not changed, overwrite=True)
    if kind.show is show_evaluation:
        kind.show(metrics, out_dir)
    atomic_write_json(marker, {"config": item.digest, "recipe": item.recipe})
    return metrics


def _stop_when_gone(parent: int) -> None:
    """Send this process SIGTERM (a training stage then checkpoints and stops) once the
    process ``parent`` has ended, however it ended."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except PermissionError:  # alive, another user's: not ours to watch
            pass


def _stage_process(item: _Planned, resume: bool, threads: int, results, parent: int) -> None:
    """A worker process: one stage on ``threads`` CPU threads; puts (name, ok, metrics or
    the UserError to raise) on ``results``; stops with its checkpoint if ``parent`` ends."""
    import torch

    threading.Thread(target=_stop_when_gone, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    name = item.stage.name
    try:
        results.put((name, True, _run_stage(item, resume)))
    except UserError as exc:
        results.put((name, False, exc))
    except BaseException as exc:  # a bug: its traceback goes to stderr
        traceback.print_exc()
        results.put((name, False, UserError(f"stage '{name}' failed with "
                                            f"{type(exc).__name__}: {exc} (traceback above)")))


def _run_side_by_side(plan: list[_Planned], metrics: dict[str, dict], resume: bool,
                      jobs: int) -> None:
    """Run ``plan`` with up to ``jobs`` stages at a time, each in a process of its own; a
    stage starts when the stages it uses are done, with the CPU threads split evenly among
    the stages that start or run then. The first failure stops the others (they save their
    checkpoints: ``--resume`` goes on)."""
    import torch

    cores = torch.get_num_threads()
    # a fork server that has imported the stages' modules once starts each stage in a moment;
    # it runs no torch work itself, so forking it is safe for OpenMP
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["textdistill.recipe", "textdistill.distill",
                                    "textdistill.seq2seq.train", "textdistill.evaluate"])
    results = context.Queue()
    waiting = list(plan)
    running: dict[str, Any] = {}

    def stop(signum, frame) -> None:
        from textdistill.trainer import Interrupted

        raise Interrupted(f"stopped by {signal.Signals(signum).name}; the stages that were "
                          "running saved their checkpoints: rerun the same command with "
                          "--resume")

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        while waiting or running:
            ready = [p for p in waiting if all(d in metrics for d in p.deps)]
            ready = ready[:jobs - len(running)]
            for item in ready:
                threads = max(1, cores // (len(running) + len(ready)))
                waiting.remove(item)
                proc = context.Process(target=_stage_process, daemon=True,
                                       args=(item, resume, threads, results, os.getpid()))
                proc.start()
                running[item.stage.name] = proc
            name, ok, payload = _next_result(results, running)
            running.pop(name).join()
            if not ok:
                raise payload
            metrics[name] = payload
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for proc in running.values():  # stop the others (SIGTERM: checkpoint, then exit)
            proc.terminate()
        for proc in running.values():
            proc.join()


def _next_result(results, running: dict[str, Any]) -> tuple[str, bool, Any]:
    """The next finished stage's result; a process that died without one (killed, out of
    memory) is reported as such."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            for name, proc in running.items():
                if proc.exitcode is not None:
                    try:  # its result may have arrived just now
                        return results.get(timeout=1.0)
                    except queue.Empty:
                        return name, False, UserError(
                            f"stage '{name}' stopped without a result (exit code "
                            f"{proc.exitcode}): rerun with --resume")
