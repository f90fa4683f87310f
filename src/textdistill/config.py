"""Configuration: pydantic models of every stage and recipe, YAML loading, dotted overrides."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from textdistill.errors import UserError

Seed = Annotated[int, Field(ge=0, lt=2**32)]
"""A random seed: 0 <= seed < 2**32 (NumPy's range)."""


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    positional: ClassVar[str | None] = None
    """The list field that bare command-line words fill (e.g. the models to evaluate)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ()
    """Dotted keys (``*`` matches a list index) that ``--resume`` may change: they extend a run
    or do not shape training. Any other change is an error."""


Precision = Literal["auto", "fp32", "bf16", "fp16"]
"""Numeric precision of forward passes: ``auto`` is bf16 where the hardware has it natively
(AVX512-BF16/AMX CPUs, most GPUs), else fp32 (see ``textdistill.precision``)."""

TableFormat = Literal["auto", "csv", "tsv", "jsonl", "parquet", "hf"]
"""File formats of labelled data: ``auto`` goes by the extension (a folder is a Hugging Face
``save_to_disk`` dataset)."""


class Columns(Strict):
    """Column (or JSON key) names of a classification file."""

    text: str = "text"
    text_pair: str | None = None
    """The second text of a sentence-pair task (e.g. the hypothesis of NLI)."""
    label: str = "label"


def _corpus_or_files(data: Any, default: str) -> list[str]:
    """The split files a data config gives; with neither them nor a corpus, the ``default``
    corpus is set. Both at once is an error."""
    files = [k for k in ("train", "dev", "test") if getattr(data, k) is not None]
    if data.corpus is not None and files:
        raise ValueError(f"give either 'corpus' or train/dev/test files, not both (got corpus "
                         f"and {', '.join(files)})")
    if not files and data.corpus is None:
        data.corpus = default
    return files


class DataConfig(Strict):
    """Classification data, a shipped corpus or the user's own files, and how to batch it.

    Either ``corpus`` (a shipped corpus by name, or one file or dataset folder holding every
    row, split by a seeded stratified split) or ``train``/``dev``/``test`` files. With neither,
    the corpus is ``rotten-tomatoes``."""

    corpus: str | None = None
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    format: TableFormat = "auto"
    columns: Columns = Field(default_factory=Columns)
    labels: list[str] | None = None
    """Label names in id order; by default the sorted labels of the training split (integer
    labels in numeric order)."""
    split_seed: Seed = 13
    dev_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_length: int = Field(128, gt=1)
    batch_size: int = Field(32, gt=0)
    eval_batch_size: int = Field(64, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    max_eval_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        files = _corpus_or_files(self, "rotten-tomatoes")
        if files and (self.train is None or self.dev is None):
            raise ValueError("own data files need at least 'train' and 'dev' (dev selects the "
                             "best model); or give one file as 'corpus' to split it")
        return self


class OptimConfig(Strict):
    """AdamW with linear warmup and decay, and gradient clipping."""

    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int | None = Field(None, ge=0)
    """Overrides warmup_ratio when set."""
    schedule: Literal["linear", "inverse_sqrt"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0, allow_inf_nan=False)
    """Clip the gradient norm to this (> 0); null: no clipping."""


class LayerMapConfig(Strict):
    """How student layers map to teacher layers for the intermediate losses."""

    strategy: Literal["uniform", "top", "bottom", "explicit"] = "uniform"
    layers: list[int] | None = None
    weights: list[float] | None = None


Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""A distillation temperature τ: finite and > 0 (1 leaves the distributions as they are)."""


class LossSpec(Strict):
    """One term of an objective: a registered loss (``losses.REGISTRY``), its weight and its own
    parameters."""

    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    needs_teacher: ClassVar[bool] = True


class Hard(LossSpec):
    """Cross-entropy with the gold labels (tokens, for seq2seq), optionally label-smoothed."""

    loss: Literal["hard"]
    smoothing: float = Field(0.0, ge=0, lt=1)
    needs_teacher: ClassVar[bool] = False


class SoftTarget(LossSpec):
    """A divergence between teacher and student distributions at temperature τ, times τ², mixed
    with the hard-label loss: α·τ²·D + (1 − α)·hard."""

    temperature: Temperature = 1.0
    alpha: float = Field(0.5, ge=0, le=1)


class KD(SoftTarget):
    """Hinton's KD: D = KL(teacher ‖ student)."""

    loss: Literal["kd"]


class ReverseKL(SoftTarget):
    """D = KL(student ‖ teacher) (mode-seeking)."""

    loss: Literal["reverse_kl"]


class JSD(SoftTarget):
    """Generalized Jensen–Shannon: β·KL(t ‖ m) + (1 − β)·KL(s ‖ m), m = β·t + (1 − β)·s;
    β = 0 is forward KL, β = 1 reverse KL (the limits of JSD/β and JSD/(1 − β))."""

    loss: Literal["jsd"]
    beta: float = Field(0.5, ge=0, le=1)


class SkewKL(SoftTarget):
    """DistiLLM's skew KL: KL(t ‖ λ·t + (1 − λ)·s); ``reverse``: KL(s ‖ λ·s + (1 − λ)·t)."""

    loss: Literal["skew_kl"]
    skew: float = Field(0.1, ge=0, lt=1)
    reverse: bool = False


class TVD(SoftTarget):
    """Total variation distance: ½·Σ|t − s|."""

    loss: Literal["tvd"]


class SoftCE(LossSpec):
    """TinyBERT's prediction-layer loss: −Σ softmax(t/τ)·log_softmax(s/τ) (no τ²)."""

    loss: Literal["soft_ce"]
    temperature: Temperature = 1.0


class Embedding(LossSpec):
    """MSE of the embedding outputs, the student projected to the teacher's width."""

    loss: Literal["embedding"]


class Hidden(LossSpec):
    """MSE of mapped hidden states through learned projections."""

    loss: Literal["hidden"]
    layer_map: LayerMapConfig = Field(default_factory=LayerMapConfig)
    shared_projection: bool = False


class Attention(LossSpec):
    """MSE of mapped pre-softmax attention scores per head, padding excluded."""

    loss: Literal["attention"]
    layer_map: LayerMapConfig = Field(default_factory=LayerMapConfig)
    average_heads: bool = False
    """Average each side over its heads first (to compare different head counts)."""


class Length(LossSpec):
    """Cross-entropy of a non-autoregressive model's target-length prediction (its classes
    are offsets from the source length)."""

    loss: Literal["length"]
    weight: float = Field(0.1, ge=0, allow_inf_nan=False)
    needs_teacher: ClassVar[bool] = False


class MiniLM(LossSpec):
    """MiniLM (Wang et al. 2020): KL between the teacher's and the student's self-attention
    distributions and between their value relations softmax(V V^T / sqrt(d_head)), head by
    head (equal head counts), teacher layer ``teacher_layer`` against the student's last."""

    loss: Literal["minilm"]
    teacher_layer: int | None = Field(None, ge=1)
    """1-based; default: the teacher's last layer."""


class MiniLMv2(LossSpec):
    """MiniLMv2 (Wang et al. 2021): KL between the teacher's and the student's query-query,
    key-key and value-value self-relations, their heads concatenated and re-split into
    ``relation_heads``, so head counts (and widths) may differ."""

    loss: Literal["minilmv2"]
    teacher_layer: int | None = Field(None, ge=1)
    """1-based; default: the teacher's last layer (the paper takes an upper-middle one of
    large teachers)."""
    relation_heads: int = Field(12, ge=1)
    """Must divide both models' attention widths (heads x head size)."""
    relations: list[Literal["query", "key", "value"]] = Field(
        default_factory=lambda: ["query", "key", "value"], min_length=1)


Objective = Annotated[
    Hard | KD | ReverseKL | JSD | SkewKL | TVD | SoftCE | Embedding | Hidden | Attention | Length
    | MiniLM | MiniLMv2,
    Field(discriminator="loss"),
]
LOSS_SPECS: dict[str, type[LossSpec]] = {
    get_args(cls.model_fields["loss"].annotation)[0]: cls
    for cls in get_args(get_args(Objective)[0])
}
"""Loss name -> its parameter model."""


def _needs_teacher(objectives: list[LossSpec], teacher: str | None) -> None:
    names = sorted({o.loss for o in objectives if o.needs_teacher})
    if names and teacher is None:
        raise ValueError(f"losses {names} need a teacher: set 'teacher' to a model folder or an "
                         "earlier stage's name")


class Phase(Strict):
    """One training phase: its objectives, length and optimiser."""

    name: str = "train"
    epochs: float = Field(3, gt=0)
    objectives: list[Objective] = Field(default_factory=lambda: [Hard(loss="hard")],
                                        min_length=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)


class StudentConfig(Strict):
    """A student: a named preset, optionally initialised from chosen teacher layers, or a
    general student (``general-distill``'s model) to go on from."""

    preset: str = "tinybert-4"
    init_from_teacher: list[int] | None = None
    init_from: str | None = None
    """A general student's folder (or that stage's name): its encoder, with a new prediction
    layer, instead of a new ``preset`` model; it must share the teacher's vocabulary."""
    vocab_from: str = "minilm"
    """Model folder whose tokenizer the student shares when training without a teacher."""

    @model_validator(mode="after")
    def _one_start(self) -> StudentConfig:
        if self.init_from is not None and self.init_from_teacher:
            raise ValueError("give init_from (a general student) or init_from_teacher (teacher "
                             "layers), not both")
        return self


class FinetuneConfig(Strict):
    """Fine-tune an encoder into a sequence classifier (the teacher)."""

    kind: Literal["finetune"] = "finetune"
    name: str = "teacher"
    model: str = "minilm"
    data: DataConfig = Field(default_factory=DataConfig)
    epochs: float = Field(3, gt=0)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: Seed = 42
    select_metric: str = "accuracy"
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("epochs", "data.eval_batch_size")


class DistillConfig(Strict):
    """Train a student, with a teacher (distillation) or on labels alone."""

    kind: Literal["distill"] = "distill"
    name: str = "student"
    teacher: str | None = None
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    phases: list[Phase] = Field(default_factory=lambda: [Phase()], min_length=1)
    teacher_cache: bool = True
    """Compute the teacher's logits once per training set and reuse them (cached on disk under
    $TEXTDISTILL_CACHE, keyed by teacher, data, tokenization and precision); phases with
    hidden-state or attention losses still run the teacher."""
    seed: Seed = 42
    select_metric: str = "accuracy"
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("phases.*.epochs", "data.eval_batch_size")

    @model_validator(mode="after")
    def _teacher_needed(self) -> DistillConfig:
        _needs_teacher([o for p in self.phases for o in p.objectives], self.teacher)
        return self


class TextConfig(Strict):
    """Unlabeled text: the shipped ``mono-en`` corpus or the user's text files (one text per
    line). Each text is cut into pieces of at most ``max_length`` tokens ([CLS] and [SEP]
    included)."""

    corpus: Literal["mono-en"] | None = None
    files: list[str] | None = None
    max_length: int = Field(128, gt=2)
    batch_size: int = Field(32, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    """Texts (lines) to train on, after the held-out ones; default: all."""
    max_eval_examples: int = Field(500, gt=0)
    """Texts held out (a seeded draw; no training text equals one) to measure on."""

    @model_validator(mode="after")
    def _one_source(self) -> TextConfig:
        if self.corpus is not None and self.files:
            raise ValueError("give either 'corpus' or 'files', not both")
        if self.files is not None and not self.files:
            raise ValueError("'files' is empty: list at least one text file")
        if self.corpus is None and not self.files:
            self.corpus = "mono-en"
        return self


INTERMEDIATE_LOSSES = ("embedding", "hidden", "attention", "minilm", "minilmv2")


class GeneralDistillConfig(Strict):
    """TinyBERT's general distillation: a student learns a pretrained (not fine-tuned)
    encoder's embeddings, hidden states and attention on unlabeled text."""

    kind: Literal["general-distill"] = "general-distill"
    name: str = "general"
    teacher: str = "minilm"
    """A pretrained encoder folder (default: all-MiniLM-L6-v2) or an earlier stage's name."""
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: TextConfig = Field(default_factory=TextConfig)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Embedding(loss="embedding"), Hidden(loss="hidden"),
                                 Attention(loss="attention")], min_length=1)
    epochs: float = Field(1, gt=0)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4))
    checkpoint_every: int | None = Field(200, gt=0)
    """Also checkpoint every this many steps (an epoch over a large corpus is long)."""
    seed: Seed = 42
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("epochs", "checkpoint_every")

    @model_validator(mode="after")
    def _intermediate_only(self) -> GeneralDistillConfig:
        other = sorted({o.loss for o in self.objectives} - set(INTERMEDIATE_LOSSES))
        if other:
            raise ValueError(f"general distillation has no labels and no prediction layer: use "
                             f"the {', '.join(INTERMEDIATE_LOSSES)} losses, not {other}")
        if self.student.init_from is not None:
            raise ValueError("general distillation builds its student from a preset: drop "
                             "student.init_from")
        return self


