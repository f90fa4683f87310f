"""The full-size experiments on one CUDA GPU, within a time budget (``make gpu-results``).

    make gpu-results PART=mt                          # on the GPU machine (see docs/gpu.md)
    .venv/bin/python benchmarks/gpu_results.py --smoke --part encoder --run-dir /tmp/gpu-smoke

Two parts, each one run of at most 10 minutes (``--part``):

``mt``: on all 105,601 l10n en→de training pairs, a teacher of every preset (``tiny``,
``small``, ``base``, ``big``; epochs per preset in ``EPOCHS``, chosen to fit the budget) with its
test BLEU (greedy and beam 5) and training time, then ``tiny`` students of the ``base`` teacher on
gold data, with word-level KD, on its beam-5 outputs (Seq-KD) and on the k-best hypothesis
closest to the reference (Seq-Inter), and non-autoregressive ``tiny`` students (vanilla NAT and
CMLM, decoded with T mask-predict iterations) on gold and on the Seq-KD corpus; the students
before the ``big`` teacher, the most expensive stage, and the NAT students last.

``encoder``: general distillation of a ``tinybert-4`` student from the pretrained MiniLM over all
of ``mono-en`` by TinyBERT's, MiniLM's and MiniLMv2's objectives, each followed by the same task
distillation on rotten-tomatoes (recipes/tinybert-ablations.yaml's stages, without augmentation),
with a student without general distillation and the fine-tuned teacher for reference.

When the budget runs out the stage in flight stops (a checkpoint is saved) and the table holds
what finished; rerunning resumes (finished stages are skipped). Writes the run folder and
``docs/results-gpu.md`` or ``docs/results-gpu-encoder.md`` (``--smoke``: in ``RUN_DIR``).
``--smoke`` runs the same script end to end at toy scale on the CPU; CI runs it. ``--bundle DIR``
writes, here, the data the GPU machine lacks (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = {"tiny": 12, "small": 8, "base": 8, "big": 4}
"""Training epochs per teacher preset on the GPU (students: those of ``base``)."""
STUDENT_TEACHER = "base"
NAT_STUDENTS = {"nat-gold": "all", "nat-kd": "all", "cmlm-gold": "random", "cmlm-kd": "random"}
"""Non-autoregressive students (masking) on gold targets and on the teacher's outputs."""
BUDGET_S = 500
"""Seconds of training and decoding: with start-up and installs the run fits 10 minutes."""


def _settings(smoke: bool) -> dict:
    if smoke:
        return {"data": {"tgt_lang": "de", "max_train_examples": 64, "max_eval_examples": 16,
                         "max_length": 32, "batch_tokens": 512},
                "arch": {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1,
                         "decoder_layers": 1},
                "vocab_size": 400, "epochs": dict.fromkeys(EPOCHS, 1), "beam": 2,
                "iterations": [1, 2],
                "optim": {"lr": 0.001, "warmup_steps": 2, "schedule": "inverse_sqrt"}}
    return {"data": {"tgt_lang": "de", "max_eval_examples": 1000, "batch_tokens": 8192},
            "arch": {}, "vocab_size": 8000, "epochs": EPOCHS, "beam": 5,
            "iterations": [1, 4, 10],
            "optim": {"lr": 0.0007, "warmup_steps": 400, "schedule": "inverse_sqrt"}}


