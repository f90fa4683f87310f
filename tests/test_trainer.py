"""The training loop: logs, best-model selection, divergence, interruption and resume.

Most tests drive ``Trainer`` with a toy module (a linear layer with dropout) so they take
well under a second; one test interrupts a real distillation run in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import cli_command, distill_config, read_jsonl
from safetensors.torch import load_file
from torch import nn

from textdistill.config import OptimConfig
from textdistill.data.batching import TokenizedDataset
from textdistill.data.corpora import Example
from textdistill.errors import TrainingDiverged, UserError
from textdistill.trainer import Interrupted, PhaseSpec, Trainer


class WordTokenizer:
    """Token id = word length; enough for TokenizedDataset without a real vocabulary."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=32):
        return {"input_ids": [[len(w) for w in t.split()][:max_length] for t in texts]}


def toy_data(n: int = 16) -> TokenizedDataset:
    rows = [Example(" ".join("x" * (1 + (i * j) % 5) for j in range(1 + i % 6)), i % 2)
            for i in range(n)]
    return TokenizedDataset(rows, WordTokenizer(), max_length=32)


class Toy(nn.Module):
    """Loss from a linear layer behind dropout; hooks fire on chosen calls of ``forward``."""

    def __init__(self, on_call: dict | None = None):
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.dropout = nn.Dropout(0.5)
        self.calls = 0
        self.on_call = on_call or {}

    def forward(self, batch, phase: int = 0):
        self.calls += 1
        mask = batch["attention_mask"].float()
        ids = batch["input_ids"].float()
        x = torch.stack([mask.sum(1), ids.sum(1) / 10, torch.full_like(mask[:, 0], phase)], 1)
        loss = F.cross_entropy(self.linear(self.dropout(x)), batch["labels"])
        hook = self.on_call.get(self.calls)
        if hook == "nan":
            loss = loss * float("nan")
        elif hook is not None:
            os.kill(os.getpid(), hook)
        return {"loss": loss, "hard": loss.detach()}


def scripted_eval(values):
    """evaluate_fn returning the given accuracies in turn (and counting calls)."""
    calls = []

    def evaluate_fn(module):
        calls.append(module.training)
        return {"accuracy": values[len(calls) - 1], "macro_f1": 0.0}

    evaluate_fn.calls = calls
    return evaluate_fn


def save_weights(module, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in module.state_dict().items()}, folder / "weights.pt")


def make_trainer(tmp_path, module, evaluate_fn, epochs=(2,), select=None, **kwargs) -> Trainer:
    select = select or [True] * len(epochs)
    specs = [PhaseSpec(f"p{i}", e, OptimConfig(lr=0.05, warmup_ratio=0), select=s)
             for i, (e, s) in enumerate(zip(epochs, select, strict=True))]
    kwargs.setdefault("log_every", 1)
    return Trainer(module, toy_data(), 4, specs, tmp_path, evaluate_fn, save_weights, seed=0,
                   **kwargs)


