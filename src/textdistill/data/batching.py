"""Tokenized datasets, length-bucketed batches and dynamic padding."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Sampler

from textdistill.data.corpora import Example
from textdistill.errors import UserError


class TrainData(Protocol):
    """What the trainer needs of a dataset: a loader whose batch sampler has ``set_epoch``."""

    def loader(self, batch_size: int, shuffle: bool, seed: int) -> DataLoader: ...


class TokenizedDataset(torch.utils.data.Dataset):
    """Token ids and labels of a list of examples, tokenized once up front."""

    def __init__(self, examples: Sequence[Example], tokenizer, max_length: int):
        if not examples:
            raise UserError("the dataset is empty: check the corpus and max_*_examples settings")
        enc = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = enc["input_ids"]
        self.labels = [e.label for e in examples]
        self.pad_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def loader(self, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        return make_loader(self, batch_size, shuffle, seed)


class PadCollator:
    """Pads a batch to its longest sequence and builds the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        labels = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar lengths, in a seeded order that depends only on (seed, epoch).

    Examples are shuffled, cut into pools of ``pool_batches`` batches, each pool is sorted by
    length and cut into batches, and the batches are shuffled. With ``shuffle=False`` the
    batches are simply consecutive runs of the length-sorted data (for evaluation).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        idx = list(range(len(self.lengths)))
        if not self.shuffle:
            idx.sort(key=lambda i: self.lengths[i])
            return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        rng.shuffle(idx)
        out = []
        for start in range(0, len(idx), self.pool):
            pool = sorted(idx[start : start + self.pool], key=lambda i: self.lengths[i])
            out += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) if not self.shuffle else len(self.batches())


def make_loader(
    dataset: TokenizedDataset, batch_size: int, shuffle: bool, seed: int = 0
) -> DataLoader:
    """A DataLoader with length-bucketed batches and dynamic padding."""
    sampler = LengthBucketBatchSampler(dataset.lengths(), batch_size, shuffle=shuffle, seed=seed)
    # A private generator: iterating a DataLoader draws a base seed from its generator, and
    # drawing it from the global RNG would shift dropout after a mid-epoch resume.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=PadCollator(dataset.pad_id),
                      generator=torch.Generator())
