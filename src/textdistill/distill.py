"""The ``finetune`` and ``distill`` stages for sequence classifiers.

Both train through one module: a student (or the teacher being fine-tuned) whose loss is the
weighted sum of the objectives of the current phase. Losses come from ``losses.py``; hidden
states come from ``output_hidden_states`` and attention scores from ``taps.AttentionTap``, so
the models stay unmodified ``transformers`` models.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from textdistill import losses
from textdistill.config import DistillConfig, FinetuneConfig, Objective, Phase, save_config
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import ClassificationCorpus, load_classification, subsample
from textdistill.errors import UserError
from textdistill.evaluate import classification_metrics, predict_labels
from textdistill.mapping import layer_map, layer_weights
from textdistill.models.classifier import build_student, load_classifier, save_model
from textdistill.paths import atomic_write_json
from textdistill.taps import AttentionTap
from textdistill.trainer import PhaseSpec, Trainer

INTERMEDIATE = {"embedding", "hidden", "attention"}
TEACHER_LOSSES = {"kd", "soft_ce", *INTERMEDIATE}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class DistillModule(nn.Module):
    """A student plus the learned projections; ``forward(batch, phase)`` returns the losses.

    The teacher is held outside the module's parameters (it is frozen and never saved).
    """

    def __init__(
        self,
        student: nn.Module,
        phases: list[Phase],
        teacher: nn.Module | None = None,
        temperature: float = 1.0,
        alpha: float = 0.5,
        layer_map_cfg=None,
        shared_projection: bool = False,
        average_heads: bool = False,
    ):
        super().__init__()
        self.student = student
        self.phases = phases
        self.temperature = temperature
        self.alpha = alpha
        self.average_heads = average_heads
        used = {o.loss for p in phases for o in p.objectives}
        if used & TEACHER_LOSSES and teacher is None:
            raise UserError(f"losses {sorted(used & TEACHER_LOSSES)} need a teacher")
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []
        self.needs_hidden = bool(used & {"embedding", "hidden"})
        self._taps: list[AttentionTap] = []
        if used & INTERMEDIATE:
            s_cfg, t_cfg = student.config, teacher.config
            lm = layer_map_cfg
            self.map = layer_map(lm.strategy, s_cfg.num_hidden_layers, t_cfg.num_hidden_layers,
                                 lm.layers)
            self.weights = layer_weights(lm.weights, s_cfg.num_hidden_layers)
            if "embedding" in used:
                self.embedding_proj = losses.Projection(
                    s_cfg.hidden_size, t_cfg.hidden_size, 1, shared=True)
            if "hidden" in used:
                self.hidden_proj = losses.Projection(
                    s_cfg.hidden_size, t_cfg.hidden_size, len(self.map), shared=shared_projection)
            if "attention" in used:
                if s_cfg.num_attention_heads != t_cfg.num_attention_heads and not average_heads:
                    raise UserError(
                        f"the attention loss compares heads one to one, but the student has "
                        f"{s_cfg.num_attention_heads} heads and the teacher "
                        f"{t_cfg.num_attention_heads}: set average_heads=true or drop the "
                        "attention loss"
                    )
                self._taps = [AttentionTap(student), AttentionTap(teacher)]

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def forward(self, batch: dict[str, torch.Tensor], phase: int = 0) -> dict[str, torch.Tensor]:
        objectives: list[Objective] = self.phases[phase].objectives
        names = {o.loss for o in objectives}
        want_hidden = bool(names & {"embedding", "hidden"})
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        for tap in self._taps:
            tap.clear()
        s_out = self.student(**inputs, output_hidden_states=want_hidden)
        t_out = None
        if names & TEACHER_LOSSES:
            with torch.no_grad():
                t_out = self.teacher(**inputs, output_hidden_states=want_hidden)
        terms = {}
        for obj in objectives:
            terms[obj.loss] = obj.weight * self._loss(obj.loss, batch, s_out, t_out)
        for tap in self._taps:
            tap.clear()
        return {"loss": sum(terms.values()), **terms}

    def _loss(self, name: str, batch, s_out, t_out) -> torch.Tensor:
        mask = batch["attention_mask"]
        if name == "hard":
            return losses.hard_label_loss(s_out.logits, batch["labels"])
        if name == "kd":
            return losses.kd_loss(s_out.logits, t_out.logits, batch["labels"],
                                  self.temperature, self.alpha)
        if name == "soft_ce":
            return losses.soft_cross_entropy(s_out.logits, t_out.logits, self.temperature)
        if name == "embedding":
            projected = self.embedding_proj(s_out.hidden_states[0], 0)
            return losses.hidden_mse(projected, t_out.hidden_states[0], mask)
        if name == "hidden":
            return sum(
                w * losses.hidden_mse(self.hidden_proj(s_out.hidden_states[m], m - 1),
                                      t_out.hidden_states[g], mask)
                for m, (g, w) in enumerate(zip(self.map, self.weights, strict=True), start=1)
            )
        if name == "attention":
            s_scores, t_scores = self._taps[0].scores(), self._taps[1].scores()
            return sum(
                w * losses.attention_mse(s_scores[m - 1], t_scores[g - 1], mask,
                                         average_heads=self.average_heads)
                for m, (g, w) in enumerate(zip(self.map, self.weights, strict=True), start=1)
            )
        raise UserError(f"unknown loss '{name}'")


def _datasets(cfg, corpus: ClassificationCorpus, tokenizer):
    data = cfg.data
    train = subsample(corpus.split("train"), data.max_train_examples, cfg.seed)
    dev = subsample(corpus.split("dev"), data.max_eval_examples, cfg.seed)
    return (TokenizedDataset(train, tokenizer, data.max_length),
            TokenizedDataset(dev, tokenizer, data.max_length))


def _train(module: DistillModule, tokenizer, cfg, phases: list[PhaseSpec], corpus, train, dev,
           out_dir: Path, resume: bool) -> dict:
    def evaluate_fn(m: DistillModule) -> dict[str, float]:
        y_pred = predict_labels(m.student, dev, cfg.data.eval_batch_size)
        return classification_metrics(dev.labels, y_pred)

    def save_fn(m: DistillModule, folder: Path) -> None:
        save_model(m.student, tokenizer, folder)

    trainer = Trainer(module, train, cfg.data.batch_size, phases, out_dir, evaluate_fn, save_fn,
                      select_metric=cfg.select_metric, seed=cfg.seed)
    summary = trainer.train(resume=resume)
    summary["labels"] = corpus.labels
    summary["train_rows"] = len(train)
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary


def run_finetune(cfg: FinetuneConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Fine-tune ``cfg.model`` into a classifier on ``cfg.data.corpus`` (``out_dir/model``)."""
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    corpus = load_classification(cfg.data.corpus)
    model, tokenizer = load_classifier(cfg.model, corpus.labels)
    train, dev = _datasets(cfg, corpus, tokenizer)
    phases = [Phase(name="finetune", epochs=cfg.epochs, optim=cfg.optim)]
    module = DistillModule(model, phases)
    save_config(cfg, out_dir / "config.yaml")
    specs = [PhaseSpec("finetune", cfg.epochs, cfg.optim)]
    return _train(module, tokenizer, cfg, specs, corpus, train, dev, out_dir, resume)


