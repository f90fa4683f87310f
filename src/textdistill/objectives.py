"""The objective runner: a student, its frozen teacher and a task adapter; ``forward(batch,
phase)`` sums the weighted loss terms of that phase, each computed by the loss registry
(``losses.REGISTRY``) from what the task adapter gives it. Every task trains through this."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from textdistill.config import LossSpec, SoftTarget
from textdistill.errors import UserError
from textdistill.losses import REGISTRY, ModelShape, TaskOutputs
from textdistill.precision import full_precision


class Task(Protocol):
    """A task adapter: turns a batch into what the losses read."""

    name: str
    provides: frozenset[str]
    """The :class:`TaskOutputs` fields this task can fill (``logits`` at least)."""

    def outputs(self, model: nn.Module, batch: dict[str, Tensor], reads: set[str]
                ) -> TaskOutputs: ...

    def shape(self, model: nn.Module) -> ModelShape: ...


def check_task(task: Task, specs: list[LossSpec]) -> None:
    """UserError for a loss the task cannot compute (before any model is loaded)."""
    for spec in specs:
        missing = sorted(REGISTRY[spec.loss].reads - task.provides)
        if missing:
            raise UserError(
                f"the {task.name} task cannot compute the '{spec.loss}' loss: its models give "
                f"no {', '.join(missing)}; use a loss on logits (hard, kd, reverse_kl, jsd, "
                "skew_kl, tvd, soft_ce)"
            )


def topk_ready(spec: LossSpec) -> bool:
    """Whether ``spec`` can use cached top-k teacher outputs: a divergence of the soft-target
    family at temperature 1, or a loss that needs no teacher."""
    return not spec.needs_teacher or (isinstance(spec, SoftTarget) and spec.temperature == 1.0)


def _term_names(specs: list[LossSpec]) -> list[str]:
    """Log names of a phase's terms: the loss name, numbered when a loss repeats."""
    names = [s.loss for s in specs]
    return [f"{n}{names[:i].count(n) + 1}" if names.count(n) > 1 else n
            for i, n in enumerate(names)]


class ObjectiveModule(nn.Module):
    """A student plus the learned parts of its losses (projections); the teacher is held
    outside the parameters (frozen, never saved)."""

    def __init__(self, task: Task, student: nn.Module, phases: list[list[LossSpec]],
                 teacher: nn.Module | None = None) -> None:
        super().__init__()
        self.task = task
        self.student = student
        self.phases = phases
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.matches = nn.ModuleDict()
        self._keys: list[list[str | None]] = []
        built: dict[str, str] = {}
        for specs in phases:
            check_task(task, specs)
            keys: list[str | None] = []
            for spec in specs:
                term = REGISTRY[spec.loss]
                if spec.needs_teacher and teacher is None:
                    raise UserError(f"the '{spec.loss}' loss needs a teacher: set 'teacher'")
                key = None
                if term.build is not None:
                    ident = spec.model_dump_json(exclude={"weight"})
                    if ident not in built:
                        built[ident] = f"{spec.loss}_{len(built)}"
                        self.matches[built[ident]] = term.build(
                            spec, task.shape(student), task.shape(teacher))
                    key = built[ident]
                keys.append(key)
            self._keys.append(keys)

    def _apply(self, fn, recurse: bool = True):
        """``.to(device)`` and the like reach the teacher too (it is not a submodule)."""
        super()._apply(fn, recurse)
        for teacher in self._teacher:
            teacher._apply(fn, recurse)
        return self

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def forward(self, batch: dict[str, Tensor], phase: int = 0) -> dict[str, Tensor]:
        specs = self.phases[phase]
        reads = set().union(*(REGISTRY[s.loss].reads for s in specs))
        student = self.task.outputs(self.student, batch, reads)
        teacher = None
        if any(s.needs_teacher for s in specs):
            if "teacher_logits" in batch and reads <= {"logits"}:  # precomputed (teacher_cache)
                teacher = TaskOutputs(logits=batch["teacher_logits"],
                                      attention_mask=batch.get("attention_mask"))
            elif "teacher_top" in batch and all(topk_ready(s) for s in specs):
                teacher = TaskOutputs(logits=batch["teacher_top"],
                                      top_indices=batch["teacher_top_indices"])
            else:
                with torch.no_grad():
                    teacher = self.task.outputs(self.teacher, batch, reads)
        labels = batch.get("labels")
        terms = {}
        with full_precision(next(self.student.parameters()).device):  # losses in fp32
            for name, spec, key in zip(_term_names(specs), specs, self._keys[phase],
                                       strict=True):
                match = self.matches[key] if key is not None else None
                value = REGISTRY[spec.loss].compute(spec, student, teacher, labels, match)
                terms[name] = spec.weight * value
        return {"loss": sum(terms.values()), **terms}
