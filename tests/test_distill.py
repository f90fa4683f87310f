"""Distillation end to end on rotten-tomatoes (tiny): kd, TinyBERT's two phases, the
labels-only baseline, recipes that skip up-to-date stages, and students copied from the teacher.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import yaml
from conftest import LABELS, MICRO, TINY_DATA, dev_accuracy, distill_config, read_jsonl
from safetensors.torch import load_file
from test_report import ReportParser, expected_models, model_cells

from textdistill import recipe as recipe_mod
from textdistill.config import DistillConfig, Recipe, load_config, validate
from textdistill.distill import run_distill, seed_everything
from textdistill.errors import UserError
from textdistill.models.classifier import build_student, load_classifier
from textdistill.stages import STAGES


def test_kd_student(kd_run, teacher):
    out, cfg, summary = kd_run
    assert summary["steps"] == 4  # 64 rows in batches of 16, one epoch
    assert summary["labels"] == LABELS and summary["train_rows"] == 64
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    # The resolved config is saved beside the run and loads back to the same config.
    assert load_config(DistillConfig, out / "config.yaml") == cfg
    assert yaml.safe_load((out / "config.yaml").read_text())["teacher"] == str(teacher)

    records = read_jsonl(out / "logs" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert train and all(set(r) >= {"loss", "kd"} and math.isfinite(r["kd"]) for r in train)
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1]

    student, _ = load_classifier(str(out / "model"), LABELS)
    assert type(student).__name__ == "BertForSequenceClassification"
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (2, 128, 2)
    assert dev_accuracy(out / "model", cfg) == summary["best_dev"]["accuracy"]

    # The frozen teacher is not part of what is checkpointed.
    ckpt = load_file(out / "checkpoint" / "module.safetensors")
    assert ckpt and all(k.startswith("student.") for k in ckpt)
    # The student trained: its weights left their initial values.
    teacher_model, _ = load_classifier(str(teacher), LABELS)
    seed_everything(cfg.seed)
    init = build_student("micro-2", teacher_model, LABELS).state_dict()
    trained = student.state_dict()
    assert init.keys() == trained.keys()
    assert not torch.equal(init["bert.encoder.layer.1.output.dense.weight"],
                           trained["bert.encoder.layer.1.output.dense.weight"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "average_heads"),
    [("micro-2", True), ("tiny-2", False)],  # 2 heads averaged vs 12 heads one to one
)
def test_tinybert_two_phases(tmp_path, teacher, preset, average_heads):
    cfg = distill_config(
        f"teacher={teacher}", f"student.preset={preset}", *TINY_DATA,
        "phases=[{name: intermediate, epochs: 0.5, optim: {lr: 0.001},"
        " objectives: [{loss: embedding}, {loss: hidden},"
        f" {{loss: attention, average_heads: {str(average_heads).lower()}}}]}},"
        " {name: prediction, epochs: 0.5, optim: {lr: 0.001}, objectives: [{loss: soft_ce}]}]",
    )
    summary = run_distill(cfg, tmp_path)
    assert summary["steps"] == 4  # 2 + 2: half an epoch of 4 batches per phase
    records = read_jsonl(tmp_path / "logs" / "metrics.jsonl")
    first = [r for r in records if r["kind"] == "train" and r["phase"] == 0]
    second = [r for r in records if r["kind"] == "train" and r["phase"] == 1]
    assert first and second
    for r in first:
        assert {"embedding", "hidden", "attention"} <= set(r) and "soft_ce" not in r
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("embedding", "hidden",
                                                                "attention"))
        assert r["loss"] == pytest.approx(r["embedding"] + r["hidden"] + r["attention"],
                                          rel=1e-5)
    assert all("soft_ce" in r and "hidden" not in r for r in second)
    evals = [r for r in records if r["kind"] == "eval"]
    # Only the prediction phase is evaluated on dev and selects the best model.
    assert [r["phase"] for r in evals] == [1]
    assert summary["best_dev"]["phase"] == 1
    assert dev_accuracy(tmp_path / "model", cfg) == summary["best_dev"]["accuracy"]
    # The learned projections are trained and checkpointed, but not saved with the student.
    ckpt = load_file(tmp_path / "checkpoint" / "module.safetensors")
    assert any(k.startswith("matches.embedding_0.projection.") for k in ckpt)
    assert any(k.startswith("matches.hidden_1.projection.") for k in ckpt)
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert not any("proj" in k for k in saved)


@pytest.mark.slow
def test_labels_only_baseline(tmp_path):
    cfg = distill_config(*MICRO, "phases=[{name: labels, epochs: 1, objectives: [{loss: hard}]}]")
    assert cfg.teacher is None
    summary = run_distill(cfg, tmp_path)
    assert summary["steps"] == 4
    train = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if r["kind"] == "train"]
    assert train and all(set(r) - {"kind", "step", "phase", "epoch", "lr"} == {"loss", "hard"}
                         for r in train)
    student, tokenizer = load_classifier(str(tmp_path / "model"), LABELS)
    assert student.config.num_hidden_layers == 2
    assert tokenizer.vocab_size == 30522  # the vocabulary of student.vocab_from (minilm)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["teacher"] is None


def _tiny_recipe(temperature: float = 1.0) -> Recipe:
    kd = {"loss": "kd", "temperature": temperature}
    data = {"max_length": 32, "max_train_examples": 32, "max_eval_examples": 16,
            "batch_size": 16, "eval_batch_size": 16}
    return validate(Recipe, {
        "name": "tiny",
        "stages": [
            {"kind": "distill", "name": "labels", "student": {"preset": "micro-2"},
             "data": data, "phases": [{"epochs": 0.5, "objectives": [{"loss": "hard"}]}]},
            {"kind": "distill", "name": "kd", "teacher": "labels",
             "student": {"preset": "micro-2"}, "data": data,
             "phases": [{"epochs": 0.5, "objectives": [kd]}]},
            {"kind": "evaluate", "name": "compare", "models": ["labels", "kd"],
             "data": {**data, "max_eval_examples": 8}, "split": "dev",
             "latency_examples": 2, "throughput_batches": 1},
        ],
    })


@pytest.mark.slow
def test_recipe_skips_up_to_date_stages_and_reruns_changed_ones(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    recipe = _tiny_recipe()
    calls: list[str] = []
    resumed: list[bool] = []
    for kind in ("distill", "evaluate"):
        def recording_run(stage, out_dir, resume, real=STAGES[kind].run):
            calls.append(stage.name)
            resumed.append(resume)
            return real(stage, out_dir, resume)

        monkeypatch.setitem(STAGES, kind, replace(STAGES[kind], run=recording_run))
    first = recipe_mod.run_recipe(recipe, run_dir)
    assert calls == ["labels", "kd", "compare"]
    assert set(first) == {"labels", "kd", "compare"}
    assert first["labels"]["steps"] == 1
    # The resolved configs are saved: the recipe in the run folder, each stage in its own,
    # with earlier stages' names resolved to their model folders.
    assert load_config(Recipe, run_dir / "config.yaml") == recipe
    kd_cfg = yaml.safe_load((run_dir / "kd" / "config.yaml").read_text())
    assert kd_cfg["teacher"] == str(run_dir / "labels" / "model")
    compare = json.loads((run_dir / "compare" / "metrics.json").read_text())
    assert set(compare["models"]) == {"labels", "kd"}
    assert compare["models"]["labels"]["retention"] == 1.0
    assert json.loads((run_dir / "metrics.json").read_text())["kd"]["steps"] == 1
    # The run's report: its comparison table holds exactly the numbers of metrics.json.
    parsed = ReportParser((run_dir / "report.html").read_text(encoding="utf-8"))
    assert model_cells(parsed.tables["compare"]) == expected_models(compare)
    assert parsed.images and all(src.startswith("data:image/png;base64,")
                                 for src in parsed.images)
    model_file = run_dir / "kd" / "model" / "model.safetensors"
    written = model_file.stat().st_mtime_ns

    # Second run, same recipe: every stage is up to date.
    calls.clear()
    second = recipe_mod.run_recipe(recipe, run_dir)
    assert calls == []
    assert second == json.loads(json.dumps(first))
    assert model_file.stat().st_mtime_ns == written

    # A changed stage reruns, and so does every stage after it; earlier ones are skipped.
    calls.clear()
    third = recipe_mod.run_recipe(_tiny_recipe(temperature=3.0), run_dir)
    assert calls == ["kd", "compare"]
    saved = yaml.safe_load((run_dir / "kd" / "config.yaml").read_text())
    assert saved["phases"][0]["objectives"][0]["temperature"] == 3.0
    assert third["labels"] == second["labels"]

    # A stage whose marker is gone (an interrupted stage) runs again.
    calls.clear()
    (run_dir / "compare" / "stage.json").unlink()
    recipe_mod.run_recipe(_tiny_recipe(temperature=3.0), run_dir)
    assert calls == ["compare"]

    # With --resume, a stage whose settings changed trains anew, not on from its checkpoint.
    calls.clear()
    resumed.clear()
    recipe_mod.run_recipe(_tiny_recipe(temperature=4.0), run_dir, resume=True)
    assert calls == ["kd", "compare"] and resumed[0] is False
    state = json.loads((run_dir / "kd" / "checkpoint" / "state.json").read_text())
    assert state["config"]["phases.0.objectives.0.temperature"] == 4.0
    assert state["global_step"] == 1


def test_recipe_only_runs_named_stages_and_reruns_only_what_depends_on_a_change(
        tmp_path, monkeypatch):
    def recipe(seed: int) -> Recipe:
        student = {"preset": "micro-2"}
        return validate(Recipe, {"name": "deps", "stages": [
            {"kind": "distill", "name": "a", "student": student},
            {"kind": "distill", "name": "b", "teacher": "a", "student": student},
            {"kind": "distill", "name": "c", "student": student, "seed": seed},
            {"kind": "evaluate", "name": "e", "models": ["b", "c"]},
        ]})

    calls: list[str] = []

    def fake_run(stage, out_dir, resume):  # records instead of training
        calls.append(stage.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"stage": stage.name}))
        return {"stage": stage.name}

    for kind in ("distill", "evaluate"):
        monkeypatch.setitem(STAGES, kind, replace(STAGES[kind], run=fake_run,
                                                  show=lambda *a: None))
    with pytest.raises(UserError, match="stage 'b' needs stage 'a', which is not up to date"):
        recipe_mod.run_recipe(recipe(1), tmp_path, only=["b"])
    with pytest.raises(UserError, match="recipe 'deps' has no stage 'x'; its stages are a, b"):
        recipe_mod.run_recipe(recipe(1), tmp_path, only=["x"])
    assert calls == []
    assert set(recipe_mod.run_recipe(recipe(1), tmp_path, only=["a", "c"])) == {"a", "c"}
    recipe_mod.run_recipe(recipe(1), tmp_path, only=["b"])
    metrics = recipe_mod.run_recipe(recipe(1), tmp_path)
    assert calls == ["a", "c", "b", "e"]
    assert metrics["e"] == {"stage": "e"}
    # changing c reruns c and what uses it (e), not b, which comes earlier but does not use c
    calls.clear()
    recipe_mod.run_recipe(recipe(2), tmp_path)
    assert calls == ["c", "e"]


def test_a_stage_made_by_another_recipe_is_not_overwritten(tmp_path, monkeypatch):
    def recipe(name: str, seed: int) -> Recipe:
        return validate(Recipe, {"name": name, "stages": [
            {"kind": "distill", "name": "a", "student": {"preset": "micro-2"}, "seed": seed}]})

    calls: list[str] = []

    def fake_run(stage, out_dir, resume):
        calls.append(stage.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps({"seed": stage.seed}))
        return {"seed": stage.seed}

    monkeypatch.setitem(STAGES, "distill", replace(STAGES["distill"], run=fake_run,
                                                    show=lambda *a: None))
    recipe_mod.run_recipe(recipe("one", 1), tmp_path)
    assert json.loads((tmp_path / "a" / "stage.json").read_text())["recipe"] == "one"
    # another recipe sharing the folder: the same settings are shared, other ones refused
    assert recipe_mod.run_recipe(recipe("two", 1), tmp_path)["a"] == {"seed": 1}
    with pytest.raises(UserError, match=f"stage 'a' in {tmp_path} was made by recipe 'one' "
                                        "with other settings; rename the stage in recipe "
                                        "'two', use another --run-dir, or pass --overwrite"):
        recipe_mod.run_recipe(recipe("two", 2), tmp_path)
    assert calls == ["a"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == {"seed": 1}
    # its own recipe reruns it when its settings change, and --overwrite replaces it
    recipe_mod.run_recipe(recipe("one", 3), tmp_path)
    assert recipe_mod.run_recipe(recipe("two", 2), tmp_path, overwrite=True)["a"] == {"seed": 2}
    assert calls == ["a", "a", "a"]
    assert json.loads((tmp_path / "a" / "stage.json").read_text())["recipe"] == "two"


def _two_students(second_teacher: str | None = None) -> Recipe:
    data = {"max_length": 32, "max_train_examples": 32, "max_eval_examples": 16,
            "batch_size": 16, "eval_batch_size": 16}
    hard = [{"epochs": 0.5, "objectives": [{"loss": "hard"}]}]
    second = ({"teacher": second_teacher, "phases": [{"epochs": 0.5, "objectives": [
        {"loss": "kd"}]}]} if second_teacher else {"phases": hard, "seed": 7})
    return validate(Recipe, {"name": "pair", "stages": [
        {"kind": "distill", "name": "a", "student": {"preset": "micro-2"}, "data": data,
         "phases": hard},
        {"kind": "distill", "name": "b", "student": {"preset": "micro-2"}, "data": data,
         **second},
        {"kind": "evaluate", "name": "e", "models": ["a", "b"], "split": "dev",
         "data": {**data, "max_eval_examples": 8}, "latency_examples": 2,
         "throughput_batches": 1},
    ]})


@pytest.mark.slow
def test_recipe_jobs_run_independent_stages_side_by_side(tmp_path):
    import torch

    run_dir = tmp_path / "run"
    metrics = recipe_mod.run_recipe(_two_students(), run_dir, jobs=2)
    assert set(metrics) == {"a", "b", "e"}
    assert set(metrics["e"]["models"]) == {"a", "b"}
    info = {name: json.loads((run_dir / name / "run.json").read_text()) for name in metrics}
    cores = torch.get_num_threads()
    # a and b started together and split the threads; e ran alone, on all of them
    assert info["a"]["torch_threads"] == info["b"]["torch_threads"] == max(1, cores // 2)
    assert info["e"]["torch_threads"] == cores
    assert all((run_dir / name / "stage.json").is_file() for name in metrics)
    assert json.loads((run_dir / "metrics.json").read_text())["b"]["steps"] == 1
    assert recipe_mod.run_recipe(_two_students(), run_dir, jobs=2) == json.loads(
        json.dumps(metrics))  # up to date: nothing reruns


@pytest.mark.slow
def test_recipe_jobs_a_failing_stage_stops_the_run_with_its_error(tmp_path):
    with pytest.raises(UserError, match="not a Hugging Face model folder"):
        recipe_mod.run_recipe(_two_students(str(tmp_path / "nowhere")), tmp_path / "run",
                              jobs=2)
    assert not (tmp_path / "run" / "b" / "stage.json").exists()
    assert not (tmp_path / "run" / "e").exists()
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        recipe_mod.run_recipe(_two_students(), tmp_path / "run", jobs=0)


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().split(") ")[-1][0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_recipe_jobs_stage_processes_end_with_the_parent(tmp_path, how):
    import os
    import signal
    import subprocess
    import time

    from conftest import cli_command

    recipe = _two_students().model_dump()
    for stage in recipe["stages"][:2]:
        stage["data"]["max_train_examples"] = 2000
        stage["phases"][0]["epochs"] = 50
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    proc = subprocess.Popen(cli_command("run", tmp_path / "r.yaml", "--run-dir", run, "--jobs",
                                        "2"), stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    logs = [run / name / "logs" / "metrics.jsonl" for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all(p.is_file() and p.stat().st_size for p in logs):  # both are training
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    workers = [int((run / name / ".textdistill.lock.pid").read_text()) for name in ("a", "b")]
    os.kill(proc.pid, getattr(signal, how))
    code = proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, f"stage processes outlived the run ({how})"
        time.sleep(0.5)
    if how == "SIGTERM":  # one line, and the stages stopped at a checkpoint
        err = proc.stderr.read()
        assert code == 130 and "error: stopped by SIGTERM" in err and "Traceback" not in err
        assert (run / "a" / "checkpoint" / "state.json").is_file()


def test_recipe_evaluating_an_unknown_model(tmp_path):
    recipe = validate(Recipe, {"name": "x", "stages": [
        {"kind": "evaluate", "name": "e", "models": ["nowhere"]}]})
    with pytest.raises(UserError, match="'nowhere' is not a Hugging Face model folder"):
        recipe_mod.run_recipe(recipe, tmp_path)


# -- students initialised from the teacher ---------------------------------------------------

@pytest.fixture(scope="module")
def teacher_model(teacher):
    model, _ = load_classifier(str(teacher), LABELS)
    return model


def test_init_from_teacher_copies_layers(teacher_model):
    student = build_student("minilm-3", teacher_model, LABELS, init_from_teacher=[2, 4, 6])
    s, t = student.bert, teacher_model.bert
    assert student.config.num_hidden_layers == 3
    for s_index, t_index in enumerate([2, 4, 6]):
        s_layer = s.encoder.layer[s_index].state_dict()
        t_layer = t.encoder.layer[t_index - 1].state_dict()
        assert s_layer.keys() == t_layer.keys()
        for key in s_layer:
            assert torch.equal(s_layer[key], t_layer[key]), (s_index, key)
    # Copies, not shared tensors, and not some other layer.
    assert not torch.equal(s.encoder.layer[0].attention.self.query.weight,
                           t.encoder.layer[0].attention.self.query.weight)
    assert s.encoder.layer[0].attention.self.query.weight.data_ptr() != \
        t.encoder.layer[1].attention.self.query.weight.data_ptr()
    for key, value in t.embeddings.state_dict().items():
        assert torch.equal(s.embeddings.state_dict()[key], value), key
    assert torch.equal(s.pooler.dense.weight, t.pooler.dense.weight)


def test_without_init_from_teacher_layers_are_fresh(teacher_model):
    student = build_student("minilm-3", teacher_model, LABELS)
    assert not torch.equal(student.bert.encoder.layer[0].output.dense.weight,
                           teacher_model.bert.encoder.layer[0].output.dense.weight)
    assert not torch.equal(student.bert.embeddings.word_embeddings.weight,
                           teacher_model.bert.embeddings.word_embeddings.weight)


@pytest.mark.parametrize(
    ("preset", "layers", "message"),
    [
        ("minilm-3", [1, 2], "lists 2 layers but the student has 3"),
        ("minilm-3", [1, 2, 7], "names layer 7, but the teacher has layers 1..6"),
        ("micro-2", [1, 2], "hidden_size is 128 in the student and 384 in the teacher"),
    ],
)
def test_init_from_teacher_errors(teacher_model, preset, layers, message):
    with pytest.raises(UserError, match=message):
        build_student(preset, teacher_model, LABELS, init_from_teacher=layers)


@pytest.mark.slow
def test_init_from_teacher_through_run_distill(tmp_path, teacher, teacher_model):
    # With a learning rate of ~0 the saved student is the copied one.
    cfg = distill_config(
        f"teacher={teacher}", "student.preset=minilm-3", "student.init_from_teacher=[1, 3, 5]",
        *TINY_DATA, "data.max_train_examples=16",
        "phases=[{epochs: 1, optim: {lr: 1.0e-30, max_grad_norm: null},"
        " objectives: [{loss: kd}]}]",
    )
    summary = run_distill(cfg, tmp_path)
    assert summary["steps"] == 1
    saved = load_file(tmp_path / "model" / "model.safetensors")
    teacher_weights = teacher_model.state_dict()
    for s_index, t_index in enumerate([1, 3, 5]):
        for name in ("attention.self.key.weight", "output.dense.weight"):
            s_key = f"bert.encoder.layer.{s_index}.{name}"
            t_key = f"bert.encoder.layer.{t_index - 1}.{name}"
            assert torch.allclose(saved[s_key], teacher_weights[t_key], atol=1e-6), s_key
    # Its predictions start from the teacher's features: accuracy is recomputable from disk.
    assert dev_accuracy(tmp_path / "model", cfg) == summary["best_dev"]["accuracy"]