def mt_stages(smoke: bool) -> list[dict]:
    """The ``mt`` part's stages, in the order they run."""
    s = _settings(smoke)
    train = {"kind": "train", "data": s["data"], "optim": s["optim"]}
    test = {**s["data"], "max_eval_examples": s["data"].get("max_eval_examples") if smoke
            else None}
    teacher = f"teacher-{STUDENT_TEACHER}"

    def a_teacher(preset: str) -> list[dict]:
        return [{**train, "name": f"teacher-{preset}", "preset": preset, "arch": s["arch"],
                 "vocab_size": s["vocab_size"], "epochs": s["epochs"][preset]},
                {"kind": "evaluate-mt", "name": f"eval-teacher-{preset}",
                 "models": [f"teacher-{preset}"], "data": test, "beams": [1, s["beam"]]}]

    def student(name: str, **extra) -> dict:
        return {**train, "name": name, "preset": "tiny", "arch": s["arch"],
                "epochs": s["epochs"][STUDENT_TEACHER], **extra}

    stages = [*a_teacher("tiny"), *a_teacher("small"), *a_teacher("base")]
    stages += [
        student("student-gold", tokenizer=teacher),
        student("student-wordkd", teacher=teacher, objectives=[
            {"loss": "kd", "alpha": 1.0, "weight": 0.5},
            {"loss": "hard", "smoothing": 0.1, "weight": 0.5}]),
        {"kind": "generate", "name": "distilled", "model": teacher, "data": s["data"],
         "split": "train", "method": "beam", "beam": s["beam"], "num_return": s["beam"]},
        student("student-seqkd", tokenizer=teacher,
                data={**s["data"], "targets": "distilled"}),
        {"kind": "generate", "name": "seqinter", "model": teacher, "data": s["data"],
         "split": "train", "kbest_from": "distilled", "select": "sentence_bleu"},
        student("student-seqinter", tokenizer=teacher,
                data={**s["data"], "targets": "seqinter"}),
        {"kind": "evaluate-mt", "name": "eval-students",
         "models": ["student-gold", "student-wordkd", "student-seqkd", "student-seqinter"],
         "data": test, "beams": [1, s["beam"]]},
        *a_teacher("big"),
    ]
    for name, masking in NAT_STUDENTS.items():  # non-autoregressive students, last
        nat = {"masking": masking} | ({"decoder_input": "copy"} if masking == "all" else {})
        data = {**s["data"], "targets": "distilled"} if name.endswith("-kd") else s["data"]
        stages.append(student(name, tokenizer=teacher, nat=nat, data=data))
    stages.append({"kind": "evaluate-mt", "name": "eval-nat", "models": list(NAT_STUDENTS),
                   "data": test, "iterations": s["iterations"]})
    return stages


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def mt_table(run_dir: Path, smoke: bool) -> str:
    """``results-gpu.md``: what finished, with the settings it finished under."""
    s = _settings(smoke)
    beam = s["beam"]
    info = _read(run_dir / "teacher-tiny" / "run.json") or {}
    lines = ["# Kim & Rush on one GPU: every teacher preset, and students of the "
             f"`{STUDENT_TEACHER}` teacher", "",
             "Written by `benchmarks/gpu_results.py`" + (" --smoke (toy scale, CPU)" if smoke
                                                          else "") + f" on "
             f"{(info.get('machine') or {}).get('cuda') or 'CPU'}, precision "
             f"{info.get('precision', '?')}, torch {(info.get('packages') or {}).get('torch')}. "
             "l10n en→de: all training pairs" + (" (smoke: 64)" if smoke else "") +
             "; test BLEU/chrF (sacreBLEU) on the test split"
             + (" (smoke: 16 sentences)" if smoke else "") + ". Stages missing below did not "
             "finish within the time budget.", "",
             f"| teacher | params | epochs | train time (s) | BLEU greedy | BLEU beam {beam} | "
             f"chrF beam {beam} |", "|---|---|---|---|---|---|---|"]
    for preset in EPOCHS:
        trained = _read(run_dir / f"teacher-{preset}" / "metrics.json")
        table = _read(run_dir / f"eval-teacher-{preset}" / "metrics.json")
        if trained is None or table is None:
            lines.append(f"| {preset} | — | {s['epochs'][preset]} | not finished | | | |")
            continue
        row = next(iter(table["models"].values()))
        lines.append(f"| {preset} | {row['params']:,} | {s['epochs'][preset]} | "
                     f"{trained['train_seconds']:.0f} | {row['bleu_b1']:.2f} | "
                     f"{row[f'bleu_b{beam}']:.2f} | {row[f'chrf_b{beam}']:.2f} |")
    lines += ["", f"| student (`tiny`, {s['epochs'][STUDENT_TEACHER]} epochs) | trained on | "
                  f"train time (s) | BLEU greedy | BLEU beam {beam} | sentences/s greedy |",
              "|---|---|---|---|---|---|"]
    about = {"student-gold": "gold targets", "student-wordkd": "gold + word-level KD",
             "student-seqkd": f"teacher's beam-{beam} outputs (Seq-KD)",
             "student-seqinter": "k-best closest to the reference (Seq-Inter)"}
    table = _read(run_dir / "eval-students" / "metrics.json")
    for name, data in about.items():
        trained = _read(run_dir / name / "metrics.json")
        if table is None or trained is None or name not in table["models"]:
            lines.append(f"| {name} | {data} | not finished | | | |")
            continue
        row = table["models"][name]
        lines.append(f"| {name} | {data} | {trained['train_seconds']:.0f} | "
                     f"{row['bleu_b1']:.2f} | {row[f'bleu_b{beam}']:.2f} | "
                     f"{row['sent_per_s_b1']:.0f} |")
    steps = s["iterations"]
    lines += ["", f"| NAT student (`tiny`, {s['epochs'][STUDENT_TEACHER]} epochs) | trained on | "
                  "train time (s) | " + " | ".join(f"BLEU T={t}" for t in steps)
              + f" | sentences/s T={steps[0]} |", "|---|---|---|" + "---|" * (len(steps) + 1)]
    table = _read(run_dir / "eval-nat" / "metrics.json")
    for name, masking in NAT_STUDENTS.items():
        kind = "vanilla NAT" if masking == "all" else "CMLM"
        data = "teacher's outputs" if name.endswith("-kd") else "gold targets"
        trained = _read(run_dir / name / "metrics.json")
        if table is None or trained is None or name not in table["models"]:
            lines.append(f"| {name} ({kind}) | {data} | not finished |" + " |" * (len(steps) + 1))
            continue
        row = table["models"][name]
        lines.append(f"| {name} ({kind}) | {data} | {trained['train_seconds']:.0f} | "
                     + " | ".join(f"{row[f'bleu_t{t}']:.2f}" for t in steps)
                     + f" | {row[f'sent_per_s_t{steps[0]}']:.0f} |")
    decoded = _read(run_dir / "distilled" / "metrics.json")
    if decoded is not None and "seconds" in decoded:
        lines += ["", f"The `{STUDENT_TEACHER}` teacher decoded {decoded['sources']:,} training "
                      f"sources with beam {beam} in {decoded['seconds']:.0f} s; its outputs score "
                      f"{decoded.get('bleu_vs_real', float('nan')):.2f} BLEU against the real "
                      "targets."]
    return "\n".join(lines) + "\n"


