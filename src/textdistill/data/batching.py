"""Tokenized datasets, length-bucketed batches (by examples or by tokens) and dynamic padding.

Every task batches through :func:`length_batches`: training shuffles examples, sorts pools of
them by length and cuts the pools into batches (then shuffles the batches); evaluation and
decoding cut the length-sorted data. A batch holds at most ``batch_size`` examples and/or at
most ``batch_tokens`` padded tokens (examples × the longest).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from textdistill.errors import UserError


class TrainData(Protocol):
    """What the trainer needs of a dataset: a loader whose batch sampler has ``set_epoch``."""

    def loader(self, size: int, shuffle: bool, seed: int) -> DataLoader: ...


def _cut(order: Sequence[int], lengths: Sequence[int], batch_size: int | None,
         batch_tokens: int | None) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        wider = max(width, lengths[i])
        if current and ((batch_size is not None and len(current) >= batch_size) or (
                batch_tokens is not None and wider * (len(current) + 1) > batch_tokens)):
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        width = wider
    if current:
        batches.append(current)
    return batches


def length_batches(
    lengths: Sequence[int],
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    pool: int | None = None,
    longest_first: bool = False,
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of similar lengths.

    Without ``shuffle``: the length-sorted indices (shortest first, or ``longest_first`` so
    that decoding meets its largest batch at once), cut in order; ties keep input order. With
    ``shuffle``: the indices are shuffled by a generator seeded with (seed, epoch), sorted by
    length within pools of ``pool`` examples (default: 50 batches of ``batch_size``, or 20,000
    examples), cut, and the batches shuffled. One example longer than the token budget still
    gets a batch of its own.
    """
    if batch_size is None and batch_tokens is None:
        raise UserError("give a batch size in examples (batch_size) or in tokens (batch_tokens)")
    if (batch_size is not None and batch_size < 1) or (batch_tokens is not None and
                                                       batch_tokens < 1):
        raise UserError("batch_size and batch_tokens must be positive")
    idx = list(range(len(lengths)))
    if not shuffle:
        sign = -1 if longest_first else 1
        idx.sort(key=lambda i: (sign * lengths[i], i))
        return _cut(idx, lengths, batch_size, batch_tokens)
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(idx)
    if pool is None:
        pool = 50 * batch_size if batch_size is not None else 20_000
    out: list[list[int]] = []
    for start in range(0, len(idx), pool):
        part = sorted(idx[start:start + pool], key=lambda i: lengths[i])
        out += _cut(part, lengths, batch_size, batch_tokens)
    rng.shuffle(out)
    return out