class PruneConfig(Strict):
    """Prune a classifier's vocabulary to the tokens its training split uses (and every special
    token): the word-embedding rows of the other tokens are dropped."""

    kind: Literal["prune"] = "prune"
    name: str = "pruned"
    model: str
    """A classifier folder (fast WordPiece tokenizer) or an earlier stage's name."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Its training split (``max_train_examples`` rows, drawn with ``seed``) defines the kept
    vocabulary; its dev and test texts are counted for tokens the pruned vocabulary lacks."""
    seed: Seed = 42
    """Seed of the ``max_*_examples`` subsets (distill's default, so the same rows)."""


class MLMTextConfig(TextConfig):
    """Unlabeled text of a masked language model: ``max_eval_examples`` texts are held out (a
    seeded draw; no training text equals one) to measure its masked-token accuracy."""

    max_eval_examples: int = Field(1000, gt=0)


class TrainMLMConfig(Strict):
    """Train a masked language model, the one TinyBERT's augmentation asks for candidate words:
    an encoder with a masked-LM head, on unlabeled text, with BERT's masking (15% of the tokens,
    of them 80% [MASK], 10% a random token, 10% unchanged)."""

    kind: Literal["train-mlm"] = "train-mlm"
    name: str = "mlm"
    model: str = "minilm"
    """An encoder folder (default: all-MiniLM-L6-v2, which has no masked-LM head: a new one is
    made, its decoder tied to the word embeddings), a masked LM, or an earlier stage's name."""
    data: MLMTextConfig = Field(default_factory=MLMTextConfig)
    train_encoder: bool = False
    """Train the encoder too; by default it is frozen and only the head trains (cheap on a
    CPU)."""
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    epochs: float = Field(1, gt=0)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3))
    """AdamW; the default lr suits the head alone: with ``train_encoder`` use about 5e-5."""
    seed: Seed = 42
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("epochs",)


