"""The ``train`` stage for translation models: a teacher on gold data, or a student on gold or
distilled targets (Seq-KD), optionally with word-level KD from a teacher's token distributions.
It runs through the project's one training loop (``trainer.Trainer``)."""

from __future__ import annotations

import copy
import logging
import random
from pathlib import Path

import torch

from textdistill.config import (
    DecodeConfig,
    GenerateConfig,
    Seq2SeqConfig,
    save_config,
)
from textdistill.data.batching import ParallelDataset
from textdistill.data.parallel import load_pairs
from textdistill.data.readers import read_lines
from textdistill.errors import UserError
from textdistill.metrics import corpus_bleu_chrf
from textdistill.models.common import count_parameters
from textdistill.models.nat import NATModel, build_nat
from textdistill.models.seq2seq import (
    build_seq2seq,
    check_arch,
    init_from_teacher,
    load_seq2seq,
    save_seq2seq,
)
from textdistill.objectives import ObjectiveModule, check_task, topk_ready
from textdistill.paths import atomic_write_json, atomic_write_text
from textdistill.precision import (
    default_device,
    for_inference,
    full_precision,
    prefer_eager_attention,
    resolve_precision,
)
from textdistill.runs import training_record
from textdistill.seq2seq.generate import (
    generate_corpus,
    read_kbest,
    select_by_sentence_bleu,
    translate,
)
from textdistill.seq2seq.vocab import check_languages, load_tokenizer, train_tokenizer
from textdistill.tasks.nat import NATTask
from textdistill.tasks.seq2seq import Seq2SeqTask
from textdistill.teacher_cache import teacher_topk
from textdistill.trainer import PhaseSpec, Trainer

log = logging.getLogger(__name__)


def _tokenizer(cfg: Seq2SeqConfig, pairs, out_dir: Path):
    data = cfg.data
    if cfg.tokenizer is not None:
        check_languages(cfg.tokenizer, data.src_lang, data.tgt_lang)
        return load_tokenizer(cfg.tokenizer)
    texts = [s for s, _ in pairs] + [t for _, t in pairs]
    return train_tokenizer(texts, cfg.vocab_size, out_dir / "tokenizer",
                           src_lang=data.src_lang, tgt_lang=data.tgt_lang)


def _clipped_lengths(train: ParallelDataset, max_offset: int) -> int:
    """How many training pairs' target length lies outside the length predictor's range
    (source length ± ``max_offset``): they train the nearest class, the end of the range."""
    clipped = sum(abs(len(t) - len(s)) > max_offset
                  for s, t in zip(train.src, train.tgt, strict=True))
    if clipped:
        log.warning("%d of %d training targets differ from their source by more than %d "
                    "tokens: their length class is clipped to the range (raise "
                    "nat.max_length_offset to cover them)", clipped, len(train), max_offset)
    return clipped