class LengthBucketBatchSampler(Sampler[list[int]]):
    """:func:`length_batches` as a batch sampler whose order depends only on (seed, epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int | None = None,
                 batch_tokens: int | None = None, shuffle: bool = True, seed: int = 0,
                 pool_batches: int | None = None):
        self.lengths = list(lengths)
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.pool = pool_batches * batch_size if pool_batches and batch_size else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        return length_batches(self.lengths, self.batch_size, self.batch_tokens,
                              shuffle=self.shuffle, seed=self.seed, epoch=self.epoch,
                              pool=self.pool)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def pad(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, longest) id tensor and its 0/1 mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


class BatchedDataset(torch.utils.data.Dataset):
    """A tokenized dataset that batches itself: by examples, or by tokens (``by_tokens``)."""

    by_tokens = False

    def lengths(self) -> list[int]:
        raise NotImplementedError

    def collate(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loader(self, size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        """Length-bucketed batches of ``size`` examples (or tokens), padded per batch."""
        sizes = {"batch_tokens" if self.by_tokens else "batch_size": size}
        sampler = LengthBucketBatchSampler(self.lengths(), shuffle=shuffle, seed=seed, **sizes)
        # A private generator: iterating a DataLoader draws a base seed from its generator, and
        # drawing it from the global RNG would shift dropout after a mid-epoch resume.
        return DataLoader(self, batch_sampler=sampler, collate_fn=self.collate,
                          generator=torch.Generator())


class TokenizedDataset(BatchedDataset):
    """Token ids (of a text or a text pair) and labels of classification examples, tokenized
    once up front."""

    def __init__(self, examples: Sequence[Any], tokenizer, max_length: int):
        if not examples:
            raise UserError("the dataset is empty: check the corpus and max_*_examples settings")
        texts = [e.text for e in examples]
        pairs = [getattr(e, "text_pair", None) for e in examples]
        if any(p is not None for p in pairs):
            if tokenizer.sep_token is None:
                raise UserError(
                    f"the data has a text_pair column but the model's tokenizer "
                    f"({type(tokenizer).__name__}) has no separator token to join two texts: "
                    "use a model made for sentence pairs (e.g. BERT-like) or drop "
                    "columns.text_pair"
                )
            enc = tokenizer(texts, [p or "" for p in pairs], truncation=True,
                            max_length=max_length)
            self.token_type_ids: list[list[int]] | None = enc.get("token_type_ids")
        else:
            enc = tokenizer(texts, truncation=True, max_length=max_length)
            self.token_type_ids = None
        self.input_ids: list[list[int]] = enc["input_ids"]
        self.labels = [e.label for e in examples]
        self.pad_id = tokenizer.pad_token_id or 0
        self.teacher_logits: torch.Tensor | None = None
        """The teacher's logits per example (``teacher_cache``), batched as ``teacher_logits``."""

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        row = {"input_ids": self.input_ids[i], "labels": self.labels[i]}
        if self.token_type_ids is not None:
            row["token_type_ids"] = self.token_type_ids[i]
        if self.teacher_logits is not None:
            row["teacher_logits"] = self.teacher_logits[i]
        return row

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad([r["input_ids"] for r in rows], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask,
                 "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long)}
        if "token_type_ids" in rows[0]:
            batch["token_type_ids"] = pad([r["token_type_ids"] for r in rows], 0)[0]
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.stack([r["teacher_logits"] for r in rows])
        return batch


class TextPieces(BatchedDataset):
    """Unlabeled texts cut into pieces of at most ``max_length`` tokens, each wrapped in the
    tokenizer's special tokens ([CLS] ... [SEP]), tokenized once up front."""

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int):
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        if cls is None or sep is None:
            raise UserError(f"the tokenizer ({type(tokenizer).__name__}) has no [CLS] or [SEP] "
                            "token to wrap text pieces in: use a BERT-like encoder")
        body = max_length - 2
        rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        self.input_ids: list[list[int]] = [
            [cls, *row[i:i + body], sep] for row in rows for i in range(0, len(row), body)]
        if not self.input_ids:
            raise UserError("there is no text to train on: the files are empty or blank")
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> list[int]:
        return self.input_ids[i]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        ids, mask = pad(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}


class ParallelDataset(BatchedDataset):
    """Tokenized (source, target) pairs, batched by tokens (the longer side counts)."""

    by_tokens = True

    def __init__(self, pairs: Sequence[tuple[str, str]], tokenizer, max_length: int):
        if not pairs:
            raise UserError("the parallel dataset is empty: check the corpus and the limits")
        sides = [[s for s, _ in pairs], [t for _, t in pairs]]
        full = [tokenizer(side, add_special_tokens=True)["input_ids"] for side in sides]
        self.truncated = sum(max(len(s), len(t)) > max_length for s, t in zip(*full, strict=True))
        """Pairs with a side longer than ``max_length`` tokens: that side is cut (its end
        token kept)."""
        self.src, self.tgt = (tokenizer(side, truncation=True, max_length=max_length)["input_ids"]
                              for side in sides)
        self.pad_id = tokenizer.pad_token_id
        self.teacher_topk: dict[str, torch.Tensor] | None = None
        """The teacher's top-k ``values`` and ``indices`` per target token, target after
        target (``teacher_cache``), batched as ``teacher_top``/``teacher_top_indices``."""
        self._starts: list[int] = []

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple:
        if self.teacher_topk is None:
            return self.src[i], self.tgt[i]
        if not self._starts:
            self._starts = [0]
            for tgt in self.tgt:
                self._starts.append(self._starts[-1] + len(tgt))
        rows = slice(self._starts[i], self._starts[i + 1])
        return (self.src[i], self.tgt[i], self.teacher_topk["values"][rows],
                self.teacher_topk["indices"][rows])

    def lengths(self) -> list[int]:
        return [max(len(s), len(t)) for s, t in zip(self.src, self.tgt, strict=True)]

    def collate(self, rows: list[tuple]) -> dict[str, torch.Tensor]:
        ids, mask = pad([r[0] for r in rows], self.pad_id)
        labels, _ = pad([r[1] for r in rows], -100)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if len(rows[0]) == 4:  # cached top-k teacher outputs, zero-padded like the labels
            batch["teacher_top"] = torch.nn.utils.rnn.pad_sequence([r[2] for r in rows],
                                                                   batch_first=True)
            batch["teacher_top_indices"] = torch.nn.utils.rnn.pad_sequence(
                [r[3] for r in rows], batch_first=True)
        return batch