class AugmentConfig(Strict):
    """TinyBERT's data augmentation of a classification training split: ``copies`` variants of
    every example, each word replaced with probability ``p_replace`` by one of ``candidates``
    words (a masked LM's predictions for single-WordPiece words, GloVe neighbours for the
    others); stopwords and non-alphabetic tokens stay."""

    kind: Literal["augment"] = "augment"
    name: str = "augmented"
    mlm: str
    """A masked language model folder (``train-mlm``'s model) or an earlier stage's name."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Its training split (``max_train_examples`` rows, drawn with ``seed``, as ``distill`` draws
    them) is augmented; dev and test are copied unchanged. A masked word is predicted from at
    most ``max_length`` tokens around it."""
    copies: int = Field(20, ge=1)
    """Variants drawn per example (N_a); duplicates of each other or of the original are
    dropped."""
    p_replace: float = Field(0.4, ge=0, le=1)
    """Probability that a word with candidates is replaced in a variant (p_t)."""
    candidates: int = Field(15, ge=1)
    """Candidate words per word (K)."""
    words_only: bool = True
    """Candidates are alphabetic and not stopwords, like the words they replace; false: any
    token (but ``##`` pieces and special tokens) or GloVe word, as TinyBERT's script."""
    within_tokens: int | None = Field(None, ge=3)
    """Only words that start within this many tokens of their text (its side of a pair;
    [CLS] and [SEP] counted) may change: set it to the student's ``data.max_length``, which never
    reads the rest, to skip the masked LM's work on long documents. None: every word."""
    batch_size: int = Field(64, ge=1)
    """Masked sentences per forward pass of the masked LM (with ``precision: fp32`` the output
    does not depend on it)."""
    chunk_size: int = Field(500, ge=1)
    """Examples per chunk: finished chunks are kept, so --resume goes on after the last one."""
    seed: Seed = 42
    """Seed of the ``max_*_examples`` subsets (distill's default, so the same rows) and of the
    replacements (example i's draws depend only on the seed and i)."""
    precision: Precision = "auto"
    """The masked LM's encoder runs in this precision, its weights cast once (its output layer
    in fp32); auto: bf16 where the hardware has it, 2.2x faster than fp32 on this project's CPU.
    bf16 kernels round differently for batches of different shapes, so a few candidates (about
    2%) differ from fp32's and depend on ``batch_size``; fp32 gives the same output for every
    ``batch_size``. fp16 is GPU only."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("batch_size",)


class EvaluateConfig(Strict):
    """Evaluate models on a test split: task metrics, size, latency, throughput."""

    kind: Literal["evaluate"] = "evaluate"
    name: str = "evaluate"
    models: list[str] = Field(min_length=1)
    data: DataConfig = Field(default_factory=DataConfig)
    split: Literal["dev", "test"] = "test"
    latency_examples: int = Field(100, gt=0)
    throughput_batches: int = Field(10, gt=0)
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    fastest_precision: bool = False
    """Evaluate each model in ``precision`` or fp32, whichever runs it faster at batch 1 here
    (both timed first; accuracy and speed are then measured in it; the table says which). A
    small student's batch-1 time is mostly per-operation overhead, which bf16 does not cut."""
    runtime: Literal["torch", "onnxruntime"] = "torch"
    """Where the models run: PyTorch, or ONNX Runtime (each model exported to ONNX first, run
    in fp32 on the CPU): how a small model is deployed, with little per-operation overhead."""
    positional: ClassVar[str | None] = "models"

    @model_validator(mode="after")
    def _onnx_runs_fp32(self) -> EvaluateConfig:
        if self.runtime == "onnxruntime" and (self.precision in ("bf16", "fp16")
                                              or self.fastest_precision):
            raise ValueError("runtime onnxruntime evaluates in fp32: leave precision at auto "
                             "(or fp32) and fastest_precision off")
        return self


