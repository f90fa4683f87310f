"""The ``general-distill`` stage: TinyBERT's general distillation.

A student of a preset shape learns a pretrained encoder's embeddings, hidden states and
pre-softmax attention scores on unlabeled text, through the one objective runner and trainer
(checkpoints every ``checkpoint_every`` steps and at each epoch's end, so a killed run resumes
where it stopped, neither repeating nor skipping data). Its ``model/`` is a bare BERT encoder
that ``distill`` starts from (``student.init_from``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from textdistill.config import GeneralDistillConfig, save_config
from textdistill.data.batching import TextPieces, length_batches
from textdistill.data.corpora import split_heldout
from textdistill.distill import seed_everything
from textdistill.models.classifier import build_student, load_encoder
from textdistill.models.common import count_parameters, save_pretrained_atomic
from textdistill.objectives import ObjectiveModule
from textdistill.paths import atomic_write_json
from textdistill.precision import (
    autocast,
    default_device,
    prefer_eager_attention,
    resolve_precision,
)
from textdistill.runs import training_record
from textdistill.tasks.classification import EncoderTask
from textdistill.trainer import PhaseSpec, Trainer


def heldout_losses(module: ObjectiveModule, data: TextPieces, batch_size: int,
                   precision: str) -> dict[str, float]:
    """Each loss term (and their weighted sum, ``loss``), averaged over the held-out pieces."""
    device = next(module.parameters()).device
    totals: dict[str, float] = {}
    module.eval()
    with torch.no_grad(), autocast(precision, device):
        for batch in data.loader(batch_size, shuffle=False):
            out = module({k: v.to(device) for k, v in batch.items()})
            n = batch["input_ids"].shape[0]
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value) * n
    module.train()
    return {key: total / len(data) for key, total in totals.items()}


def run_general_distill(cfg: GeneralDistillConfig, out_dir: str | Path,
                        resume: bool = False) -> dict:
    """Distil ``cfg.teacher`` into a ``cfg.student.preset`` encoder on unlabeled text
    (``out_dir/model``); metrics: held-out losses, tokens per second, seconds per epoch."""
    out_dir = Path(out_dir)
    seed_everything(cfg.seed)
    teacher, tokenizer = load_encoder(cfg.teacher)
    student = build_student(cfg.student.preset, teacher, None, cfg.student.init_from_teacher)
    sizes = {"student_params": count_parameters(student)["params"],
             "teacher_params": count_parameters(teacher)["params"]}
    train_texts, held_texts = split_heldout(cfg.data, cfg.seed)
    train = TextPieces(train_texts, tokenizer, cfg.data.max_length)
    held = TextPieces(held_texts, tokenizer, cfg.data.max_length)
    module = ObjectiveModule(EncoderTask(), student, [cfg.objectives], teacher)
    save_config(cfg, out_dir / "config.yaml")

    precision = resolve_precision(cfg.precision, default_device())
    for model in (student, teacher):
        prefer_eager_attention(model, precision, default_device())
    trainer = Trainer(
        module, train, cfg.data.batch_size,
        [PhaseSpec("general", cfg.epochs, cfg.optim, select=False)], out_dir,
        evaluate_fn=lambda m: {},
        save_fn=lambda m, folder: save_pretrained_atomic(m.student, tokenizer, folder),
        seed=cfg.seed, run_config=training_record(cfg), precision=precision,
        checkpoint_every=cfg.checkpoint_every)
    summary = trainer.train(resume=resume)
    summary["heldout"] = heldout_losses(trainer.accelerator.unwrap_model(trainer.module), held,
                                        cfg.data.batch_size, precision)
    tokens = sum(train.lengths())
    steps_per_epoch = len(length_batches(train.lengths(), cfg.data.batch_size))
    step = sum(trainer.step_seconds) / max(1, len(trainer.step_seconds))
    summary.update({
        "train_texts": len(train_texts), "heldout_texts": len(held_texts),
        "train_pieces": len(train), "train_tokens": tokens,
        "seconds_per_epoch": round(step * steps_per_epoch, 1),
        "tokens_per_second": round(tokens / max(step * steps_per_epoch, 1e-9), 1),
        **sizes})
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary
