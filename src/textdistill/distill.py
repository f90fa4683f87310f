"""The ``finetune`` and ``distill`` stages for sequence classifiers.

Both train through the objective runner (``objectives.ObjectiveModule``) with the
classification task adapter: a student (or the teacher being fine-tuned) whose loss is the
weighted sum of the objectives of the current phase.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from textdistill.config import DistillConfig, FinetuneConfig, Hard, save_config
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import ClassificationCorpus, load_classification, subsample
from textdistill.errors import UserError
from textdistill.evaluate import predict_labels
from textdistill.losses import REGISTRY
from textdistill.metrics import classification_metrics
from textdistill.models.classifier import (
    build_student,
    is_classifier,
    load_classifier,
    resolve_model_path,
)
from textdistill.models.common import check_same_vocabulary, save_pretrained_atomic
from textdistill.objectives import ObjectiveModule, check_task
from textdistill.paths import atomic_write_json
from textdistill.precision import default_device, prefer_eager_attention, resolve_precision
from textdistill.runs import training_record
from textdistill.tasks.classification import ClassificationTask
from textdistill.teacher_cache import teacher_logits
from textdistill.trainer import PhaseSpec, Trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _datasets(cfg, corpus: ClassificationCorpus, tokenizer):
    data = cfg.data
    train = subsample(corpus.split("train"), data.max_train_examples, cfg.seed)
    dev = subsample(corpus.split("dev"), data.max_eval_examples, cfg.seed)
    return (TokenizedDataset(train, tokenizer, data.max_length),
            TokenizedDataset(dev, tokenizer, data.max_length))


def _train(module: ObjectiveModule, tokenizer, cfg, phases: list[PhaseSpec], corpus, train, dev,
           out_dir: Path, resume: bool, extra: dict | None = None) -> dict:
    def evaluate_fn(m: ObjectiveModule) -> dict[str, float]:
        y_pred = predict_labels(m.student, dev, cfg.data.eval_batch_size)
        return classification_metrics(dev.labels, y_pred)

    def save_fn(m: ObjectiveModule, folder: Path) -> None:
        save_pretrained_atomic(m.student, tokenizer, folder)

    precision = resolve_precision(cfg.precision, default_device())
    for model in (module.student, module.teacher):
        if model is not None:
            prefer_eager_attention(model, precision, default_device())
    trainer = Trainer(module, train, cfg.data.batch_size, phases, out_dir, evaluate_fn, save_fn,
                      select_metric=cfg.select_metric, seed=cfg.seed,
                      run_config=training_record(cfg), precision=precision)
    summary = trainer.train(resume=resume)
    summary["labels"] = corpus.labels
    summary["train_rows"] = len(train)
    summary.update(extra or {})
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary


def run_finetune(cfg: FinetuneConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Fine-tune ``cfg.model`` into a classifier on ``cfg.data.corpus`` (``out_dir/model``)."""
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    corpus = load_classification(cfg.data)
    model, tokenizer = load_classifier(cfg.model, corpus.labels)
    train, dev = _datasets(cfg, corpus, tokenizer)
    module = ObjectiveModule(ClassificationTask(), model, [[Hard(loss="hard")]])
    save_config(cfg, out_dir / "config.yaml")
    specs = [PhaseSpec("finetune", cfg.epochs, cfg.optim)]
    return _train(module, tokenizer, cfg, specs, corpus, train, dev, out_dir, resume)


def run_distill(cfg: DistillConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a student from ``cfg.student`` with the objectives of each phase.

    With only the ``hard`` loss this is the no-teacher baseline; with a teacher, phases whose
    objectives have no prediction-layer loss (TinyBERT's intermediate stage) neither evaluate
    on dev nor select the best model.
    """
    out_dir = Path(out_dir)
    for phase in cfg.phases:
        check_task(ClassificationTask(), phase.objectives)
    seed_everything(cfg.seed)
    corpus = load_classification(cfg.data)
    teacher = tokenizer = None
    if cfg.teacher is not None:
        teacher, tokenizer = load_classifier(cfg.teacher, corpus.labels)
        if not is_classifier(teacher.config):
            raise UserError(
                f"the teacher '{cfg.teacher}' is not a fine-tuned classifier: run 'textdistill "
                "finetune' first and give its model folder"
            )
        reference = teacher
    else:
        reference, tokenizer = load_classifier(cfg.student.vocab_from, corpus.labels)
    if cfg.student.init_from is not None:  # a general student: its encoder, a new head
        student, own = load_classifier(cfg.student.init_from, corpus.labels)
        check_same_vocabulary(own, tokenizer, f"the student in {cfg.student.init_from}",
                              f"the teacher in {cfg.teacher or cfg.student.vocab_from}")
    else:
        student = build_student(cfg.student.preset, reference, corpus.labels,
                                cfg.student.init_from_teacher)
    module = ObjectiveModule(ClassificationTask(), student, [p.objectives for p in cfg.phases],
                             teacher)
    train, dev = _datasets(cfg, corpus, tokenizer)
    save_config(cfg, out_dir / "config.yaml")
    cache = None
    if teacher is not None and cfg.teacher_cache and any(
            all(REGISTRY[o.loss].reads <= {"logits"} for o in p.objectives) for p in cfg.phases):
        precision = resolve_precision(cfg.precision, default_device())
        teacher.to(default_device())  # the teacher pass runs where training will
        train.teacher_logits, hit = teacher_logits(
            teacher, resolve_model_path(cfg.teacher), train, cfg.data.eval_batch_size, precision)
        cache = "reused" if hit else "computed"
    specs = [PhaseSpec(p.name, p.epochs, p.optim,
                       select=any("logits" in REGISTRY[o.loss].reads for o in p.objectives))
             for p in cfg.phases]
    return _train(module, tokenizer, cfg, specs, corpus, train, dev, out_dir, resume,
                  extra={"teacher_cache": cache} if cache else None)