class ParallelDataConfig(Strict):
    """Parallel text, the shipped l10n corpus or the user's own files, and how to batch it.

    Either ``corpus: l10n`` (English to de, fr, es) or ``train``/``dev``/``test``, each a TSV or
    JSONL file whose columns are named by the language codes (see ``columns``), or a list of
    line-aligned plain-text files: the source, then one file per target language. With
    neither, the corpus is ``l10n``."""

    corpus: str | None = None
    src_lang: str = "en"
    tgt_lang: str = "de"
    """One language code, or a ``+`` set such as ``de+fr+es`` (several targets per source)."""
    train: str | list[str] | None = None
    dev: str | list[str] | None = None
    test: str | list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    """Column names of TSV/JSONL files by language code, where they differ from the codes."""
    multi_target: Literal["sample", "all"] = "sample"
    """With several target languages: pair each source with one target drawn uniformly and
    reproducibly (``sample``), or with every target (``all``: one pair per target)."""
    targets: str | None = None
    """Training targets from a file (one per training source) or a generate stage's name."""
    max_length: int = Field(128, gt=1)
    batch_tokens: int = Field(4096, gt=0)
    max_train_examples: int | None = Field(None, gt=0)
    max_eval_examples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_source(self) -> ParallelDataConfig:
        _corpus_or_files(self, "l10n")
        langs = self.tgt_lang.split("+")
        if len(set(langs)) != len(langs) or self.src_lang in langs or not all(langs):
            raise ValueError(f"tgt_lang {self.tgt_lang!r} must be distinct language codes "
                             f"joined by '+', none equal to src_lang {self.src_lang!r}")
        return self

    @property
    def target_langs(self) -> list[str]:
        return self.tgt_lang.split("+")