def run_distill(cfg: DistillConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a student from ``cfg.student`` with the objectives of each phase.

    With only the ``hard`` loss this is the no-teacher baseline; with a teacher, phases whose
    objectives have no prediction-layer loss (TinyBERT's intermediate stage) evaluate on dev but
    do not select the best model.
    """
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    corpus = load_classification(cfg.data.corpus)
    teacher = tokenizer = None
    if cfg.teacher is not None:
        teacher, tokenizer = load_classifier(cfg.teacher, corpus.labels)
        if not any(a.endswith("ForSequenceClassification")
                   for a in (teacher.config.architectures or [])):
            raise UserError(
                f"the teacher '{cfg.teacher}' is not a fine-tuned classifier: run 'textdistill "
                "finetune' first and give its model folder"
            )
        reference = teacher
    else:
        reference, tokenizer = load_classifier(cfg.student.vocab_from, corpus.labels)
    student = build_student(cfg.student.preset, reference, corpus.labels,
                            cfg.student.init_from_teacher)
    module = DistillModule(student, cfg.phases, teacher, cfg.temperature, cfg.alpha,
                           cfg.layer_map, cfg.shared_projection, cfg.average_heads)
    train, dev = _datasets(cfg, corpus, tokenizer)
    save_config(cfg, out_dir / "config.yaml")
    predicting = {"kd", "soft_ce", "hard"}
    specs = [PhaseSpec(p.name, p.epochs, p.optim,
                       select=bool({o.loss for o in p.objectives} & predicting))
             for p in cfg.phases]
    return _train(module, tokenizer, cfg, specs, corpus, train, dev, out_dir, resume)
