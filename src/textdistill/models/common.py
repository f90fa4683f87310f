"""What every model family shares: atomic saving, parameter counts, copying teacher layers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from textdistill.errors import UserError
from textdistill.faults import crash_point
from textdistill.paths import new_dir_beside, replace_dir, writing

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "source.spm",
                   "sentencepiece.bpe.model", "tokenizer.model")
"""Files of which a Hugging Face tokenizer needs at least one."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}): restore it from the run that saved "
                        "the model, or save the model again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def check_model_folder(path: Path) -> dict:
    """Check a Hugging Face model folder before any work starts: ``config.json`` parses, every
    safetensors weights file is complete, tokenizer files are there. Returns the config."""
    from safetensors import safe_open

    if not (path / "config.json").is_file():
        raise UserError(f"'{path}' is not a Hugging Face model folder (no config.json there): "
                        "give a folder written by save_pretrained, a stage name, or 'minilm'")
    config = _read_json(path / "config.json")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index).get("weight_map", {}).values()))
    else:
        files = ["model.safetensors"]
    for name in files:
        weights = path / name
        if not weights.is_file():
            other = next((p.name for p in path.glob("*.bin")), None)
            hint = (f"it has {other}, which textdistill does not load (unsafe pickle): save the "
                    "model with safe_serialization=True" if other else
                    "the folder is incomplete: save the model again")
            raise UserError(f"{path} has no {name}: {hint}")
        try:
            with safe_open(str(weights), "pt"):
                pass
        except Exception as exc:  # SafetensorError: truncated, empty or not safetensors
            raise UserError(f"{weights} is damaged ({' '.join(str(exc).split())}): the file is "
                            "truncated or not safetensors; save the model again") from None
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): "
                        "save the model's tokenizer into the folder (tokenizer.save_pretrained)")
    return config


