"""The ``train`` stage for translation models: a teacher on gold data, or a student on gold or
distilled targets (Seq-KD), optionally with word-level KD from a teacher's token distributions.
It runs through the project's one training loop (``trainer.Trainer``)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from textdistill import losses
from textdistill.config import GenerateConfig, Seq2SeqConfig, TranslationEvalConfig, save_config
from textdistill.errors import UserError
from textdistill.paths import atomic_write_json, atomic_write_text
from textdistill.seq2seq.generate import (
    DecodeConfig,
    corpus_bleu_chrf,
    generate_batch,
    generate_corpus,
    make_batches,
    read_kbest,
    select_by_sentence_bleu,
)
from textdistill.seq2seq.parallel import load_l10n_pairs, read_lines
from textdistill.seq2seq.presets import (
    build_seq2seq,
    check_arch,
    copy_teacher_layers,
    count_parameters,
    label_smoothed_nll,
    save_seq2seq,
)
from textdistill.seq2seq.vocab import check_languages, load_tokenizer, train_tokenizer
from textdistill.trainer import PhaseSpec, Trainer


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of at most ``max_tokens`` padded tokens, similar lengths together, in a seeded
    order that depends only on (seed, epoch)."""

    def __init__(self, lengths: list[int], max_tokens: int, shuffle: bool = True, seed: int = 0,
                 pool: int = 20_000):
        if max_tokens < max(lengths):
            raise UserError(f"batch_tokens {max_tokens} is smaller than the longest example "
                            f"({max(lengths)} tokens): raise batch_tokens or lower max_length")
        self.lengths, self.max_tokens = lengths, max_tokens
        self.shuffle, self.seed, self.pool, self.epoch = shuffle, seed, pool, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        idx = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(idx)
        out = []
        for start in range(0, len(idx), self.pool):
            pool = sorted(idx[start:start + self.pool], key=lambda i: self.lengths[i])
            batch: list[int] = []
            for i in pool:
                if batch and self.lengths[i] * (len(batch) + 1) > self.max_tokens:
                    out.append(batch)
                    batch = []
                batch.append(i)
            if batch:
                out.append(batch)
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


class ParallelDataset(torch.utils.data.Dataset):
    """Tokenized (source, target) pairs; batches by token budget, padded per batch."""

    def __init__(self, pairs: list[tuple[str, str]], tokenizer, max_length: int):
        if not pairs:
            raise UserError("the parallel dataset is empty: check the corpus and the limits")
        self.src = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_length)[
            "input_ids"]
        self.tgt = tokenizer([t for _, t in pairs], truncation=True, max_length=max_length)[
            "input_ids"]
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.src[i], self.tgt[i]

    def collate(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        src_w = max(len(s) for s, _ in rows)
        tgt_w = max(len(t) for _, t in rows)
        ids = torch.full((len(rows), src_w), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), src_w), dtype=torch.long)
        labels = torch.full((len(rows), tgt_w), -100, dtype=torch.long)
        for i, (s, t) in enumerate(rows):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            labels[i, :len(t)] = torch.tensor(t)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loader(self, batch_tokens: int, shuffle: bool, seed: int = 0) -> DataLoader:
        lengths = [max(len(s), len(t)) for s, t in zip(self.src, self.tgt, strict=True)]
        sampler = TokenBudgetBatchSampler(lengths, batch_tokens, shuffle, seed)
        return DataLoader(self, batch_sampler=sampler, collate_fn=self.collate,
                          generator=torch.Generator())


class Seq2SeqModule(nn.Module):
    """A translation model whose ``forward(batch, phase)`` returns the weighted losses:
    ``nll`` (label-smoothed cross-entropy) and ``word_kd`` (α·τ²·KL to the teacher's token
    distributions + (1 − α)·nll, over non-padding target tokens)."""

    def __init__(self, model: nn.Module, objectives, label_smoothing: float,
                 teacher: nn.Module | None = None, temperature: float = 1.0, alpha: float = 0.5):
        super().__init__()
        self.model = model
        self.objectives = objectives
        self.label_smoothing = label_smoothing
        self.temperature, self.alpha = temperature, alpha
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None else []

    def forward(self, batch: dict[str, torch.Tensor], phase: int = 0) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                  "labels": batch["labels"]}
        logits = self.model(**inputs).logits
        nll = label_smoothed_nll(logits, batch["labels"], self.label_smoothing)
        terms = {}
        for obj in self.objectives:
            if obj.loss == "nll":
                terms["nll"] = obj.weight * nll
            else:
                with torch.no_grad():
                    t_logits = self._teacher[0](**inputs).logits
                mask = batch["labels"] != -100
                soft = losses.soft_target_kd(logits, t_logits, self.temperature, mask)
                terms["word_kd"] = obj.weight * (self.alpha * soft + (1 - self.alpha) * nll)
        return {"loss": sum(terms.values()), **terms}