# -- the encoder part: general distillation by three objectives ---------------------------------

GENERAL = {"general": "TinyBERT (embeddings, hidden states, attention)",
           "general-minilm": "MiniLM (attention distributions, value relations)",
           "general-minilmv2": "MiniLMv2 (query/key/value relations)"}
"""General students (the stages of recipes/tinybert-ablations.yaml) and their objectives."""
ENCODER_STUDENTS = {"student-nogd": None, "student-tinybert": "general",
                    "student-minilm": "general-minilm", "student-minilmv2": "general-minilmv2"}
"""Task-distilled students and the general student each starts from (None: a new one)."""
GD_EPOCHS = 2
"""Epochs of general distillation over mono-en on the GPU."""
RT_BUNDLED = "rotten-tomatoes.csv"
"""The bundle's copy of rotten-tomatoes (the preset's rows and order, so the same splits)."""


def _ablation_stages() -> dict[str, dict]:
    from textdistill.config import read_yaml

    stages = read_yaml(ROOT / "recipes" / "tinybert-ablations.yaml")["stages"]
    return {stage["name"]: stage for stage in stages}


def encoder_stages(smoke: bool) -> list[dict]:
    """The ``encoder`` part's stages: the teacher, then each general student followed by its
    task-distilled student (the one without general distillation after the first), then the
    test evaluation of all."""
    from textdistill.paths import data_dir

    if smoke:
        minilm = "minilm"
        task = {"corpus": "rotten-tomatoes", "max_length": 32, "max_train_examples": 64,
                "max_eval_examples": 32}
        text = {"corpus": "mono-en", "max_length": 32, "max_train_examples": 64,
                "max_eval_examples": 8}
        epochs = 1
    else:
        if not (data_dir() / "minilm").is_dir():
            from textdistill.errors import UserError

            raise UserError(f"{data_dir()} holds no minilm/: run `make gpu-bundle` here and "
                            "carry .gpu/encoder")
        minilm = str(data_dir() / "minilm")
        task = {"corpus": str(data_dir() / RT_BUNDLED), "columns": {"label": "category"},
                "labels": ["rotten", "fresh"], "max_length": 64}
        text = {"corpus": "mono-en", "max_length": 128, "batch_size": 128}
        epochs = GD_EPOCHS
    ablations = _ablation_stages()
    phases = ablations["student"]["phases"]

    def task_student(name: str) -> dict:
        start = ENCODER_STUDENTS[name]
        return {"kind": "distill", "name": name, "teacher": "teacher", "data": task,
                "phases": phases,
                "student": {"init_from": start} if start else {"preset": "tinybert-4"}}

    stages = [{**ablations["teacher"], "model": minilm, "data": task}]
    for general, student in zip(GENERAL, list(ENCODER_STUDENTS)[1:], strict=True):
        stages.append({**ablations[general], "teacher": minilm, "data": text, "epochs": epochs,
                       "checkpoint_every": 1000})
        stages.append(task_student(student))
        if general == "general":
            stages.append(task_student("student-nogd"))
    stages.append({"kind": "evaluate", "name": "evaluate", "data": task,
                   "models": ["teacher", *ENCODER_STUDENTS]})
    return stages