class Seq2SeqInit(Strict):
    """Teacher layers (1-based, one per student layer) that initialise a translation student."""

    encoder: list[int]
    decoder: list[int]


class NATSettings(Strict):
    """A non-autoregressive model (``models.nat``): how it is trained and decoded on dev."""

    masking: Literal["all", "random"] = "random"
    """all: vanilla NAT (every target token masked, decoded in one pass); random: CMLM (a
    uniformly drawn number of target tokens masked; decoded by mask-predict)."""
    decoder_input: Literal["mask", "copy"] = "mask"
    """What masked decoder positions see: the [MASK] embedding, or a uniform copy of the
    source embeddings."""
    max_length_offset: int = Field(20, ge=1)
    """Length classes: target length − source length, clamped to ±this."""
    iterations: int | None = Field(None, ge=1)
    """Mask-predict iterations of the dev decoding that selects the best model (default: 1
    for masking all, 4 for random)."""
    length_beam: int = Field(3, ge=1)
    """Length candidates per source in the dev decoding."""

    @property
    def dev_iterations(self) -> int:
        return self.iterations or (1 if self.masking == "all" else 4)


class Seq2SeqConfig(Strict):
    """Train a translation model: a teacher on gold data or a student (Seq-KD, word-KD); with
    ``nat``, a non-autoregressive student (vanilla NAT or CMLM)."""

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
    objectives: list[Objective] = Field(
        default_factory=lambda: [Hard(loss="hard", smoothing=0.1)], min_length=1)
    """Token-level losses: ``hard`` (label-smoothed NLL), ``kd`` (word-level KD) or any other
    divergence, computed over the non-padding target tokens."""
    teacher: str | None = None
    teacher_cache: bool = True
    """Compute the teacher's top-k log-probabilities per target token once (cached on disk
    under $TEXTDISTILL_CACHE) for divergences at temperature 1; else the teacher runs every
    step."""
    teacher_topk: int = Field(16, ge=1)
    """k of the cached outputs: the teacher's k most probable tokens, the rest as one bucket."""
    init_from_teacher: Seq2SeqInit | None = None
    """Start from the teacher's embeddings and these layers instead of random weights."""
    nat: NATSettings | None = None
    """Train a non-autoregressive model (e.g. ``nat: {masking: all}``); its length loss
    (``length``, weight 0.1) is added to the objectives unless they have one."""
    seed: Seed = 42
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    resume_may_change: ClassVar[tuple[str, ...]] = ("epochs",)

    @model_validator(mode="after")
    def _teacher_needed(self) -> Seq2SeqConfig:
        _needs_teacher(self.objectives, self.teacher)
        if self.nat is not None:
            if any(o.needs_teacher for o in self.objectives) or self.init_from_teacher:
                raise ValueError("a NAT model learns from a teacher through its outputs: train "
                                 "it on the teacher's translations (data.targets, Seq-KD) with "
                                 "the hard and length losses, not token-level KD or "
                                 "init_from_teacher")
            if not any(o.loss == "length" for o in self.objectives):
                self.objectives.append(Length(loss="length"))
        elif any(o.loss == "length" for o in self.objectives):
            raise ValueError("the length loss is for non-autoregressive models: set 'nat' or "
                             "drop it")
        if self.init_from_teacher is not None and self.teacher is None:
            raise ValueError("init_from_teacher needs a teacher: set 'teacher' to a model folder "
                             "or an earlier stage's name")
        return self