def check_vocabulary(path: Path, tokenizer, embeddings: int) -> None:
    """The tokenizer must fit the model's embedding matrix: as many rows as tokens, or the
    token count padded up to a multiple of 64 (as T5 and OPT do); anything else means they do
    not belong together."""
    tokens = len(tokenizer)
    if embeddings != tokens and not (tokens < embeddings == -(-tokens // 64) * 64):
        raise UserError(f"the tokenizer in {path} has {tokens} tokens but the model's embeddings "
                        f"have {embeddings} rows: they do not belong together; save the model's "
                        "own tokenizer into the folder")


def check_same_vocabulary(tokenizer, other, name: str, other_name: str) -> None:
    """Two models that share token ids must have the same vocabulary (token -> id)."""
    mine, theirs = tokenizer.get_vocab(), other.get_vocab()
    if mine != theirs:
        differ = sum(1 for token, i in mine.items() if theirs.get(token) != i)
        raise UserError(f"{name} and {other_name} have different vocabularies ({len(mine):,} and "
                        f"{len(theirs):,} tokens, {differ:,} of them differ): general-distill "
                        "the student from this teacher (or one with its tokenizer)")


def save_pretrained_atomic(model, tokenizer, out_dir: str | Path,
                           extra: Mapping[str, dict] | None = None) -> Path:
    """Write a model folder (safetensors), its tokenizer and ``extra`` JSON files
    (``{file name: content}``) atomically: into a temporary folder beside ``out_dir``, then one
    rename. An existing ``out_dir`` is moved aside and removed."""
    out_dir = Path(out_dir)
    with writing(out_dir):
        tmp = new_dir_beside(out_dir)
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            crash_point(f"save {out_dir.name}: weights written")
            tokenizer.save_pretrained(tmp)
            for name, content in (extra or {}).items():
                (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, out_dir)
    return out_dir


def _embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The input embeddings, a BERT-style ``embeddings`` block (word, position and type
    embeddings with their LayerNorm) and encoder-decoder ``embed_tokens``/``embed_positions``."""
    modules = [model.get_input_embeddings()] if hasattr(model, "get_input_embeddings") else []
    base = getattr(model, "base_model", model)
    if isinstance(getattr(base, "embeddings", None), torch.nn.Module):
        modules.append(base.embeddings)
    modules += [m for name, m in model.named_modules()
                if name.rsplit(".", 1)[-1] in ("embed_tokens", "embed_positions")]
    return [m for m in modules if m is not None]


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``params``: distinct parameters that train (tied weights once; frozen ones and fixed
    sinusoidal position tables, which ``from_pretrained`` marks trainable, left out);
    ``params_no_embeddings``: those outside the embedding layers."""
    counted: dict[int, int] = {}
    for module in model.modules():
        if "Sinusoidal" in type(module).__name__:
            continue
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                counted[id(param)] = param.numel()
    embedding = {id(p) for m in _embedding_modules(model) for p in m.parameters()}
    total = sum(counted.values())
    return {"params": total,
            "params_no_embeddings": total - sum(n for i, n in counted.items() if i in embedding)}


def copy_teacher_layers(student: torch.nn.Module, teacher: torch.nn.Module,
                        stacks: Mapping[str, tuple[str, Sequence[int]]], shared: Sequence[str],
                        widths: Sequence[str], hint: str) -> None:
    """Initialise ``student`` from ``teacher`` ("shrink and fine-tune").

    ``stacks`` maps the setting's name shown in errors (e.g. ``init_from_teacher.encoder``) to
    the module path of a layer list in both models and the teacher layer (1-based) for each
    student layer, in order. The modules at the paths in ``shared`` (``""``: the whole model)
    are copied whole, except the layer stacks inside them; a shared module that either model
    lacks (a BERT without pooler) is skipped. The config attributes ``widths`` must be equal;
    ``hint`` ends the error when they are not. Weights are copied, never shared.
    """
    s_cfg, t_cfg = student.config, teacher.config
    for attr in widths:
        if getattr(s_cfg, attr) != getattr(t_cfg, attr):
            raise UserError(f"init_from_teacher needs equal widths, but {attr} is "
                            f"{getattr(s_cfg, attr)} in the student and {getattr(t_cfg, attr)} in "
                            f"the teacher: {hint}")
    pairs = []
    for setting, (path, layers) in stacks.items():
        s_stack, t_stack = student.get_submodule(path), teacher.get_submodule(path)
        if len(layers) != len(s_stack):
            raise UserError(f"{setting} lists {len(layers)} layers but the student has "
                            f"{len(s_stack)}: give one teacher layer per student layer")
        bad = [n for n in layers if not 1 <= n <= len(t_stack)]
        if bad:
            raise UserError(f"{setting} names layer {bad[0]}, but the teacher has layers "
                            f"1..{len(t_stack)}")
        pairs += [(s_layer, t_stack[n - 1]) for s_layer, n in zip(s_stack, layers, strict=True)]
    stack_paths = [path for path, _ in stacks.values()]
    for path in shared:
        s_mod = _submodule(student, path)
        t_mod = _submodule(teacher, path)
        if s_mod is None or t_mod is None:
            continue
        inner = [p[len(path) + 1:] if path else p for p in stack_paths
                 if not path or p.startswith(f"{path}.")]
        state = {k: v for k, v in t_mod.state_dict().items()
                 if not any(k.startswith(f"{p}.") for p in inner)}
        missing, unexpected = s_mod.load_state_dict(state, strict=False)
        missing = [k for k in missing if not any(k.startswith(f"{p}.") for p in inner)]
        if missing or unexpected:
            raise UserError(f"init_from_teacher: the teacher's {path or 'model'} does not match "
                            f"the student's ({(missing or unexpected)[0]}): use a teacher of "
                            "the student's architecture")
    for s_layer, t_layer in pairs:
        s_layer.load_state_dict(t_layer.state_dict())


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None