def run_train(cfg: Seq2SeqConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a translation model; writes ``out_dir/model`` (best dev BLEU: greedy decoding, or
    mask-predict for a NAT model)."""
    out_dir = Path(out_dir)
    task = Seq2SeqTask() if cfg.nat is None else NATTask(cfg.nat.masking)
    check_task(task, cfg.objectives)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    train_pairs = load_pairs(cfg.data, "train")
    dev_pairs = load_pairs(cfg.data, "dev")
    teacher = None
    if cfg.teacher is not None:
        check_languages(cfg.teacher, cfg.data.src_lang, cfg.data.tgt_lang)
        teacher, tokenizer = load_seq2seq(cfg.teacher)
        if isinstance(teacher, NATModel):
            raise UserError(f"teacher {cfg.teacher} is a non-autoregressive model: word-level "
                            "KD and init_from_teacher need an autoregressive teacher (a NAT "
                            "model can teach through its translations: generate, then "
                            "data.targets)")
    else:
        tokenizer = _tokenizer(cfg, train_pairs, out_dir)
    check_arch(cfg.arch)
    if cfg.nat is None:
        model = build_seq2seq(cfg.preset, tokenizer, seed=cfg.seed, **cfg.arch)
    else:
        model = build_nat(cfg.preset, tokenizer, seed=cfg.seed,
                          decoder_input=cfg.nat.decoder_input,
                          max_length_offset=cfg.nat.max_length_offset, **cfg.arch)
    if cfg.init_from_teacher is not None:
        init_from_teacher(model, teacher, cfg.init_from_teacher.encoder,
                          cfg.init_from_teacher.decoder)
    needs_teacher = any(o.needs_teacher for o in cfg.objectives)
    precision = resolve_precision(cfg.precision, default_device())
    for m in (model, teacher if needs_teacher else None):
        if m is not None:
            prefer_eager_attention(m, precision, default_device())
    module = ObjectiveModule(task, model, [cfg.objectives], teacher if needs_teacher else None)
    train = ParallelDataset(train_pairs, tokenizer, cfg.data.max_length)
    if train.truncated:
        log.warning("%d of %d training pairs have a side longer than data.max_length = %d "
                    "tokens: cut to it", train.truncated, len(train), cfg.data.max_length)
    clipped = None if cfg.nat is None else _clipped_lengths(train, cfg.nat.max_length_offset)
    cache = None
    if needs_teacher and cfg.teacher_cache and all(topk_ready(o) for o in cfg.objectives):
        teacher.to(default_device())  # the teacher pass runs where training will
        train.teacher_topk, hit = teacher_topk(teacher, Path(cfg.teacher), train,
                                               cfg.data.batch_tokens, precision, cfg.teacher_topk)
        cache = "reused" if hit else "computed"
    decode = DecodeConfig(method="greedy", max_length=cfg.data.max_length)
    if cfg.nat is not None:
        decode = decode.model_copy(update={"iterations": cfg.nat.dev_iterations,
                                           "length_beam": cfg.nat.length_beam})
    references = [t for _, t in dev_pairs]

    def evaluate_fn(m: ObjectiveModule) -> dict[str, float]:
        # decoded by a copy with its weights in the training precision (for_inference), out of
        # the trainer's autocast region
        with full_precision(default_device()):
            student = for_inference(copy.deepcopy(m.student), precision)
            hyps = translate(student, tokenizer, [s for s, _ in dev_pairs], decode)
        return corpus_bleu_chrf(hyps, references)

    def save_fn(m: ObjectiveModule, folder: Path) -> None:
        save_seq2seq(m.student, tokenizer, folder, cfg.data.src_lang, cfg.data.tgt_lang)

    save_config(cfg, out_dir / "config.yaml")
    trainer = Trainer(module, train, cfg.data.batch_tokens,
                      [PhaseSpec("train", cfg.epochs, cfg.optim)], out_dir, evaluate_fn, save_fn,
                      select_metric="bleu", seed=cfg.seed, run_config=training_record(cfg),
                      precision=precision)
    summary = trainer.train(resume=resume)
    summary.update(train_pairs=len(train_pairs), truncated_pairs=train.truncated,
                   params=count_parameters(model)["params"])
    if cache is not None:
        summary["teacher_cache"] = cache
    if clipped is not None:
        summary["length_offsets_clipped"] = clipped
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary


def run_generate(cfg: GenerateConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Decode ``cfg.src`` or a split of ``cfg.data`` with a teacher: ``kbest.jsonl`` (every
    hypothesis with its score) and ``targets.txt`` (one target per source, in input order) for
    training students. Finished shards of an interrupted run are kept and reused."""
    out_dir = Path(out_dir)
    if cfg.src is not None:
        sources, references = read_lines(cfg.src), None
        if not sources:
            raise UserError(f"{cfg.src} has no lines to decode")
        langs: dict = {}
    else:
        pairs = load_pairs(cfg.data.model_copy(update={"targets": None}), cfg.split)
        sources, references = [s for s, _ in pairs], [t for _, t in pairs]
        langs = {"src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang}
    if cfg.kbest_from is None and not Path(cfg.model).is_dir():
        raise UserError(f"model folder {cfg.model} does not exist")
    save_config(cfg, out_dir / "config.yaml")
    if cfg.kbest_from is None:
        decode = DecodeConfig(**cfg.model_dump(include=set(DecodeConfig.model_fields)))
        summary = generate_corpus(cfg.model, sources, out_dir / "kbest.jsonl", decode,
                                  batch_tokens=cfg.data.batch_tokens, shard_size=cfg.shard_size,
                                  overwrite=True, **langs,
                                  precision=resolve_precision(cfg.precision, default_device()))
        kbest = read_kbest(out_dir / "kbest.jsonl")
    else:
        summary = {}
        kbest = read_kbest(cfg.kbest_from)
        if len(kbest) != len(sources):
            raise UserError(f"{cfg.kbest_from} has k-best lists for {len(kbest)} sources but the "
                            f"{cfg.split} split has {len(sources)}: select from lists of the "
                            "same split and data settings")
    if cfg.select == "sentence_bleu":
        targets = select_by_sentence_bleu(kbest, references)
    else:
        targets = [hyps[0].text for hyps in kbest]
    atomic_write_text(out_dir / "targets.txt", "".join(t + "\n" for t in targets))
    result: dict = {"sources": len(sources)}
    if "seconds" in summary:  # decoded here, not selected from an earlier stage's lists
        result.update(seconds=round(summary["seconds"], 1),
                      sentences_per_second=round(len(sources) / max(summary["seconds"], 1e-9),
                                                 1))
    if references is not None:
        result.update({f"{k}_vs_real": v
                       for k, v in corpus_bleu_chrf(targets, references).items()})
    atomic_write_json(out_dir / "metrics.json", result)
    return result