class DecodeConfig(Strict):
    """How to decode: the search method and its parameters."""

    method: Literal["beam", "greedy", "sample", "topk", "topp"] = "beam"
    beam: int = Field(5, ge=1)
    num_return: int = Field(1, ge=1)
    """Hypotheses per source: a k-best list (beam) or several samples."""
    sampling_temperature: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Softmax temperature of sampling (methods sample, topk, topp); not a distillation τ."""
    top_k: int = Field(10, ge=1)
    top_p: float = Field(0.9, gt=0, le=1)
    length_penalty: float = 1.0
    """Beam score: log-probability / length ** length_penalty."""
    max_len_a: float = Field(1.5, ge=0)
    max_len_b: int = 10
    """Each output has at most ⌊max_len_a · source tokens + max_len_b⌋ tokens ..."""
    max_length: int = Field(256, ge=1)
    """... and at most max_length (``</s>`` included)."""
    seed: Seed = 0
    """Sampling seed (per shard, so results do not depend on processes or interruptions)."""
    iterations: int = Field(1, ge=1)
    """Non-autoregressive models: mask-predict iterations T (1: one parallel pass, vanilla
    NAT). ``method``, ``beam`` and ``length_penalty`` apply to autoregressive models only."""
    length_beam: int = Field(1, ge=1)
    """Non-autoregressive models: length candidates per source; the best by average token
    log-probability is kept."""

    @model_validator(mode="after")
    def _consistent(self) -> DecodeConfig:
        if self.method == "beam" and self.num_return > self.beam:
            raise ValueError(f"num_return {self.num_return} is larger than the beam "
                             f"{self.beam}; beam search returns at most beam hypotheses")
        if self.method == "greedy" and self.num_return != 1:
            raise ValueError("greedy search returns one hypothesis: use num_return 1, or beam")
        return self


class GenerateConfig(DecodeConfig):
    """Decode a corpus with a teacher: the distilled corpus (``kbest.jsonl``, ``targets.txt``).

    The sources are ``src`` (a text file, one sentence per line) or a split of ``data``."""

    kind: Literal["generate"] = "generate"
    name: str = "distilled"
    model: str
    src: str | None = None
    data: ParallelDataConfig = Field(default_factory=ParallelDataConfig)
    split: Literal["train", "dev", "test"] = "train"
    select: Literal["top", "sentence_bleu"] = "top"
    """Which hypothesis becomes the target: the best-scoring, or (Seq-Inter) the one with the
    highest sentence BLEU against the reference (needs ``data``, not ``src``)."""
    kbest_from: str | None = None
    """Select from the k-best lists of an earlier generate stage (or a ``kbest.jsonl``) of the
    same split instead of decoding again."""
    shard_size: int = Field(1000, ge=1)
    """Sentences per resumable shard."""
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""

    @model_validator(mode="after")
    def _sources(self) -> GenerateConfig:
        if self.src is not None and (self.select != "top" or self.kbest_from is not None):
            raise ValueError("select: sentence_bleu and kbest_from need references: decode a "
                             "split of 'data' instead of 'src'")
        return self


class TranslationEvalConfig(Strict):
    """Evaluate translation models on a split: BLEU/chrF per beam size, size, speed."""

    kind: Literal["evaluate-mt"] = "evaluate-mt"
    name: str = "evaluate"
    models: list[str] = Field(min_length=1)
    data: ParallelDataConfig = Field(default_factory=ParallelDataConfig)
    split: Literal["dev", "test"] = "test"
    beams: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5],
                                                     min_length=1)
    """Beam sizes of autoregressive models (1: greedy)."""
    iterations: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 4, 10],
                                                          min_length=1)
    """Mask-predict iterations of non-autoregressive models (1: one parallel pass)."""
    length_beam: int = Field(3, ge=1)
    """Length candidates per source of non-autoregressive models."""
    precision: Precision = "auto"
    """auto (bf16 where the hardware has it, else fp32), fp32, bf16, or fp16 (GPU only)."""
    positional: ClassVar[str | None] = "models"


class AlignerConfig(Strict):
    """The word aligner (fast_align's model; defaults are its recommended ``-d -o -v``)."""

    iterations: int = Field(5, ge=0)
    """EM iterations; fast_align's -I N (N − 1 EM passes, then one that only aligns) is
    iterations N − 1 here, or iterations N with fast_align_compatible."""
    fast_align_compatible: bool = False
    """Reproduce fast_align's own tension update (its empirical feature at the 0-based
    target position, its normaliser with the two sentence lengths swapped, every target token
    weighted 1) and its -I iteration counting; default: the consistent gradient."""
    diagonal: bool = True
    """Favour the diagonal (``-d``)."""
    optimize_tension: bool = True
    """Tune the diagonal tension λ (``-o``)."""
    variational_bayes: bool = True
    """A Dirichlet prior on the lexical table (``-v``)."""
    alpha: float = Field(0.01, gt=0)
    """Dirichlet alpha (``-a``)."""
    p0: float = Field(0.08, ge=0, lt=1)
    """Null alignment probability."""
    tension: float = Field(4.0, gt=0)
    """Initial tension (``-T``)."""
    symmetrization: Literal["intersection", "union", "grow-diag", "grow-diag-final",
                            "grow-diag-final-and"] = "grow-diag-final-and"


class AnalyzeConfig(AlignerConfig):
    """Complexity, faithfulness, reordering, BLEU/chrF and language modes of parallel corpora
    (Zhou, Gu & Neubig 2020): ``tgt`` files (e.g. distilled corpora) of the source ``src``."""

    kind: Literal["analyze"] = "analyze"
    name: str = "analysis"
    src: str | None = None
    """The source side (a file); default: the sources of ``split`` of ``data``."""
    tgt: list[str] = Field(default_factory=list)
    """Target sides aligned with ``src`` (files, or generate stages' names); none to measure
    the real data alone."""
    real: str | None = None
    """The human target side of ``src`` (for faithfulness, BLEU and chrF); with ``data``, its
    targets of ``split``."""
    data: ParallelDataConfig | None = None
    """A parallel corpus to take ``src`` and ``real`` from, one line per pair as training
    reads it (``multi_target: all`` repeats each source once per language); with several
    target languages (``tgt_lang: de+fr+es``) the language modes are fitted on its training
    targets, one side per language."""
    split: Literal["train", "dev", "test"] = "test"
    tokenize: Literal["words", "subwords"] = "words"
    tokenizer: str | None = None
    """A Hugging Face tokenizer folder, for ``tokenize: subwords``."""
    epsilon: float = Field(1e-6, gt=0)
    """Smoothing of p_d(y|x) in F(d)."""
    lang_refs: dict[str, str] = Field(default_factory=dict)
    """Real target side per language code, for the language-mode report."""
    alignments: bool = False
    """Also write Pharaoh alignments and lexical tables under ``alignments/``."""
    positional: ClassVar[str | None] = "tgt"

    @model_validator(mode="after")
    def _source_given(self) -> AnalyzeConfig:
        if (self.src is None) == (self.data is None):
            raise ValueError("give the source side as 'src' (a file) or as 'data' (a parallel "
                             "corpus and its 'split'), one of them")
        if not self.tgt and self.real is None and self.data is None:
            raise ValueError("nothing to measure: give target corpora ('tgt'), the real "
                             "targets ('real') or a corpus ('data')")
        return self


Stage = Annotated[
    FinetuneConfig
    | DistillConfig
    | GeneralDistillConfig
    | PruneConfig
    | TrainMLMConfig
    | AugmentConfig
    | EvaluateConfig
    | Seq2SeqConfig
    | GenerateConfig
    | TranslationEvalConfig
    | AnalyzeConfig,
    Field(discriminator="kind"),
]
STAGE_CONFIGS: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["kind"].annotation)[0]: cls for cls in get_args(get_args(Stage)[0])
}
"""Stage kind -> its config model (``stages.STAGES`` adds the function that runs it)."""


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
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded): save it "
                        "as UTF-8") from None
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


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """Whether ``loc[i]`` is a union tag (a stage kind or a loss name) pydantic put in the path:
    tags follow a list index."""
    return i > 0 and isinstance(loc[i - 1], int) and loc[i] in _TAGS


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid key names of the config model at ``loc`` (for 'did you mean' hints)."""
    current: type[BaseModel] | None = model
    for i, part in enumerate(loc[:-1]):
        if isinstance(part, int) or current is None:
            continue
        if _is_tag(loc, i):
            current = _TAGS[part]
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
        key = ".".join(str(p) for i, p in enumerate(loc) if not _is_tag(loc, i))
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
            )
            raise UserError(f"{source}: unknown key '{key}'{hint}") from None
        if err["type"] == "union_tag_invalid":  # an unknown stage kind or loss name
            ctx = err["ctx"]
            field = ctx["discriminator"].strip("'")
            key = f"{key}.{field}" if key else field
            raise UserError(f"{source}: '{key}': unknown {field} {ctx['tag']!r}; use one of "
                            f"{ctx['expected_tags']}") from None
        where = f"'{key}': " if key else ""
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: {where}{msg}{shown}") from None


_TAGS: dict[str, type[BaseModel]] = {**STAGE_CONFIGS, **LOSS_SPECS}


def load_config(
    model: type[BaseModel], path: str | Path | None, overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Any:
    """Load a YAML config (or start empty), set ``values``, apply dotted overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data.update(values or {})
    data = apply_overrides(data, overrides or [])
    return validate(model, data, source=str(path) if path is not None else "config")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    """Save the resolved config as YAML, atomically."""
    from textdistill.paths import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
