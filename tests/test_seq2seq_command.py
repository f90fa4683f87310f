"""The ``generate`` command: options from its config, output, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from textdistill.cli import app
from textdistill.models.seq2seq import build_seq2seq, save_seq2seq
from textdistill.seq2seq.vocab import train_tokenizer

runner = CliRunner()

LINES = ["the cat sits on the mat", "a green house", "open the file", "save it"] * 10


def _teacher(folder):
    tok = train_tokenizer(LINES, 60)
    model = build_seq2seq("tiny", tok, seed=0, d_model=16, heads=2, ffn_dim=32,
                          encoder_layers=1, decoder_layers=1)
    save_seq2seq(model, tok, folder, "en", "de")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_generate_command(tmp_path):
    _teacher(tmp_path / "m")
    src = tmp_path / "src.en"
    src.write_text("the cat\nopen the green file\n")
    out = tmp_path / "out"
    args = ["generate", "-o", str(out), "--model", str(tmp_path / "m"), "--src", str(src),
            "--method", "beam", "--beam", "3", "--num-return", "2", "--max-length", "6",
            "data.batch_tokens=64", "--seed=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 sources" in result.stderr
    records = [json.loads(line) for line in (out / "kbest.jsonl").read_text().splitlines()]
    assert [(r["id"], r["rank"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len((out / "targets.txt").read_text().splitlines()) == 2
    config = (out / "config.yaml").read_text()
    assert "beam: 3" in config and "num_return: 2" in config and "seed: 1" in config
    run = json.loads((out / "run.json").read_text())  # what ran, where
    assert run["packages"]["transformers"] and run["torch_threads"] >= 1
    again = runner.invoke(app, args)  # a second run into the same folder must say which
    assert again.exit_code == 2 and "holds the outputs of an earlier run" in again.stderr
    again = runner.invoke(app, [*args, "--resume"])  # the finished corpus is kept
    assert again.exit_code == 0 and (out / "kbest.jsonl").read_text().count("\n") == 4


def test_generate_checks_the_teachers_languages(tmp_path):
    _teacher(tmp_path / "m")
    bad = runner.invoke(app, ["generate", "-o", str(tmp_path / "o"), "--model",
                              str(tmp_path / "m"), "data.tgt_lang=fr", "split=dev",
                              "data.max_eval_examples=3"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "trained for en->de but the data is en->fr" in bad.stderr
    assert "Traceback" not in bad.output


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "none", "--src", "x"], "model folder none does not exist"),
    (["--model", "m", "--src", "x", "--method", "top"], "'method': Input should be 'beam'"),
    (["--model", "m", "--src", "x", "--sampling-temperature", "0"],
     "'sampling_temperature': Input should be greater than 0"),
    (["--model", "m", "--src", "x", "--temperature", "2"],
     "unknown key 'temperature' (did you mean 'sampling_temperature'?)"),
    (["--model", "m", "--src", "x", "--method", "greedy", "--num-return", "2"],
     "greedy search returns one hypothesis"),
    (["--src", "x"], "'model': Field required"),
    (["--model", "m", "stray"], "unexpected argument 'stray'"),
])
def test_generate_command_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "x").write_text("a line\n")
    result = runner.invoke(app, ["generate", "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing half-written