def translate(model, tokenizer, sources: list[str], decode: DecodeConfig,
              batch_tokens: int = 4096) -> list[str]:
    """Detokenized best hypothesis for every source, in input order."""
    ids = tokenizer(sources, truncation=True, max_length=decode.max_length)["input_ids"]
    out = [""] * len(sources)
    was_training = model.training
    model.eval()
    for batch in make_batches([len(x) for x in ids], batch_tokens=batch_tokens):
        hyps = generate_batch(model, tokenizer, [ids[i] for i in batch], decode)
        for i, h in zip(batch, hyps, strict=True):
            out[i] = h[0].text
    model.train(was_training)
    return out


def load_pairs(cfg: Seq2SeqConfig, split: str) -> list[tuple[str, str]]:
    """The l10n pairs of a split; the training targets may come from a distilled corpus."""
    data = cfg.data
    pairs = list(load_l10n_pairs(split, data.tgt_lang))
    limit = data.max_train_examples if split == "train" else data.max_eval_examples
    kept = pairs[:limit] if limit is not None else pairs
    if split == "train" and data.targets is not None:
        targets = read_lines(data.targets)
        if len(targets) not in (len(pairs), len(kept)):
            raise UserError(f"{data.targets} has {len(targets)} lines but the {split} split has "
                            f"{len(pairs)} sources ({len(kept)} used): generate the targets "
                            "from the same split")
        kept = [(s, t) for (s, _), t in zip(kept, targets, strict=False)]
    return kept


def _tokenizer(cfg: Seq2SeqConfig, pairs, out_dir: Path):
    data = cfg.data
    if cfg.tokenizer is not None:
        check_languages(cfg.tokenizer, data.src_lang, data.tgt_lang)
        return load_tokenizer(cfg.tokenizer)
    texts = [s for s, _ in pairs] + [t for _, t in pairs]
    return train_tokenizer(texts, cfg.vocab_size, out_dir / "tokenizer",
                           src_lang=data.src_lang, tgt_lang=data.tgt_lang)