def encoder_table(run_dir: Path, smoke: bool) -> str:
    """``results-gpu-encoder.md``: what finished, with the settings it finished under."""
    info = _read(run_dir / "teacher" / "run.json") or {}
    tested = (_read(run_dir / "evaluate" / "metrics.json") or {}).get("models", {})
    lines = ["# General distillation on one GPU: TinyBERT's, MiniLM's and MiniLMv2's objectives",
             "", "Written by `benchmarks/gpu_results.py --part encoder`"
             + (" --smoke (toy scale, CPU)" if smoke else "") + " on "
             f"{(info.get('machine') or {}).get('cuda') or 'CPU'}, precision "
             f"{info.get('precision', '?')}, torch {(info.get('packages') or {}).get('torch')}. "
             "A `tinybert-4` student (14.4M parameters) learns the pretrained all-MiniLM-L6-v2 "
             + ("over 64 mono-en paragraphs" if smoke else "(weights carried in bf16) over all "
                f"of mono-en ({GD_EPOCHS} epochs)")
             + ", then the same task distillation on rotten-tomatoes (intermediate layers, then "
             "the prediction layer; no augmentation) from the fine-tuned MiniLM teacher; test "
             "accuracy on the test split" + (" (smoke: 64 training rows)" if smoke else "")
             + ". Stages missing below did not finish within the time budget.", "",
             "| model | general distillation | GD tokens/s | GD time (s) | GD held-out loss | "
             "dev accuracy | test accuracy | % of teacher |", "|---|---|---|---|---|---|---|---|"]
    about = {"teacher": None, **ENCODER_STUDENTS}
    for name, general in about.items():
        trained = _read(run_dir / name / "metrics.json")
        gd = _read(run_dir / general / "metrics.json") if general else None
        objective = "—" if name == "teacher" else GENERAL.get(general, "none")
        if trained is None:
            lines.append(f"| {name} | {objective} | not finished | | | | | |")
            continue
        gd_cells = (f"{gd['tokens_per_second']:,.0f} | {gd['train_seconds']:.0f} | "
                    f"{gd['heldout']['loss']:.4f}" if gd else "— | — | —")
        test = tested.get(name)
        test_cells = (f"{test['accuracy']:.4f} | {100 * test['retention']:.1f}" if test
                      else "not finished | ")
        lines.append(f"| {name} | {objective} | {gd_cells} | "
                     f"{trained['best_dev'].get('accuracy', float('nan')):.4f} | {test_cells} |")
    return "\n".join(lines) + "\n"


