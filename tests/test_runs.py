"""One writer per output folder (a file lock, taken over when its holder died) and run.json."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import MICRO, ROOT, cli_command
from test_cli import assert_user_error
from typer.testing import CliRunner

from textdistill.cli import app
from textdistill.errors import UserError
from textdistill.runs import one_writer, run_info, write_run_info

HOLD = """
import sys, time
from textdistill.runs import one_writer
with one_writer(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_stops_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "RANK": "0"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as exc:
            with one_writer(out):
                pass
        message = str(exc.value)
        assert str(out) in message and f"pid {holder.pid}" in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with one_writer(out):  # the dead process's lock is released by the system
        (out / "x").write_text("mine")
    assert (out / "x").read_text() == "mine"


def test_an_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file, not an output folder"):
        with one_writer(tmp_path / "f"):
            pass
    result = CliRunner().invoke(app, ["generate", "-o", str(tmp_path / "f"), "--model", "m",
                                      "--src", "s"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "is a file, not an output folder" in result.stderr


def test_other_ranks_do_not_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with one_writer(tmp_path / "a"), one_writer(tmp_path / "a"):
        pass
    write_run_info(tmp_path / "a")
    assert not (tmp_path / "a" / "run.json").exists()


def test_run_info_records_versions_threads_and_machine(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("RANK", raising=False)
    write_run_info(tmp_path)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info == json.loads(json.dumps(info))
    assert info["packages"]["transformers"] == metadata.version("transformers")
    assert info["packages"]["torch"] == metadata.version("torch")
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["precision"] is None and info["machine"]["cpus"] == os.cpu_count()
    assert set(run_info()) == set(info)


def test_a_recipe_run_folder_has_one_writer(tmp_path):
    from textdistill.config import Recipe, validate
    from textdistill.recipe import run_recipe

    recipe = validate(Recipe, {"name": "r", "stages": [
        {"kind": "evaluate", "name": "e", "models": ["nowhere"]}]})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "RANK": "0"})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"being written by another textdistill process "
                                            f"\\(pid {holder.pid}\\)"):
            run_recipe(recipe, tmp_path / "run")
        # --only runs independent stages side by side: no lock on the run folder then
        with pytest.raises(UserError, match="'nowhere' is not a Hugging Face model folder"):
            run_recipe(recipe, tmp_path / "run", only=["e"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def _file_limit(limit: int):
    """For the child: files may not grow past ``limit`` bytes (writes then fail with EFBIG,
    as on a full disk, through the real writers)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("limit", [1_000_000, 25_000_000], ids=["weights", "optimizer"])
def test_a_failing_save_is_one_line_and_leaves_nothing_that_looks_finished(tmp_path, limit):
    """1 MB: safetensors' writer fails on the checkpoint's weights; 25 MB: the weights (17.5
    MB for micro-2) fit and the optimizer state (twice that) fails."""
    out = tmp_path / "out"
    proc = subprocess.run(cli_command("distill", "-o", out, *MICRO), capture_output=True,
                          text=True, cwd=ROOT, timeout=300, preexec_fn=_file_limit(limit))
    progress, error = proc.stderr.splitlines()  # the epoch's dev line, then the error
    assert progress.startswith("train epoch 1: dev accuracy")
    assert_user_error(proc.returncode, error, f"cannot write {out / 'checkpoint'}: file too "
                      "large", "choose another folder")
    left = sorted(p.name for p in out.iterdir())
    assert left == [".textdistill.lock", "config.yaml", "logs", "run.json"]  # no model, no
    assert not (out / "metrics.json").exists()  # metrics, no partial checkpoint


def test_permission_denied_is_one_line(tmp_path, monkeypatch):
    import textdistill.paths as paths_mod

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(paths_mod.tempfile, "mkstemp", denied)
    result = CliRunner().invoke(app, ["evaluate", "-o", str(tmp_path / "out"), "minilm"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'out'}/")
    assert "permission denied: fix the permissions" in result.stderr