def test_logs_metrics_and_tensorboard_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(tmp_path, Toy(), scripted_eval([0.5, 0.6]), epochs=(2,))
    summary = trainer.train()
    assert summary["steps"] == 8  # 16 rows in batches of 4, two epochs
    records = read_jsonl(tmp_path / "logs" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert [r["epoch"] for r in train] == [1] * 4 + [2] * 4
    assert all({"loss", "hard", "lr"} <= set(r) for r in train)
    assert [(r["step"], r["epoch"], r["accuracy"]) for r in evals] == [(4, 1, 0.5), (8, 2, 0.6)]
    events = list((tmp_path / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(tmp_path / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/accuracy"} <= set(tags)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    assert [e.value for e in acc.Scalars("eval/accuracy")] == pytest.approx([0.5, 0.6])


def test_log_every(tmp_path):
    trainer = make_trainer(tmp_path, Toy(), scripted_eval([0.5, 0.6]), epochs=(2,), log_every=3)
    trainer.train()
    train = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [3, 6, 8]  # and always the last step of a phase


def test_best_model_is_selected_on_dev(tmp_path):
    module = Toy()
    evaluate_fn = scripted_eval([0.5, 0.9, 0.7])
    trainer = make_trainer(tmp_path, module, evaluate_fn, epochs=(3,))
    saved = {}
    real_save = trainer.save_fn

    def save_fn(m, folder):
        saved[len(evaluate_fn.calls)] = {k: v.clone() for k, v in m.state_dict().items()}
        real_save(m, folder)

    trainer.save_fn = save_fn
    summary = trainer.train()
    assert evaluate_fn.calls == [False, False, False]  # evaluated in eval mode
    assert sorted(saved) == [1, 2]  # saved on improvement only
    best = torch.load(tmp_path / "model" / "weights.pt")
    assert torch.equal(best["linear.weight"], saved[2]["linear.weight"])
    assert not torch.equal(best["linear.weight"], module.linear.weight.detach())
    assert summary["best_dev"]["accuracy"] == 0.9
    assert summary["best_dev"]["epoch"] == 2 and summary["best_dev"]["step"] == 8
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["best_metric"] == 0.9 and state["global_step"] == 12


def test_phase_that_does_not_select(tmp_path):
    evaluate = scripted_eval([0.5, 0.99])
    trainer = make_trainer(tmp_path, Toy(), evaluate, epochs=(1, 1, 1),
                           select=[False, True, False])
    summary = trainer.train()
    assert summary["steps"] == 12
    # only the selecting phase was evaluated (once: 0.5), and its evaluation is the best
    assert summary["best_dev"]["accuracy"] == 0.5
    assert summary["best_dev"]["phase"] == 1
    evals = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["phase"] for r in evals] == [1]
    assert len(evaluate.calls) == 1


def test_fractional_epochs(tmp_path):
    trainer = make_trainer(tmp_path, Toy(), scripted_eval([0.5, 0.6]), epochs=(1.5,))
    summary = trainer.train()
    assert summary["steps"] == 6
    evals = [r for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl") if r["kind"] == "eval"]
    assert [(r["step"], r["epoch"]) for r in evals] == [(4, 1), (6, 2)]


def test_select_metric_must_be_a_dev_metric(tmp_path):
    trainer = make_trainer(tmp_path, Toy(), scripted_eval([0.5]), epochs=(1,),
                           select_metric="bleu")
    with pytest.raises(UserError, match="select_metric 'bleu' is not among the dev metrics"):
        trainer.train()


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(5)
    diverging = Toy({6: "nan"})
    init = {k: v.clone() for k, v in diverging.state_dict().items()}
    trainer = make_trainer(tmp_path, diverging, scripted_eval([0.5, 0.6]), epochs=(2,))
    with pytest.raises(TrainingDiverged) as exc:
        trainer.train()
    msg = str(exc.value)
    assert "the loss became nan at step 6 (phase 'p0', epoch 2)" in msg
    assert f"the last good checkpoint is kept in {tmp_path / 'checkpoint'}" in msg
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 4 and state["epoch"] == 1 and state["step_in_epoch"] == 0
    weights = load_file(tmp_path / "checkpoint" / "module.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    # epoch 1's best model survives in the checkpoint; model/ appears only when a run ends
    assert (tmp_path / "checkpoint" / "best" / "weights.pt").is_file()
    assert not (tmp_path / "model").exists()
    steps = [r["step"] for r in read_jsonl(tmp_path / "logs" / "metrics.jsonl")]
    assert max(steps) == 5

    # The checkpoint resumes: without the NaN, the run goes on from step 4 and ends where a
    # run that never diverged ends.
    module = Toy()
    resumed = make_trainer(tmp_path, module, scripted_eval([0.6]), epochs=(2,))
    summary = resumed.train(resume=True)
    assert summary["steps"] == 8 and module.calls == 4
    reference = Toy()
    reference.load_state_dict(init)
    make_trainer(tmp_path / "full", reference, scripted_eval([0.5, 0.6]), epochs=(2,)).train()
    assert torch.equal(module.linear.weight, reference.linear.weight)


def test_nan_loss_before_any_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, Toy({1: "nan"}), scripted_eval([0.5]), epochs=(1,))
    with pytest.raises(TrainingDiverged, match="at step 1 .*no checkpoint was written yet"):
        trainer.train()
    assert not (tmp_path / "checkpoint").exists()


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path):
    """A run killed before its first checkpoint: --resume starts it again, and what the killed
    run left (logs, a best model saved before the checkpoint) is not mixed into the new one."""
    torch.manual_seed(3)
    reference = Toy()
    init = {k: v.clone() for k, v in reference.state_dict().items()}
    make_trainer(tmp_path / "full", reference, scripted_eval([0.5]), epochs=(1,)).train()
    (tmp_path / "cut" / "logs").mkdir(parents=True)
    (tmp_path / "cut" / "logs" / "metrics.jsonl").write_text('{"kind": "train", "step": 99}\n')
    (tmp_path / "cut" / ".checkpoint.tmpab").mkdir()
    module = Toy()
    module.load_state_dict(init)
    summary = make_trainer(tmp_path / "cut", module, scripted_eval([0.5]),
                           epochs=(1,)).train(resume=True)
    assert summary["steps"] == 4 and module.calls == 4
    assert torch.equal(module.linear.weight, reference.linear.weight)
    steps = [r["step"] for r in read_jsonl(tmp_path / "cut" / "logs" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 4]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint", "logs",
                                                                    "model"]


def test_model_folder_appears_only_when_training_ends(tmp_path):
    seen = []
    trainer = make_trainer(tmp_path, Toy(), scripted_eval([0.5, 0.9]), epochs=(2,))
    real_eval = trainer.evaluate_fn

    def evaluate_fn(module):
        seen.append((tmp_path / "model").exists())
        return real_eval(module)

    trainer.evaluate_fn = evaluate_fn
    trainer.train()
    assert seen == [False, False]
    assert (tmp_path / "model" / "weights.pt").is_file()


@pytest.mark.parametrize("damage", ["empty state", "truncated weights", "truncated optimizer",
                                    "other shape"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, damage):
    make_trainer(tmp_path, Toy(), scripted_eval([0.5]), epochs=(1,)).train()
    ckpt = tmp_path / "checkpoint"
    module = Toy()
    if damage == "empty state":
        (ckpt / "state.json").write_text("")
    elif damage == "truncated weights":
        data = (ckpt / "module.safetensors").read_bytes()
        (ckpt / "module.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "truncated optimizer":
        data = (ckpt / "optimizer.pt").read_bytes()
        (ckpt / "optimizer.pt").write_bytes(data[: len(data) // 2])
    else:
        module.linear = nn.Linear(3, 4)
    with pytest.raises(UserError) as exc:
        make_trainer(tmp_path, module, scripted_eval([0.5]), epochs=(1,)).train(resume=True)
    message = str(exc.value)
    assert message.startswith(f"the checkpoint in {ckpt} cannot be read (")
    assert message.endswith("rerun with --overwrite to start anew") and "\n" not in message


@pytest.mark.parametrize("stop_at", [3, 4, 6, 10])
def test_interrupt_and_resume_match_an_uninterrupted_run(tmp_path, stop_at):
    """Stopping mid-epoch (3, 6), before an evaluation (4) or in the second phase (10), then
    resuming, changes nothing."""
    torch.manual_seed(123)
    reference = Toy()
    init = {k: v.clone() for k, v in reference.state_dict().items()}
    full = make_trainer(tmp_path / "full", reference, scripted_eval([0.1, 0.2, 0.3]),
                        epochs=(2, 1)).train()

    module = Toy({stop_at: signal.SIGINT})
    module.load_state_dict(init)
    trainer = make_trainer(tmp_path / "cut", module, scripted_eval([0.1, 0.2, 0.3]),
                           epochs=(2, 1))
    with pytest.raises(Interrupted, match=f"stopped by SIGINT at step {stop_at}") as exc:
        trainer.train()
    assert exc.value.exit_code == 130
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == stop_at
    assert state["step_in_epoch"] == (stop_at - 1) % 4 + 1

    evals_done = len(trainer.evaluate_fn.calls)
    resumed_module = Toy()
    resumed = make_trainer(tmp_path / "cut", resumed_module,
                           scripted_eval([0.1, 0.2, 0.3][evals_done:]), epochs=(2, 1))
    summary = resumed.train(resume=True)
    assert summary["steps"] == full["steps"] == 12
    assert resumed_module.calls == 12 - stop_at
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed_module.state_dict()[key], value), key
    assert summary["best_dev"] == full["best_dev"]


# -- a real distillation, interrupted in a subprocess ----------------------------------------

def _wait_for_step(log: Path, proc: subprocess.Popen, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        if log.is_file() and any(r.get("step", 0) >= step for r in read_jsonl(log)):
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no training step {step} logged within {timeout}s")


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, teacher):
    from textdistill.distill import run_distill

    args = [f"teacher={teacher}", "student.preset=micro-2", "data.max_length=32",
            "data.max_train_examples=160", "data.max_eval_examples=32", "data.batch_size=4",
            "phases=[{name: kd, epochs: 1, optim: {lr: 0.001},"
            " objectives: [{loss: kd, temperature: 2}]}]"]
    cut = tmp_path / "cut"
    cut.mkdir()
    with open(cut.parent / "cut.err", "w") as err:
        proc = subprocess.Popen(cli_command("distill", "-o", cut, *args), stderr=err,
                                stdout=subprocess.DEVNULL)
        _wait_for_step(cut / "logs" / "metrics.jsonl", proc, 10)  # logged every 10 steps
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
    stderr = (cut.parent / "cut.err").read_text()
    assert rc == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: stopped by SIGTERM at step ")
    assert "--resume" in last
    state = json.loads((cut / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 0 and 10 <= state["step_in_epoch"] < 40  # mid-epoch
    assert not (cut / "model").exists()  # no dev evaluation happened yet

    resumed = subprocess.run(cli_command("distill", "-o", cut, "--resume", *args),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    full = tmp_path / "full"
    summary = run_distill(distill_config(*args), full)
    assert summary["steps"] == 40
    cut_metrics = json.loads((cut / "metrics.json").read_text())
    assert cut_metrics["steps"] == 40
    assert cut_metrics["best_dev"] == summary["best_dev"]
    a = load_file(full / "model" / "model.safetensors")
    b = load_file(cut / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key
    # The resumed process logged the steps after the interruption, once each.
    steps = [r["step"] for r in read_jsonl(cut / "logs" / "metrics.jsonl")
             if r["kind"] == "train"]
    assert steps == [10, 20, 30, 40]


def test_a_signal_during_the_last_evaluation_still_stops_after_the_checkpoint(tmp_path):
    """A stop asked for after the last step of an epoch (during its evaluation) is not lost:
    the epoch's checkpoint is saved, then the run stops; --resume finishes it."""
    def evaluate_fn(module, calls=[]):  # noqa: B006 - counts calls
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"accuracy": 0.5}

    with pytest.raises(Interrupted, match="stopped by SIGTERM after epoch 1 of phase 'p0'"):
        make_trainer(tmp_path, Toy(), evaluate_fn, epochs=(2,)).train()
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and state["global_step"] == 4
    summary = make_trainer(tmp_path, Toy(), scripted_eval([0.5]), epochs=(2,)).train(resume=True)
    assert summary["steps"] == 8
