"""The ``generate`` command: options, output, and one-line errors with exit status 2."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from textdistill.seq2seq.command import generate_command
from textdistill.seq2seq.presets import build_seq2seq, save_seq2seq
from textdistill.seq2seq.vocab import train_tokenizer

app = typer.Typer()
app.command()(generate_command)
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
    out = tmp_path / "out.jsonl"
    args = ["--model", str(tmp_path / "m"), "--src", str(src), "--out", str(out),
            "--method", "beam", "--beam", "3", "--num-return", "2", "--max-length", "6",
            "--batch-tokens", "64", "--seed", "1", "--src-lang", "en", "--tgt-lang", "de"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "2 lines, 4 hypotheses" in result.stderr
    assert len(out.read_text().splitlines()) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already complete" in again.stderr

    bad = runner.invoke(app, [*args[:-2], "--tgt-lang", "fr", "--overwrite"])
    assert bad.exit_code == 2
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "trained for en->de but the data is en->fr" in bad.stderr
    assert "Traceback" not in bad.output


def test_generate_command_errors(tmp_path):
    result = runner.invoke(app, ["--model", str(tmp_path / "none"), "--src", "x", "--out",
                                 str(tmp_path / "o.txt")])
    assert result.exit_code == 2
    assert result.stderr == f"error: model folder {tmp_path / 'none'} does not exist\n"
    (tmp_path / "m").mkdir()
    result = runner.invoke(app, ["--model", str(tmp_path / "m"), "--src", "x", "--out",
                                 str(tmp_path / "o.txt"), "--method", "top"])
    assert result.exit_code == 2 and "unknown decoding method 'top'" in result.stderr
