"""Vocabulary pruning (as TextPruner does it): a classifier keeps the word-embedding rows of the
tokens its task's training texts use, and of every special token, and its WordPiece tokenizer
keeps those tokens, in their original order."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from textdistill.config import PruneConfig, save_config
from textdistill.data.corpora import load_classification, subsample
from textdistill.errors import UserError
from textdistill.models.classifier import is_classifier, load_classifier, resolve_model_path
from textdistill.models.common import count_parameters, save_pretrained_atomic
from textdistill.paths import atomic_write_json

SPECIAL_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
                     "cls_token_id", "unk_token_id", "mask_token_id", "decoder_start_token_id")
"""Model config fields that hold token ids: kept, and renumbered."""


@dataclass(frozen=True)
class Pruned:
    """A pruned model and tokenizer; ``kept_ids[new id]`` is the token's id before pruning."""

    model: torch.nn.Module
    tokenizer: Any
    kept_ids: list[int]


def token_ids(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None,
              special: bool = True) -> list[list[int]]:
    """The token ids of every text (or text pair), untruncated; ``special``: with the special
    tokens the tokenizer adds ([CLS], [SEP])."""
    args = (list(texts),) if pairs is None else (list(texts), list(pairs))
    return tokenizer(*args, add_special_tokens=special, truncation=False)["input_ids"]


def _wordpiece_spec(tokenizer) -> dict:
    """The ``tokenizer.json`` content of a fast WordPiece tokenizer; anything else is refused."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    kind = spec.get("model", {}).get("type")
    if kind != "WordPiece":
        what = f"a {kind} model" if kind else "not a fast (tokenizers) tokenizer"
        raise UserError(f"vocabulary pruning supports fast WordPiece tokenizers (BERT-style: "
                        f"BERT, DistilBERT, ELECTRA, MiniLM), but this tokenizer is "
                        f"{type(tokenizer).__name__} ({what})")
    return spec


def _renumber(node: Any, ids: dict[str, int]) -> None:
    """Give the special tokens that a post-processor names (TemplateProcessing's
    ``tokens``/``ids``, BertProcessing's ``cls``/``sep`` pairs) their new ids, in place."""
    if isinstance(node, list):
        for item in node:
            _renumber(item, ids)
    elif isinstance(node, dict):
        if isinstance(node.get("tokens"), list) and isinstance(node.get("ids"), list):
            node["ids"] = [ids[token] for token in node["tokens"]]
        for key in ("cls", "sep"):
            if isinstance(node.get(key), list) and len(node[key]) == 2:
                node[key][1] = ids[node[key][0]]
        for value in node.values():
            _renumber(value, ids)


def _pruned_tokenizer(tokenizer, spec: dict, kept: list[int]):
    """``tokenizer`` with the vocabulary ``kept`` (old ids, in new id order), saved and loaded
    back as a Hugging Face folder: its settings (lowercasing, accents, special tokens) kept."""
    words = {i: token for token, i in spec["model"]["vocab"].items()}
    words.update((added["id"], added["content"]) for added in spec["added_tokens"])
    ids = {words[old]: new for new, old in enumerate(kept)}
    spec["model"]["vocab"] = {token: i for token, i in ids.items()
                              if token in spec["model"]["vocab"]}
    for added in spec["added_tokens"]:
        added["id"] = ids[added["content"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = ids[spec["padding"]["pad_token"]]
    _renumber(spec.get("post_processor"), ids)
    with tempfile.TemporaryDirectory(prefix="textdistill-prune-") as tmp:
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "vocab.txt").unlink(missing_ok=True)  # tokenizer.json is the vocabulary
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False),
                                                  encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def _pruned_model(model: torch.nn.Module, kept: list[int]) -> torch.nn.Module:
    """A copy of ``model`` whose input embeddings (and output layer, tied or not) have only the
    rows ``kept``, and whose config's vocabulary size and token ids follow."""
    new_id = {old: new for new, old in enumerate(kept)}
    pruned = copy.deepcopy(model)
    rows = torch.tensor(kept, dtype=torch.long)
    embeddings = pruned.get_input_embeddings()
    old_weight = embeddings.weight
    embeddings.weight = torch.nn.Parameter(old_weight.detach()[rows].clone())
    embeddings.num_embeddings = len(kept)
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = new_id.get(embeddings.padding_idx)
    head = pruned.get_output_embeddings()
    if head is not None:
        head.weight = (embeddings.weight if head.weight is old_weight
                       else torch.nn.Parameter(head.weight.detach()[rows].clone()))
        head.out_features = len(kept)
        if head.bias is not None:
            head.bias = torch.nn.Parameter(head.bias.detach()[rows].clone())
        pruned.set_output_embeddings(head)  # a model that holds the bias twice updates both
    config = pruned.config
    config.vocab_size = len(kept)
    for name in SPECIAL_ID_FIELDS:
        if isinstance(getattr(config, name, None), int):
            setattr(config, name, new_id.get(getattr(config, name)))
    return pruned


def prune_vocabulary(model: torch.nn.Module, tokenizer, texts: Sequence[str],
                     pairs: Sequence[str] | None = None) -> Pruned:
    """Keep the tokens of ``texts`` (with ``pairs``, the text pairs) and every special and
    added token, in their original order, in a copy of ``model`` and of its fast WordPiece
    ``tokenizer``. Every text is checked to tokenize to the same tokens as before."""
    spec = _wordpiece_spec(tokenizer)
    before = token_ids(tokenizer, texts, pairs) if texts else []
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    if not any(i not in special for ids in before for i in ids):
        raise UserError("the training texts hold no tokens to keep: give the training split "
                        "of the data the model was trained on")
    size = len(tokenizer)
    in_config = (getattr(model.config, name, None) for name in SPECIAL_ID_FIELDS)
    special |= {i for i in in_config if isinstance(i, int) and 0 <= i < size}
    kept = sorted(special | {i for ids in before for i in ids})
    new_tokenizer = _pruned_tokenizer(tokenizer, spec, kept)
    new_id = {old: new for new, old in enumerate(kept)}
    after = token_ids(new_tokenizer, texts, pairs)
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True))
               if [new_id[t] for t in old] != new]
    if changed:
        raise UserError(f"the pruned {type(tokenizer).__name__} does not tokenize the training "
                        f"texts as the original does ({len(changed)} of {len(texts)} differ; "
                        f"first: {texts[changed[0]]!r}): this tokenizer cannot be pruned")
    return Pruned(_pruned_model(model, kept), new_tokenizer, kept)


