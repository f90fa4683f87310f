"""The one training loop: phases, AdamW with warmup, clipping, evaluation and best-model
selection, checkpoints and resume, logging. Runs on Accelerate, so ``accelerate launch`` scales
it out unchanged."""

from __future__ import annotations

import io
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_model, save_model
from transformers import get_inverse_sqrt_schedule, get_linear_schedule_with_warmup

from textdistill.config import OptimConfig
from textdistill.data.batching import TrainData
from textdistill.errors import TrainingDiverged, UserError
from textdistill.faults import crash_point
from textdistill.paths import (
    atomic_write_text,
    link_tree,
    new_dir_beside,
    recover_dir,
    replace_dir,
    writing,
)
from textdistill.precision import autocast

console = Console(stderr=True)


class Interrupted(UserError):
    """Training was stopped by SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = 130


@dataclass
class PhaseSpec:
    """One phase of training: the module's ``forward(batch, phase=i)`` defines its loss."""

    name: str
    epochs: float
    optim: OptimConfig
    select: bool = True
    """Whether this phase trains the prediction layer: it is evaluated on dev after each epoch,
    and the evaluations select the best model."""


@dataclass
class TrainState:
    phase: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_eval: dict = field(default_factory=dict)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.raised: str | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def make_adamw(params, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where the device supports it (about 4x faster on CPU)."""
    try:
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay,
                                 fused=True)
    except RuntimeError:
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)


def _scheduler(optimizer, optim: OptimConfig, total: int):
    """Linear warmup then linear decay to 0, or warmup then 1/sqrt(step) decay."""
    warmup = optim.warmup_steps if optim.warmup_steps is not None else int(
        optim.warmup_ratio * total)
    if optim.schedule == "inverse_sqrt":
        return get_inverse_sqrt_schedule(optimizer, num_warmup_steps=max(1, warmup))
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def _rng_state() -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])


class Trainer:
    """Trains ``module`` (whose ``forward(batch, phase=i)`` returns a dict with ``loss``).

    ``evaluate_fn(module)`` returns dev metrics; ``save_fn(module, folder)`` writes the model
    that users keep. Everything lands under ``out_dir``: ``checkpoint/`` (resume state: the
    weights, optimizer, schedule and random state, the best model so far in ``best/``, and
    ``run_config``, the settings that made it), ``logs/`` (TensorBoard events and
    ``metrics.jsonl``) and, once training is finished, ``model/`` (the best model on dev, or
    the last one when no phase selects).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        train_data: TrainData,
        batch_size: int,
        phases: list[PhaseSpec],
        out_dir: str | Path,
        evaluate_fn: Callable[[torch.nn.Module], dict[str, float]],
        save_fn: Callable[[torch.nn.Module, Path], None],
        select_metric: str = "accuracy",
        seed: int = 42,
        log_every: int = 10,
        run_config: dict | None = None,
        precision: str = "fp32",
        checkpoint_every: int | None = None,
    ):
        # cpu=True without CUDA: several launched processes then form one gloo group
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.module = self.accelerator.prepare(module)
        self.train_data = train_data
        self.batch_size = batch_size
        self.phases = phases
        self.out_dir = Path(out_dir)
        self.evaluate_fn = evaluate_fn
        self.save_fn = save_fn
        self.select_metric = select_metric
        self.seed = seed
        self.log_every = log_every
        self.run_config = run_config
        self.precision = precision
        """Resolved precision of forward passes (``precision.resolve_precision``)."""
        self.checkpoint_every = checkpoint_every
        """Checkpoint every this many steps too, not only after each epoch."""
        self._scaler = (torch.amp.GradScaler(self.accelerator.device.type)
                        if precision == "fp16" else None)
        self._best_changed = False
        self.ckpt_dir = self.out_dir / "checkpoint"
        self.model_dir = self.out_dir / "model"
        self.log_dir = self.out_dir / "logs"
        self.is_main = self.accelerator.is_main_process
        self._writer = None
        self._resumed_at: int | None = None
        self.step_seconds: list[float] = []
        """Wall time of each step, from the end of the previous one: fetching and collating the
        batch, forward, backward, update and logging (for benchmarks)."""

    # -- logging -------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # events beyond the checkpoint that a killed run logged are hidden (purge_step)
            self._writer = SummaryWriter(str(self.log_dir), purge_step=self._resumed_at)
        for key, value in record.items():
            if isinstance(value, int | float) and key not in ("step", "epoch", "phase"):
                tag = f"{record.get('kind', 'train')}/{key}"
                self._writer.add_scalar(tag, value, record["step"])

    # -- checkpoints ---------------------------------------------------------------------
    def _save_checkpoint(self, state: TrainState, optimizer, scheduler) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            with writing(self.ckpt_dir):
                self._write_checkpoint(state, optimizer, scheduler)
            self._best_changed = False
        self.accelerator.wait_for_everyone()

    def _write_checkpoint(self, state: TrainState, optimizer, scheduler) -> None:
        """The checkpoint, written beside the current one and swapped in (``replace_dir``)."""
        module = self.accelerator.unwrap_model(self.module)
        tmp = new_dir_beside(self.ckpt_dir)
        try:
            # save_model drops duplicates of tied weights (shared embeddings)
            save_model(module, str(tmp / "module.safetensors"))
            crash_point("checkpoint: weights written")
            # serialized in memory, written by Python: a full disk is then an OSError (ENOSPC),
            # where torch.save's own writer only says that its stream failed
            buffer = io.BytesIO()
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": _rng_state()}, buffer)
            (tmp / "optimizer.pt").write_bytes(buffer.getbuffer())
            if self._best_changed:
                self.save_fn(module, tmp / "best")
            elif (self.ckpt_dir / "best").is_dir():
                link_tree(self.ckpt_dir / "best", tmp / "best")
            crash_point("checkpoint: best written")
            (tmp / "state.json").write_text(json.dumps(
                {**state.__dict__, "config": self.run_config}, indent=2))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, self.ckpt_dir)

    def _load_checkpoint(self) -> tuple[TrainState, dict]:
        try:
            saved = json.loads((self.ckpt_dir / "state.json").read_text(encoding="utf-8"))
            saved.pop("config", None)
            state = TrainState(**saved)
            load_model(self.accelerator.unwrap_model(self.module),
                       str(self.ckpt_dir / "module.safetensors"))
            rest = torch.load(self.ckpt_dir / "optimizer.pt", weights_only=True)
        except Exception as exc:  # damaged or foreign: the user's files, not a bug
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"the checkpoint in {self.ckpt_dir} cannot be read "
                            f"({type(exc).__name__}: {reason}): rerun with --overwrite to "
                            "start anew") from None
        return state, rest

    def _trim_log(self, step: int) -> None:
        """Drop what a killed run logged after its last checkpoint (``step``), so the resumed
        run's log reads like an uninterrupted one's."""
        self._resumed_at = step + 1
        log = self.log_dir / "metrics.jsonl"
        if log.is_file():
            kept = [line for line in log.read_text(encoding="utf-8").splitlines(keepends=True)
                    if line.endswith("\n") and json.loads(line)["step"] <= step]
            atomic_write_text(log, "".join(kept))

    def _publish_model(self) -> None:
        """``model/``: the best model the last checkpoint holds, or the current weights."""
        best = self.ckpt_dir / "best"
        if best.is_dir():
            tmp = new_dir_beside(self.model_dir)
            link_tree(best, tmp)
            replace_dir(tmp, self.model_dir)
        else:
            self.save_fn(self.accelerator.unwrap_model(self.module), self.model_dir)

    # -- the loop ------------------------------------------------------------------------
    def _evaluate(self, state: TrainState, phase: PhaseSpec) -> None:
        if not phase.select:  # its loss trains no prediction layer: dev scores mean nothing
            console.print(f"[bold]{phase.name}[/] epoch {state.epoch + 1}: done (this phase "
                          "trains no prediction layer, so no dev evaluation)")
            return
        self.accelerator.wait_for_everyone()
        if self.is_main:
            module = self.accelerator.unwrap_model(self.module)
            module.eval()
            with torch.no_grad(), autocast(self.precision, self.accelerator.device):
                metrics = self.evaluate_fn(module)
            module.train()
            if self.select_metric not in metrics:
                raise UserError(
                    f"select_metric '{self.select_metric}' is not among the dev metrics "
                    f"{sorted(metrics)}"
                )
            record = {"kind": "eval", "step": state.global_step, "phase": state.phase,
                      "epoch": state.epoch + 1, **metrics}
            self._log(record)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            console.print(f"[bold]{phase.name}[/] epoch {state.epoch + 1}: dev {shown}")
            value = metrics[self.select_metric]
            if state.best_metric is None or value > state.best_metric:
                state.best_metric = value
                state.best_eval = record
                self._best_changed = True  # saved with the next checkpoint
        self.accelerator.wait_for_everyone()

    def train(self, resume: bool = False) -> dict:
        """Run every phase to the end (or on from the checkpoint, when ``resume`` and there is
        one); returns a training summary."""
        if self.is_main:  # finish or undo saves that a killed run interrupted
            recover_dir(self.ckpt_dir)
            recover_dir(self.model_dir)
        self.accelerator.wait_for_everyone()
        torch.manual_seed(self.seed)
        if resume and not (self.ckpt_dir / "state.json").is_file():
            console.print(f"--resume: no checkpoint in {self.ckpt_dir} yet; starting from the "
                          "beginning")
            resume = False
        state, restored = (self._load_checkpoint() if resume else (TrainState(), None))
        if resume and self.is_main:
            self._trim_log(state.global_step)
        if not resume and self.is_main:  # what a run killed before its first checkpoint left
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            shutil.rmtree(self.model_dir, ignore_errors=True)
            (self.log_dir / "metrics.jsonl").unlink(missing_ok=True)
        started = time.perf_counter()
        examples = 0
        with _StopFlag() as stop:
            while state.phase < len(self.phases):
                examples += self._run_phase(state, restored, stop)
                restored = None
                state.phase += 1
                state.epoch = 0
                state.step_in_epoch = 0
        if self.is_main:
            with writing(self.model_dir):
                self._publish_model()
        self.accelerator.wait_for_everyone()
        seconds = time.perf_counter() - started
        summary = {
            "train_seconds": round(seconds, 1),
            "train_examples_per_second": round(examples / max(seconds, 1e-9), 1),
            "steps": state.global_step,
            "precision": self.precision,
            "best_dev": state.best_eval,
        }
        if self._writer is not None:
            self._writer.close()
        return summary

    def _run_phase(self, state: TrainState, restored: dict | None, stop: _StopFlag) -> int:
        phase = self.phases[state.phase]
        loader = self.train_data.loader(self.batch_size, shuffle=True,
                                        seed=self.seed + 7919 * state.phase)
        sampler = loader.batch_sampler
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = make_adamw(params, phase.optim)
        optimizer, loader = self.accelerator.prepare(optimizer, loader)
        per_epoch = len(loader)
        total = max(1, math.ceil(phase.epochs * per_epoch))
        scheduler = _scheduler(optimizer, phase.optim, total)
        if restored is not None:
            optimizer.load_state_dict(restored["optimizer"])
            scheduler.load_state_dict(restored["scheduler"])
            _set_rng_state(restored["rng"])
        done = state.epoch * per_epoch + state.step_in_epoch
        epochs = math.ceil(total / per_epoch)
        self.module.train()
        examples = 0
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(), console=console,
            disable=not (self.is_main and sys.stderr.isatty()),
        )
        with progress:
            task = progress.add_task(phase.name, total=total, completed=done, info="")
            tick = time.perf_counter()
            while state.epoch < epochs and done < total:
                sampler.set_epoch(state.epoch)
                # The prepared loader re-applies its own pass count to the sampler when it is
                # iterated; after a resume that count is not the epoch, so set it too.
                loader.set_epoch(state.epoch)
                batches = (self.accelerator.skip_first_batches(loader, state.step_in_epoch)
                           if state.step_in_epoch else loader)
                step_start = time.perf_counter()
                for batch in batches:
                    with autocast(self.precision, self.accelerator.device):
                        out = self.module(batch, phase=state.phase)
                    loss = out["loss"]
                    # one collective per step: the loss (NaN anywhere stops every process)
                    # and the stop flag (a signal to any process stops all after this step)
                    status = self.accelerator.reduce(
                        torch.stack([loss.detach().float().cpu(),
                                     torch.tensor(float(stop.raised is not None))]).to(loss.device),
                        "sum",
                    )
                    stop_now = bool(status[1] > 0)
                    if not torch.isfinite(status[0]):
                        kept = (f"the last good checkpoint is kept in {self.ckpt_dir}"
                                if self.ckpt_dir.exists() else "no checkpoint was written yet")
                        raise TrainingDiverged(
                            f"the loss became {loss.item()} at step {state.global_step + 1} "
                            f"(phase '{phase.name}', epoch {state.epoch + 1}); {kept}: lower "
                            "the learning rate, then rerun (with --resume to go on from it)"
                        )
                    if self._scaler is None:
                        self.accelerator.backward(loss)
                        if phase.optim.max_grad_norm:
                            self.accelerator.clip_grad_norm_(params, phase.optim.max_grad_norm)
                        optimizer.step()
                    else:  # fp16: scaled gradients, unscaled before clipping
                        self.accelerator.backward(self._scaler.scale(loss))
                        self._scaler.unscale_(optimizer)
                        if phase.optim.max_grad_norm:
                            self.accelerator.clip_grad_norm_(params, phase.optim.max_grad_norm)
                        self._scaler.step(optimizer)
                        self._scaler.update()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    crash_point("step")
                    n = batch["input_ids"].shape[0] * self.accelerator.num_processes
                    examples += n
                    state.step_in_epoch += 1
                    state.global_step += 1
                    done += 1
                    if state.global_step % self.log_every == 0 or done == total:
                        rate = examples / max(time.perf_counter() - tick, 1e-9)
                        record = {"kind": "train", "step": state.global_step,
                                  "phase": state.phase, "epoch": state.epoch + 1,
                                  "lr": scheduler.get_last_lr()[0],
                                  **{k: float(v.detach()) for k, v in out.items()}}
                        self._log(record)
                        progress.update(task, completed=done,
                                        info=f"loss {record['loss']:.4f}  {rate:.0f} ex/s")
                    self.step_seconds.append(time.perf_counter() - step_start)
                    step_start = time.perf_counter()
                    if stop_now:
                        self._save_checkpoint(state, optimizer, scheduler)
                        raise Interrupted(
                            f"stopped by {stop.raised or 'a signal'} at step {state.global_step}; "
                            f"checkpoint saved in {self.ckpt_dir}: rerun the same command with "
                            "--resume"
                        )
                    if done >= total:
                        break
                    if self.checkpoint_every and state.global_step % self.checkpoint_every == 0:
                        self._save_checkpoint(state, optimizer, scheduler)
                self._evaluate(state, phase)
                state.epoch += 1
                state.step_in_epoch = 0
                self._save_checkpoint(state, optimizer, scheduler)
                # a signal during the evaluation or the save stops here (any process: all)
                flags = self.accelerator.reduce(
                    torch.tensor([float(stop.raised is not None)], device=self.accelerator.device),
                    "sum")
                if flags.item() > 0:
                    raise Interrupted(
                        f"stopped by {stop.raised or 'a signal'} after epoch {state.epoch} of "
                        f"phase '{phase.name}'; checkpoint saved in {self.ckpt_dir}: rerun the "
                        "same command with --resume")
        return examples