def bundle(out: Path) -> None:
    """Write, here, what the GPU machine lacks besides wheels: ``mt/`` (the l10n corpus),
    ``encoder/`` (all-MiniLM-L6-v2 in bf16, mono-en and rotten-tomatoes as a CSV file)."""
    import csv
    import io
    import shutil

    import torch

    from textdistill.data.corpora import L10N_FILES, MONO_FILE, PRESETS
    from textdistill.errors import UserError
    from textdistill.models.classifier import load_encoder
    from textdistill.models.common import save_pretrained_atomic
    from textdistill.paths import DATA_ENV, atomic_write_text, data_dir

    for relative in [*L10N_FILES.values(), MONO_FILE]:
        if not (data_dir() / relative).is_file():
            raise UserError(f"{relative} is missing from the data directory {data_dir()}: set "
                            f"{DATA_ENV} to the folder that holds it (../shared/data)")
        target = out / ("encoder" if relative == MONO_FILE else "mt") / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir() / relative, target)
    model, tokenizer = load_encoder("minilm")
    save_pretrained_atomic(model.to(torch.bfloat16), tokenizer, out / "encoder" / "minilm")
    text = io.StringIO()
    writer = csv.DictWriter(text, ["text", "category"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(PRESETS["rotten-tomatoes"].read().rows)
    atomic_write_text(out / "encoder" / RT_BUNDLED, text.getvalue())


# -- recipes run at full size: the multi-modality study and the teacher-capacity table ---------

def recipe_on_gpu(recipe: str, smoke: bool) -> list[dict]:
    """A recipe's stages with batches of 8,192 tokens for the GPU; ``smoke``: 64 training
    examples, 16 test sentences, one-layer models of width 32 for one epoch, beam 2."""
    from textdistill.config import read_yaml

    stages = read_yaml(ROOT / "recipes" / f"{recipe}.yaml")["stages"]
    tiny = _settings(smoke=True)
    out = []
    for stage in stages:
        stage = {**stage, "data": {**stage["data"], "batch_tokens": 8192}}
        if smoke:
            stage["data"] |= {"max_length": 32, "batch_tokens": 512, "max_eval_examples": 16}
            if "max_train_examples" in stage["data"]:
                stage["data"]["max_train_examples"] = 64
            if stage["kind"] == "train":
                stage |= {"arch": {**stage.get("arch", {}), **tiny["arch"]}, "epochs": 1,
                          "optim": tiny["optim"]}
                if "vocab_size" in stage:
                    stage["vocab_size"] = tiny["vocab_size"]
            if stage.get("beam"):
                stage["beam"] = 2
            if stage.get("beams"):
                stage["beams"] = [1, 2]
            if stage.get("num_return"):
                stage["num_return"] = 2
        out.append(stage)
    return out


def _about_recipe(recipe: str, part: str, run_dir: Path, first: str, smoke: bool) -> str:
    info = _read(run_dir / first / "run.json") or {}
    return (f"Written by `benchmarks/gpu_results.py --part {part}`"
            + (" --smoke (toy scale, CPU: 64 training examples, one-layer models of width 32, "
               "batches of 512 tokens, beam 2)" if smoke else "") + " on "
            f"{(info.get('machine') or {}).get('cuda') or 'CPU'}, precision "
            f"{info.get('precision', '?')}, torch {(info.get('packages') or {}).get('torch')}: "
            f"`recipes/{recipe}.yaml`" + ("" if smoke else " with batches of 8,192 tokens")
            + ". C(d) and F(d) by the fast_align-compatible aligner, in nats (over source types; "
            "token-weighted). Stages missing below did not finish within the time budget.")


MM_MODELS = {"at": ("AT", "data-all", None), "nat": ("NAT", "data-all", None),
             "nat-one": ("NAT, one random target per source", "data-one", None),
             "nat-kd": ("NAT on the AT model's beam outputs", "data-one", "at-outputs")}
"""The study's models: label, the analyze stage of their training set, its corpus there."""


def multimodality_stages(smoke: bool) -> list[dict]:
    """recipes/multimodality.yaml (8,000 sources, each with its three targets)."""
    return recipe_on_gpu("multimodality", smoke)


def multimodality_table(run_dir: Path, smoke: bool) -> str:
    """``results-gpu-multimodality.md``: each model's training-set complexity and the share of
    its test outputs whose dominant language has p > 0.9."""
    modes = _read(run_dir / "modes" / "metrics.json")
    tested = {c["name"]: c for c in (modes or {}).get("corpora", [])}
    lines = ["# The multi-modality study on one GPU", "",
             _about_recipe("multimodality", "multimodality", run_dir, "at", smoke)
             + " English sources of l10n with their German, French and Spanish targets, no "
             "language tag. Language modes of the test outputs by the analyzer's estimator "
             "(p(l|y) from per-language token frequencies of the training targets); plot: "
             "`language_modes.png` of the `modes` stage"
             + ("." if smoke else " (docs/multimodality-gpu.png)."), "",
             "| model | trained on | C(d) | C(d) token-weighted | test outputs | "
             "dominant p > 0.9 |", "|---|---|---|---|---|---|"]
    for name, (label, stage, corpus) in MM_MODELS.items():
        data = _read(run_dir / stage / "metrics.json")
        row = None
        if data is not None:
            row = data["real"] if corpus is None else next(
                (c for c in data["corpora"] if c["name"] == corpus), None)
        cd = (f"{row['complexity']:.3f} | {row['complexity_token_weighted']:.3f}" if row
              else "not finished | ")
        out = tested.get(f"{name}-test")
        mode = (out or {}).get("language_mode") or {}
        share = mode.get("dominant_share")
        lines.append(f"| {name} | {label} | {cd} | {out['lines'] if out else 'not finished'} | "
                     + (f"{100 * share:.1f} % |" if share is not None else " |"))
    return "\n".join(lines) + "\n"


TEACHERS = {"teacher-2m": ("distilled-2m", "nat-kd-2m", "small-nat-kd-2m"),
            "teacher-6m": ("distilled-6m", "nat-kd-6m", "small-nat-kd-6m"),
            "teacher": ("distilled", "nat-kd", "small-nat-kd")}
"""recipes/nat-teachers.yaml: each teacher, its beam corpus and the NAT students (width 256,
width 128) trained on it."""


def teachers_stages(smoke: bool) -> list[dict]:
    """recipes/nat-teachers.yaml (three AT teachers, their corpora, NAT students of two sizes)."""
    return recipe_on_gpu("nat-teachers", smoke)


def teachers_table(run_dir: Path, smoke: bool) -> str:
    """``results-gpu-teachers.md``: per teacher, its size and BLEU, its corpus's C(d), F(d) and
    BLEU against the real targets, and the test BLEU of the NAT students trained on it."""
    beam = 2 if smoke else 5
    corpora = {c["name"]: c for c in
               (_read(run_dir / "teacher-corpora" / "metrics.json") or {}).get("corpora", [])}
    tested = (_read(run_dir / "evaluate-teachers" / "metrics.json") or {}).get("models", {})
    lines = ["# Teacher capacity on one GPU: which teacher's corpus teaches a NAT student best?",
             "", _about_recipe("nat-teachers", "teachers", run_dir, "teacher", smoke)
             + " l10n en→de, " + ("64" if smoke else "24,000") + " training pairs; test BLEU "
             "(sacreBLEU) on the test split, NAT students decoded in one pass (length beam 3).",
             "",
             f"| teacher | params | BLEU beam {beam} | corpus C(d) | C(d) token-weighted | "
             "F(d) | corpus BLEU vs real | NAT (width 256) BLEU | NAT (width 128) BLEU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, (corpus, student, small) in TEACHERS.items():
        row = tested.get(name)
        cells = [f"{row['params']:,}", f"{row[f'bleu_b{beam}']:.2f}"] if row else [
            "not finished", ""]
        c = corpora.get(corpus)
        cells += ([f"{c['complexity']:.3f}", f"{c['complexity_token_weighted']:.3f}",
                   f"{c['faithfulness']:.2f}", f"{c['bleu']:.2f}"] if c else [""] * 4)
        cells += [f"{tested[m]['bleu_t1']:.2f}" if m in tested else "" for m in (student, small)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PARTS = {"mt": (mt_stages, mt_table, "results-gpu.md", {}),
         "encoder": (encoder_stages, encoder_table, "results-gpu-encoder.md", {}),
         "multimodality": (multimodality_stages, multimodality_table,
                           "results-gpu-multimodality.md",
                           {"modes/language_modes.png": "multimodality-gpu.png"}),
         "teachers": (teachers_stages, teachers_table, "results-gpu-teachers.md", {})}
"""Each part's stages, its table, the file the table goes to, and figures copied to docs/."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=PARTS, default="mt",
                        help="mt: the translation tables; encoder: general distillation; "
                             "multimodality: the multi-modality study; teachers: the "
                             "teacher-capacity table.")
    parser.add_argument("--smoke", action="store_true", help="Toy scale on the CPU.")
    parser.add_argument("--run-dir", type=Path,
                        help="Default: runs/gpu-results (mt), else runs/gpu-PART.")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="Seconds before the stage in flight is stopped.")
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="Write the GPU machine's data into DIR here, and stop.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from textdistill.config import Recipe, validate
    from textdistill.errors import UserError
    from textdistill.paths import atomic_write_bytes, atomic_write_text
    from textdistill.recipe import run_recipe

    if args.bundle is not None:
        try:
            bundle(args.bundle)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.bundle}/mt and {args.bundle}/encoder")
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA GPU here: run on a GPU machine, or add --smoke for the toy run "
              "on the CPU", file=sys.stderr)
        return 2
    stages, table, name, figures = PARTS[args.part]
    run_dir = args.run_dir or ROOT / "runs" / ("gpu-results" if args.part == "mt"
                                               else f"gpu-{args.part}")
    try:
        recipe = validate(Recipe, {"name": f"gpu-{args.part}", "stages": stages(args.smoke)})
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def interrupt() -> None:
        """SIGINT once the budget is spent, again every 2 s until the run has stopped: a
        signal that lands where nothing acts on it must not let the run overrun its call."""
        if not done.wait(args.budget):
            while not done.is_set():
                os.kill(os.getpid(), signal.SIGINT)
                done.wait(2.0)

    started = time.perf_counter()
    threading.Thread(target=interrupt, daemon=True).start()
    stopped = None
    try:
        run_recipe(recipe, run_dir, resume=True)
    except (UserError, KeyboardInterrupt) as exc:  # the budget ran out (or a stage failed)
        stopped = str(exc) or "interrupted"
    finally:
        done.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a last one must not cut the table short
    out = run_dir / name if args.smoke else ROOT / "docs" / name
    atomic_write_text(out, table(run_dir, args.smoke))
    for figure, copy in figures.items():
        if not args.smoke and (run_dir / figure).is_file():
            atomic_write_bytes(ROOT / "docs" / copy, (run_dir / figure).read_bytes())
    print(f"wrote {out} after {time.perf_counter() - started:.0f} s"
          + (f"; stopped early: {stopped}" if stopped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