def unknown_tokens(original, pruned: Pruned, texts: Sequence[str],
                   pairs: Sequence[str] | None = None) -> dict[str, int]:
    """What the pruned vocabulary lacks of ``texts`` (special tokens aside): ``pruned_tokens``,
    tokens of the original tokenization outside it (and ``examples_with_pruned_tokens``);
    ``unk_tokens``, the [UNK]s the pruned tokenizer adds (a word that its kept pieces cannot
    spell becomes one [UNK]; the other words re-split into kept pieces) and
    ``examples_with_unk``."""
    kept = set(pruned.kept_ids)
    old = token_ids(original, texts, pairs, special=False)
    new = token_ids(pruned.tokenizer, texts, pairs, special=False)
    lacking = [sum(i not in kept for i in ids) for ids in old]
    unk = [n.count(pruned.tokenizer.unk_token_id) - o.count(original.unk_token_id)
           for o, n in zip(old, new, strict=True)]
    return {"examples": len(old), "tokens": sum(map(len, old)), "pruned_tokens": sum(lacking),
            "examples_with_pruned_tokens": sum(n > 0 for n in lacking), "unk_tokens": sum(unk),
            "examples_with_unk": sum(n > 0 for n in unk)}


def _pairs(rows) -> list[str] | None:
    return [e.text_pair for e in rows] if rows[0].text_pair is not None else None


def run_prune(cfg: PruneConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Prune ``cfg.model`` to the vocabulary of the training split of ``cfg.data``: writes
    ``out_dir/model`` and ``out_dir/metrics.json`` (parameters and embedding parameters before
    and after, kept tokens, what dev and test lose)."""
    out_dir = Path(out_dir)
    path = resolve_model_path(cfg.model)
    corpus = load_classification(cfg.data)
    model, tokenizer = load_classifier(str(path), corpus.labels)
    if not is_classifier(model.config):
        raise UserError(f"{path} is not a sequence classifier (architectures: "
                        f"{model.config.architectures}): prune a model written by finetune or "
                        "distill")
    train = subsample(corpus.split("train"), cfg.data.max_train_examples, cfg.seed)
    pruned = prune_vocabulary(model, tokenizer, [e.text for e in train], _pairs(train))
    counts = {name: count_parameters(m) for name, m in (("before", model),
                                                        ("after", pruned.model))}
    unknown = {}
    for split in ("dev", "test"):
        if split in corpus.splits:
            rows = subsample(corpus.split(split), cfg.data.max_eval_examples, cfg.seed)
            unknown[split] = unknown_tokens(tokenizer, pruned, [e.text for e in rows],
                                            _pairs(rows))
    metrics = {
        "model": str(path), "train_rows": len(train),
        "vocab_before": model.get_input_embeddings().num_embeddings,
        "kept_tokens": len(pruned.kept_ids),
        **{f"params_{when}": c["params"] for when, c in counts.items()},
        **{f"embedding_params_{when}": c["params"] - c["params_no_embeddings"]
           for when, c in counts.items()},
        "unknown": unknown,
    }
    save_config(cfg, out_dir / "config.yaml")
    save_pretrained_atomic(pruned.model, pruned.tokenizer, out_dir / "model")
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
