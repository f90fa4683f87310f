"""Configuration: pydantic models of every stage and recipe, YAML loading, dotted overrides."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from textdistill.errors import UserError


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class DataConfig(Strict):
    """Which corpus to read and how to batch it."""

    corpus: str = "rotten-tomatoes"
    max_length: int = Field(128, gt=1)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    max_eval_examples: int | None = Field(None, gt=0)


class OptimConfig(Strict):
    """AdamW with linear warmup and decay, and gradient clipping."""

    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int | None = Field(None, ge=0)
    """Overrides warmup_ratio when set."""
    schedule: Literal["linear", "inverse_sqrt"] = "linear"
    max_grad_norm: float | None = 1.0


LossName = Literal["kd", "hard", "soft_ce", "embedding", "hidden", "attention"]


class Objective(Strict):
    """One term of a distillation objective: a loss and its weight."""

    loss: LossName
    weight: float = Field(1.0, ge=0)


class Phase(Strict):
    """One training phase: its objectives, length and optimiser."""

    name: str = "train"
    epochs: float = Field(3, gt=0)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(loss="hard")])
    optim: OptimConfig = Field(default_factory=OptimConfig)


class LayerMapConfig(Strict):
    """How student layers map to teacher layers for the intermediate losses."""

    strategy: Literal["uniform", "top", "bottom", "explicit"] = "uniform"
    layers: list[int] | None = None
    weights: list[float] | None = None


class StudentConfig(Strict):
    """A student: a named preset, optionally initialised from chosen teacher layers."""

    preset: str = "tinybert-4"
    init_from_teacher: list[int] | None = None
    vocab_from: str = "minilm"
    """Model folder whose tokenizer the student shares when training without a teacher."""


class FinetuneConfig(Strict):
    """Fine-tune an encoder into a sequence classifier (the teacher)."""

    kind: Literal["finetune"] = "finetune"
    name: str = "teacher"
    model: str = "minilm"
    data: DataConfig = Field(default_factory=DataConfig)
    epochs: float = Field(3, gt=0)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = 42
    select_metric: str = "accuracy"


class DistillConfig(Strict):
    """Train a student, with a teacher (distillation) or on labels alone."""

    kind: Literal["distill"] = "distill"
    name: str = "student"
    teacher: str | None = None
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    phases: list[Phase] = Field(default_factory=lambda: [Phase()])
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    layer_map: LayerMapConfig = Field(default_factory=LayerMapConfig)
    shared_projection: bool = False
    average_heads: bool = False
    seed: int = 42
    select_metric: str = "accuracy"

    @model_validator(mode="after")
    def _teacher_needed(self) -> DistillConfig:
        teacher_losses = {o.loss for p in self.phases for o in p.objectives} - {"hard"}
        if teacher_losses and self.teacher is None:
            raise ValueError(
                f"losses {sorted(teacher_losses)} need a teacher: set 'teacher' to a model folder "
                "or an earlier stage's name"
            )
        return self


class EvaluateConfig(Strict):
    """Evaluate models on a test split: task metrics, size, latency, throughput."""

    kind: Literal["evaluate"] = "evaluate"
    name: str = "evaluate"
    models: list[str] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    split: Literal["dev", "test"] = "test"
    latency_examples: int = Field(100, gt=0)
    throughput_batches: int = Field(10, gt=0)


class ParallelDataConfig(Strict):
    """A translation corpus (l10n, English to one target language) and how to batch it."""

    corpus: Literal["l10n"] = "l10n"
    src_lang: Literal["en"] = "en"
    tgt_lang: str = "de"
    """``de``, ``fr``, ``es``, or a ``+`` set such as ``de+fr+es`` (a multi-target corpus:
    each source paired with one of its translations, drawn uniformly and reproducibly)."""
    targets: str | None = None
    """Training targets from a file (one per training source) or a generate stage's name."""
    max_length: int = Field(128, gt=1)
    batch_tokens: int = Field(4096, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    max_eval_examples: int | None = Field(None, gt=0)

    @field_validator("tgt_lang")
    @classmethod
    def _known_languages(cls, value: str) -> str:
        from textdistill.seq2seq.parallel import l10n_target_langs

        try:
            return "+".join(l10n_target_langs(value))
        except UserError as exc:
            raise ValueError(str(exc)) from None


class Seq2SeqObjective(Strict):
    """A term of a translation objective."""

    loss: Literal["nll", "word_kd"]
    weight: float = Field(1.0, ge=0)


class Seq2SeqInit(Strict):
    """Teacher layers (1-based, one per student layer) that initialise a translation student."""

    encoder: list[int]
    decoder: list[int]


class Seq2SeqConfig(Strict):
    """Train a translation model: a teacher on gold data or a student (Seq-KD, word-KD)."""

    kind: Literal["train"] = "train"
    name: str = "nmt"
    preset: str = "tiny"
    arch: dict[str, int | float] = Field(default_factory=dict)
    """Changes to the preset's shape, e.g. ``{encoder_layers: 3, decoder_layers: 1}``."""
    tokenizer: str | None = None
    """A tokenizer folder; by default a joint vocabulary is trained on the training split."""
    vocab_size: int = Field(8000, gt=0)
    data: ParallelDataConfig = Field(default_factory=ParallelDataConfig)
    epochs: float = Field(10, gt=0)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(lr=5e-4, warmup_steps=1000, schedule="inverse_sqrt")
    )
    objectives: list[Seq2SeqObjective] = Field(
        default_factory=lambda: [Seq2SeqObjective(loss="nll")])
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    teacher: str | None = None
    init_from_teacher: Seq2SeqInit | None = None
    """Start from the teacher's embeddings and these layers instead of random weights."""
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)
    seed: int = 42

    @model_validator(mode="after")
    def _teacher_needed(self) -> Seq2SeqConfig:
        for needs, what in ((any(o.loss == "word_kd" for o in self.objectives), "word_kd"),
                            (self.init_from_teacher is not None, "init_from_teacher")):
            if needs and self.teacher is None:
                raise ValueError(f"{what} needs a teacher: set 'teacher' to a model folder or an "
                                 "earlier stage's name")
        return self


