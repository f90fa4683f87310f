"""The stage table: kind -> (config model, function, the outputs it shows). The CLI makes one
command of each entry and the recipe runner runs them, so a stage is added here once (and its
config model in ``config.Stage``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from textdistill.config import STAGE_CONFIGS
from textdistill.runs import one_writer, prepare_output, write_run_info

console = Console(stderr=True, width=None if sys.stderr.isatty() else 140, soft_wrap=True)


def _lazy(module: str, function: str) -> Callable[[Any, Path, bool], dict]:
    """``module.function(cfg, out, resume=...)``, imported when first run (the CLI starts
    without loading torch and every model library)."""

    def run(cfg, out: Path, resume: bool) -> dict:
        return getattr(import_module(module), function)(cfg, out, resume=resume)

    return run


def show_trained(summary: dict, out: Path) -> None:
    """One closing line: where the model is and its best dev scores."""
    best = summary.get("best_dev") or {}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
    precision = f" (trained in {summary['precision']})" if "precision" in summary else ""
    console.print(f"model saved in {out / 'model'}{precision}; best dev: {shown or 'n/a'}")


def show_pruned(result: dict, out: Path) -> None:
    """One closing line: where the pruned model is, its vocabulary and parameters."""
    lacking = ", ".join(f"{split} {n['pruned_tokens']:,} of {n['tokens']:,} ({n['unk_tokens']:,} "
                        "words become [UNK])" for split, n in result["unknown"].items())
    console.print(f"model saved in {out / 'model'}: {result['vocab_before']:,} -> "
                  f"{result['kept_tokens']:,} tokens, {result['params_before']:,} -> "
                  f"{result['params_after']:,} parameters; tokens outside the kept vocabulary: "
                  f"{lacking}")


def show_augmented(result: dict, out: Path) -> None:
    """Where the augmented data is, its counts, and the data settings that train on it."""
    labels = ", ".join(result["labels"])
    test = f" data.test={out / 'test.jsonl'}" if "test_rows" in result else ""
    pair = " data.columns.text_pair=text_pair" if result.get("text_pair") else ""
    console.print(f"wrote {out / 'augmented.jsonl'}: {result['examples']:,} examples -> "
                  f"{result['rows']:,} rows ({result['duplicates_removed']:,} duplicate variants "
                  f"dropped; words replaced: {result['replaced_mlm']:,} by the masked LM, "
                  f"{result['replaced_glove']:,} by GloVe) in {result['seconds']} s; train on it "
                  f"with data.train={out / 'augmented.jsonl'} data.dev={out / 'dev.jsonl'}{test} "
                  f"'data.labels=[{labels}]'{pair}", markup=False)


def show_evaluation(table: dict, out: Path) -> None:
    from textdistill.evaluate import format_table

    Console(width=None if sys.stdout.isatty() else 160).print(format_table(table))


def show_generated(result: dict, out: Path) -> None:
    rate = result.get("sentences_per_second")
    speed = f", {rate} sentences/s" if rate is not None else ""
    console.print(f"wrote {out / 'kbest.jsonl'} and {out / 'targets.txt'}: "
                  f"{result['sources']} sources{speed}")


def show_analysis(result: dict, out: Path) -> None:
    from textdistill.analysis.command import print_table

    print_table(result)


@dataclass(frozen=True)
class StageKind:
    """A stage: its config, ``run(config, out_dir, resume) -> metrics`` and how its result is
    shown. ``refs`` maps config fields that may name an earlier stage to the file or folder
    of that stage they then stand for."""

    run: Callable[[Any, Path, bool], dict]
    show: Callable[[dict, Path], None]
    help: str
    refs: dict[str, str] = field(default_factory=dict)

    def config(self, kind: str) -> type[BaseModel]:
        return STAGE_CONFIGS[kind]

    def execute(self, cfg: Any, out: Path, resume: bool = False,
                overwrite: bool = False) -> dict:
        """Run the stage into ``out`` as its only writer, recording ``run.json``: resuming
        the earlier run there (same settings), or replacing its outputs (``overwrite``)."""
        precision = None
        if hasattr(cfg, "precision"):  # checked before anything is written
            from textdistill.precision import default_device, resolve_precision

            precision = resolve_precision(cfg.precision, default_device())
        with one_writer(out):
            prepare_output(out, cfg, resume, overwrite)
            write_run_info(out, precision)
            return self.run(cfg, out, resume)


STAGES: dict[str, StageKind] = {
    "finetune": StageKind(_lazy("textdistill.distill", "run_finetune"), show_trained,
                          "Fine-tune an encoder (default: all-MiniLM-L6-v2) into a classifier: "
                          "the teacher.", {"model": "model"}),
    "distill": StageKind(_lazy("textdistill.distill", "run_distill"), show_trained,
                         "Train a classifier student from a teacher (or on labels alone).",
                         {"teacher": "model", "student.vocab_from": "model",
                          "student.init_from": "model", "data.train": "augmented.jsonl",
                          "data.dev": "dev.jsonl", "data.test": "test.jsonl"}),
    "general-distill": StageKind(_lazy("textdistill.general_distill", "run_general_distill"),
                                 show_trained,
                                 "General distillation (TinyBERT): a student encoder learns a "
                                 "pretrained encoder's embeddings, hidden states and attention on "
                                 "unlabeled text (default: mono-en).", {"teacher": "model"}),
    "prune": StageKind(_lazy("textdistill.models.prune", "run_prune"), show_pruned,
                       "Prune a classifier's vocabulary to the tokens of its training data "
                       "(and every special token): a smaller embedding matrix.",
                       {"model": "model"}),
    "train-mlm": StageKind(_lazy("textdistill.models.mlm", "run_train_mlm"), show_trained,
                           "Train a masked language model for augment: a masked-LM head (new "
                           "on all-MiniLM-L6-v2) on unlabeled text (default: mono-en), the "
                           "encoder frozen unless train_encoder.", {"model": "model"}),
    "augment": StageKind(_lazy("textdistill.augment", "run_augment"), show_augmented,
                         "TinyBERT's data augmentation of a training split: variants with "
                         "words replaced by a masked LM's or GloVe's candidates (resumable).",
                         {"mlm": "model"}),
    "evaluate": StageKind(_lazy("textdistill.evaluate", "run_evaluate"), show_evaluation,
                          "Accuracy, macro-F1, MCC, size, latency and throughput of classifiers; "
                          "the first model is the reference.", {"models": "model"}),
    "train": StageKind(_lazy("textdistill.seq2seq.train", "run_train"), show_trained,
                       "Train a translation model: a teacher on gold data, or a student "
                       "(Seq-KD, word-level KD).",
                       {"teacher": "model", "tokenizer": "model", "data.targets": "targets.txt"}),
    "generate": StageKind(_lazy("textdistill.seq2seq.train", "run_generate"), show_generated,
                          "Decode a corpus with a teacher (beam, greedy, sampling, k-best): the "
                          "distilled corpus; resumable, multi-process.",
                          {"model": "model", "kbest_from": "kbest.jsonl"}),
    "evaluate-mt": StageKind(_lazy("textdistill.evaluate", "run_evaluate_mt"), show_evaluation,
                             "BLEU/chrF per beam size, size and speed of translation models.",
                             {"models": "model"}),
    "analyze": StageKind(_lazy("textdistill.analysis.command", "run_analyze"), show_analysis,
                         "Complexity, faithfulness, reordering, BLEU/chrF and language modes of "
                         "parallel corpora.", {"tgt": "targets.txt", "tokenizer": "model"}),
}
"""Every stage kind, in the order the CLI lists them."""