def run_train(cfg: Seq2SeqConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a translation model; writes ``out_dir/model`` (best dev BLEU, greedy)."""
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    train_pairs = load_pairs(cfg, "train")
    dev_pairs = load_pairs(cfg, "dev")
    teacher = None
    if cfg.teacher is not None:
        from transformers import AutoModelForSeq2SeqLM

        check_languages(cfg.teacher, cfg.data.src_lang, cfg.data.tgt_lang)
        teacher = AutoModelForSeq2SeqLM.from_pretrained(cfg.teacher)
        tokenizer = load_tokenizer(cfg.teacher)
    else:
        tokenizer = _tokenizer(cfg, train_pairs, out_dir)
    check_arch(cfg.arch)
    model = build_seq2seq(cfg.preset, tokenizer, seed=cfg.seed, **cfg.arch)
    if cfg.init_from_teacher is not None:
        copy_teacher_layers(model, teacher, cfg.init_from_teacher.encoder,
                            cfg.init_from_teacher.decoder)
    word_kd = any(o.loss == "word_kd" for o in cfg.objectives)
    module = Seq2SeqModule(model, cfg.objectives, cfg.label_smoothing,
                           teacher if word_kd else None, cfg.temperature, cfg.alpha)
    train = ParallelDataset(train_pairs, tokenizer, cfg.data.max_length)
    decode = DecodeConfig(method="greedy", max_length=cfg.data.max_length)
    references = [t for _, t in dev_pairs]

    def evaluate_fn(m: Seq2SeqModule) -> dict[str, float]:
        hyps = translate(m.model, tokenizer, [s for s, _ in dev_pairs], decode)
        return corpus_bleu_chrf(hyps, references)

    def save_fn(m: Seq2SeqModule, folder: Path) -> None:
        save_seq2seq(m.model, tokenizer, folder, cfg.data.src_lang, cfg.data.tgt_lang)

    save_config(cfg, out_dir / "config.yaml")
    trainer = Trainer(module, train, cfg.data.batch_tokens,
                      [PhaseSpec("train", cfg.epochs, cfg.optim)], out_dir, evaluate_fn, save_fn,
                      select_metric="bleu", seed=cfg.seed)
    summary = trainer.train(resume=resume)
    summary.update(train_pairs=len(train_pairs), params=count_parameters(model))
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary


def run_generate(cfg: GenerateConfig, out_dir: str | Path) -> dict:
    """Decode a split with a teacher: ``kbest.jsonl`` (every hypothesis with its score) and
    ``targets.txt`` (one target per source, in input order) for training students."""
    out_dir = Path(out_dir)
    pairs = load_pairs(Seq2SeqConfig(data=cfg.data.model_copy(update={"targets": None})),
                       cfg.split)
    save_config(cfg, out_dir / "config.yaml")
    if cfg.kbest_from is None:
        summary = generate_corpus(
            cfg.model, [s for s, _ in pairs], out_dir / "kbest.jsonl", cfg.method,
            beam=cfg.beam, num_return=cfg.num_return, temperature=cfg.temperature,
            top_k=cfg.top_k, top_p=cfg.top_p, max_length=cfg.data.max_length, seed=cfg.seed,
            batch_tokens=cfg.data.batch_tokens, src_lang=cfg.data.src_lang,
            tgt_lang=cfg.data.tgt_lang,
        )
        kbest = read_kbest(out_dir / "kbest.jsonl")
    else:
        summary = {}
        kbest = read_kbest(cfg.kbest_from)
        if len(kbest) != len(pairs):
            raise UserError(f"{cfg.kbest_from} has k-best lists for {len(kbest)} sources but the "
                            f"{cfg.split} split has {len(pairs)}: select from lists of the same "
                            "split and data settings")
    references = [t for _, t in pairs]
    if cfg.select == "sentence_bleu":
        targets = select_by_sentence_bleu(kbest, references)
    else:
        targets = [hyps[0].text for hyps in kbest]
    atomic_write_text(out_dir / "targets.txt", "".join(t + "\n" for t in targets))
    result: dict = {"sources": len(pairs)}
    if "seconds" in summary:  # decoded here, not selected from an earlier stage's lists
        result.update(seconds=round(summary["seconds"], 1),
                      sentences_per_second=round(len(pairs) / max(summary["seconds"], 1e-9), 1))
    result.update({f"{k}_vs_real": v for k, v in corpus_bleu_chrf(targets, references).items()})
    atomic_write_json(out_dir / "metrics.json", result)
    return result


def run_evaluate_mt(cfg: TranslationEvalConfig, models: dict[str, str], out_dir: str | Path
                    ) -> dict:
    """BLEU and chrF with each beam size, parameters and sentences per second, per model."""
    from transformers import AutoModelForSeq2SeqLM

    pairs = load_pairs(Seq2SeqConfig(data=cfg.data.model_copy(update={"targets": None})),
                       cfg.split)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    results = {}
    for name, path in models.items():
        check_languages(path, cfg.data.src_lang, cfg.data.tgt_lang)
        model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
        tokenizer = load_tokenizer(path)
        row: dict[str, float] = {"params": count_parameters(model)}
        for beam in cfg.beams:
            decode = DecodeConfig(method="greedy" if beam == 1 else "beam", beam=beam,
                                  max_length=cfg.data.max_length)
            start = time.perf_counter()
            hyps = translate(model, tokenizer, sources, decode, cfg.data.batch_tokens)
            seconds = time.perf_counter() - start
            scores = corpus_bleu_chrf(hyps, references)
            row.update({f"bleu_b{beam}": scores["bleu"], f"chrf_b{beam}": scores["chrf"],
                        f"sent_per_s_b{beam}": len(sources) / seconds})
        results[name] = row
    table = {"split": cfg.split, "pair": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}",
             "models": results}
    atomic_write_json(Path(out_dir) / "metrics.json", table)
    return table