class GenerateConfig(Strict):
    """Decode a split of a corpus with a teacher: the distilled corpus (and k-best lists)."""

    kind: Literal["generate"] = "generate"
    name: str = "distilled"
    model: str
    data: ParallelDataConfig = Field(default_factory=ParallelDataConfig)
    split: Literal["train", "dev", "test"] = "train"
    method: Literal["beam", "greedy", "sample", "topk", "topp"] = "beam"
    beam: int = Field(5, gt=0)
    num_return: int = Field(1, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(10, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    select: Literal["top", "sentence_bleu"] = "top"
    """Which hypothesis becomes the target: the best-scoring, or (Seq-Inter) the one with the
    highest sentence BLEU against the reference."""
    kbest_from: str | None = None
    """Select from the k-best lists of an earlier generate stage (or a ``kbest.jsonl``) of the
    same split instead of decoding again."""
    seed: int = 0


class TranslationEvalConfig(Strict):
    """Evaluate translation models on a split: BLEU/chrF per beam size, size, speed."""

    kind: Literal["evaluate-mt"] = "evaluate-mt"
    name: str = "evaluate"
    models: list[str] = Field(min_length=1)
    data: ParallelDataConfig = Field(default_factory=ParallelDataConfig)
    split: Literal["dev", "test"] = "test"
    beams: list[int] = Field(default_factory=lambda: [1, 5], min_length=1)


Stage = Annotated[
    FinetuneConfig
    | DistillConfig
    | EvaluateConfig
    | Seq2SeqConfig
    | GenerateConfig
    | TranslationEvalConfig,
    Field(discriminator="kind"),
]


class Recipe(Strict):
    """An experiment: stages run in order under one run directory."""

    name: str
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Recipe:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique; repeated: {dupes}")
        return self


def config_hash(cfg: BaseModel, salt: str = "") -> str:
    """A stable hash of a config (and ``salt``), used to skip a stage that is up to date.
    Unset options (None) do not count, so a new optional setting leaves finished stages valid."""
    text = salt + json.dumps(cfg.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for missing files and bad YAML."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise UserError(f"invalid YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.0.c=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key.sub=value")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(
                        f"override '{key}': '{part}' is not an index of a list of {len(node)}"
                    )
                if last:
                    node[int(part)] = _parse_value(raw)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = _parse_value(raw)
                else:
                    if part not in node and parts[i + 1].isdigit():
                        where = ".".join(parts[: i + 1])
                        raise UserError(
                            f"override '{key}': '{where}' is not set in the config, so it has no "
                            f"item {parts[i + 1]}; set the whole list instead: {where}=[...]"
                        )
                    node = node.setdefault(part, {})
            else:
                raise UserError(f"override '{key}': '{'.'.join(parts[:i])}' is not a mapping")
    return data


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model class inside an annotation (lists, optionals, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid key names of the config model at ``loc`` (for 'did you mean' hints)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        if part in _STAGES:
            current = _STAGES[part]
            continue
        field = current.model_fields.get(part)
        current = _model_in(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def validate(model: type[BaseModel], data: dict[str, Any], source: str = "config") -> Any:
    """Validate ``data`` against ``model``; the first problem becomes a one-line UserError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc if p not in _STAGES)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
            )
            raise UserError(f"{source}: unknown key '{key}'{hint}") from None
        where = f"'{key}': " if key else ""
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {where}{msg}{shown}") from None


_STAGES: dict[str, type[BaseModel]] = {
    "finetune": FinetuneConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "train": Seq2SeqConfig,
    "generate": GenerateConfig,
    "evaluate-mt": TranslationEvalConfig,
}


def load_config(
    model: type[BaseModel], path: str | Path | None, overrides: list[str] | None = None
) -> Any:
    """Load a YAML config (or start empty), apply dotted overrides and validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate(model, data, source=str(path) if path is not None else "config")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Save the resolved config as YAML, atomically."""
    from textdistill.paths import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
