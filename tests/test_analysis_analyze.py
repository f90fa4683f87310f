"""``analyze`` and the ``analyze`` command on tiny synthetic files; bad input."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from textdistill.analysis.analyze import analyze
from textdistill.analysis.data import read_lines
from textdistill.analysis.tokenize import make_tokenizer, word_tokenize
from textdistill.cli import app
from textdistill.config import AlignerConfig, AnalyzeConfig, validate
from textdistill.errors import UserError


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Source, a real target with 3 translations per word, a 1-translation "distilled"
    target (with two lines that tokenize to nothing) and a reversed-order target."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    src, real, dist, rev = [], [], [], []
    for k in range(400):
        words = rng.integers(0, 15, size=int(rng.integers(3, 8)))
        src.append(" ".join(f"Src{w}" for w in words) + " .")
        real.append(" ".join(f"tgt{w}v{rng.integers(0, 3)}" for w in words) + " .")
        dist.append("   " if k in (5, 17) else " ".join(f"tgt{w}v0" for w in words) + " .")
        rev.append(" ".join(f"tgt{w}v0" for w in reversed(words)) + " .")
    return {
        "src": write(d / "train.src", src),
        "real": write(d / "train.real", real),
        "dist": write(d / "train.dist", dist),
        "rev": write(d / "train.rev", rev),
        "dir": d,
    }


@pytest.fixture(scope="module")
def result(files):
    return analyze(files["src"], [files["dist"], files["rev"]], real=files["real"],
                   aligner=AlignerConfig(iterations=4))


def test_result_structure_and_measures(result):
    real = result["real"]
    dist, rev = result["corpora"]
    assert result["source"]["lines"] == 400 and result["tokenize"] == "words"
    assert real["name"] == "real" and dist["name"] == "train.dist"
    assert abs(real["complexity"] - np.log(3)) < 0.1
    assert dist["complexity"] < 0.05
    assert real["faithfulness"] == 0.0 and dist["faithfulness"] > 1.0
    assert dist["reordering"] > 0.99 > 0.2 > rev["reordering"]
    assert rev["tension_forward"] < 4.0  # the diagonal prior is relaxed for reversed data
    assert 0 < dist["bleu"] < 100 and 0 < dist["chrf"] < 100
    assert dist["source_types"] == 16  # 15 words and "."
    json.dumps(result)  # JSON-serialisable


def test_lines_that_tokenize_to_nothing_are_counted_and_skipped(result):
    dist = result["corpora"][0]
    assert dist["skipped_lines"] == 2 and dist["skipped_line_numbers"] == [6, 18]
    assert dist["aligned_pairs"] == 398 and result["corpora"][1]["skipped_lines"] == 0


def test_alignment_files_keep_line_numbers(files, tmp_path):
    out = tmp_path / "al"
    analyze(files["src"], files["dist"], aligner=AlignerConfig(iterations=1),
            alignments_dir=out)
    for suffix in ("fwd.align", "rev.align", "sym.align"):
        lines = (out / f"train.dist.{suffix}").read_text().split("\n")[:-1]
        assert len(lines) == 400 and lines[5] == "" and lines[17] == ""
        assert lines[0]
    lex = (out / "train.dist.lex.tsv").read_text().splitlines()
    assert all(len(line.split("\t")) == 3 for line in lex)
    assert (out / "train.dist.lex-rev.tsv").exists()


def test_word_tokenization():
    assert word_tokenize("Don't stop, O'Neil!  3.5 GHz") == [
        "don",
        "'",
        "t",
        "stop",
        ",",
        "o",
        "'",
        "neil",
        "!",
        "3",
        ".",
        "5",
        "ghz",
    ]
    assert word_tokenize("Größe: ÜBER") == ["größe", ":", "über"]
    assert word_tokenize("  \t ") == []


def test_subword_tokenization(files, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"])
    lines = read_lines(files["src"]) + read_lines(files["real"])
    tok.train_from_iterator(lines, trainer)
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    split = make_tokenizer("subwords", folder)
    assert len(split("Src12 Src3 .")) > 3  # 60 pieces cannot hold every word
    res = analyze(
        files["src"],
        files["dist"],
        files["real"],
        tokenize="subwords",
        tokenizer=folder,
        aligner=AlignerConfig(iterations=2),
    )
    assert res["tokenize"] == "subwords" and res["corpora"][0]["complexity"] is not None


# --- bad input --------------------------------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_line_count_mismatch_names_both_files_and_counts(files, tmp_path):
    short = write(tmp_path / "short.tgt", ["a b"] * 7)
    with pytest.raises(UserError) as err:
        analyze(files["src"], short)
    msg = one_line(err)
    assert str(files["src"]) in msg and "400 lines" in msg
    assert str(short) in msg and "has 7" in msg


def test_real_corpus_with_other_line_count(files, tmp_path):
    short = write(tmp_path / "short.real", ["a b"] * 9)
    with pytest.raises(UserError) as err:
        analyze(files["src"], files["dist"], real=short)
    msg = one_line(err)
    assert "real corpus" in msg and "has 9" in msg and "--real" in msg


@pytest.mark.parametrize("which", ["src", "tgt", "real"])
def test_empty_corpora(files, tmp_path, which):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = {"src": files["src"], "tgt": files["dist"], "real": files["real"]}
    args[which] = empty
    with pytest.raises(UserError) as err:
        analyze(args["src"], args["tgt"], real=args["real"])
    assert "is empty" in one_line(err) and str(empty) in str(err.value)


def test_nothing_to_align(tmp_path):
    src = write(tmp_path / "s", ["a b", "c"])
    tgt = write(tmp_path / "t", ["  ", "\t"])
    with pytest.raises(UserError) as err:
        analyze(src, tgt)
    assert "nothing to align" in one_line(err)


def test_missing_file_and_bad_options(files, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        analyze(tmp_path / "nope", files["dist"])
    with pytest.raises(UserError, match="unknown tokenization"):
        analyze(files["src"], files["dist"], tokenize="chars")
    with pytest.raises(UserError, match="needs --tokenizer"):
        analyze(files["src"], files["dist"], tokenize="subwords")
    with pytest.raises(UserError, match="tokenizer .* does not exist"):
        analyze(files["src"], files["dist"], tokenize="subwords", tokenizer=tmp_path / "x")
    with pytest.raises(UserError, match="'symmetrization': Input should be 'intersection'"):
        validate(AlignerConfig, {"symmetrization": "union-ish"})
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        analyze(bad, files["dist"])


# --- the command ------------------------------------------------------------------------


def test_command_writes_metrics_and_plot(files, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [
        "analyze", "-o", str(out), "--src", str(files["src"]), str(files["dist"]),
        "--tgt", str(files["rev"]), "--real", str(files["real"]), "--iterations", "2",
        f"lang_refs={{a: {files['real']}, b: {files['rev']}}}",
    ])
    assert res.exit_code == 0, res.output
    assert "train.dist" in res.stdout and "C(d)" in res.stdout
    data = json.loads((out / "metrics.json").read_text())
    assert [c["name"] for c in data["corpora"]] == ["train.dist", "train.rev"]
    assert data["settings"]["iterations"] == 2
    assert data["corpora"][0]["language_mode"]["languages"] == ["a", "b"]
    assert (out / "complexity_faithfulness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*png"))
    assert not (out / "language_modes.png").exists()  # two languages: no simplex
    # three language references: each corpus's sentences on the simplex, and their shares
    res = CliRunner().invoke(app, [
        "analyze", "-o", str(tmp_path / "three"), "--src", str(files["src"]),
        str(files["dist"]), "--iterations", "1",
        f"lang_refs={{a: {files['real']}, b: {files['rev']}, c: {files['dist']}}}",
    ])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "three" / "language_modes.png").read_bytes()[:4] == b"\x89PNG"
    mode = json.loads((tmp_path / "three" / "metrics.json").read_text())["corpora"][0][
        "language_mode"]
    assert 0.0 <= mode["dominant_share"] <= 1.0
    assert "language_points" not in json.loads((tmp_path / "three" / "metrics.json").read_text())


def test_command_analyze_and_aligner_share_the_aligner_defaults():
    from textdistill.analysis.aligner import fit_alignment

    defaults = AlignerConfig()
    assert inspect.signature(analyze).parameters["aligner"].default == defaults
    assert AnalyzeConfig(src="s", tgt=["t"]).model_dump(include=set(AlignerConfig.model_fields)
                                                        ) == defaults.model_dump()
    params = inspect.signature(fit_alignment).parameters
    for name in ("iterations", "diagonal", "optimize_tension", "variational_bayes", "alpha",
                 "p0", "tension"):
        assert params[name].default == getattr(defaults, name), name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tokenize", "bytes"], "'tokenize': Input should be 'words' or 'subwords'"),
        (["lang_refs=de"], "'lang_refs': Input should be a valid dictionary"),
        (["--iterations", "-1"], "'iterations': Input should be greater than or equal to 0"),
    ],
)
def test_command_errors_exit_2_with_one_line(files, tmp_path, extra, message):
    res = CliRunner().invoke(
        app, ["analyze", "-o", str(tmp_path), "--src", str(files["src"]), str(files["dist"]),
              *extra])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0
    assert res.stderr.startswith("error: ") and message in res.stderr


def test_command_mismatch_error(files, tmp_path):
    short = write(tmp_path / "short", ["x"] * 3)
    res = CliRunner().invoke(
        app, ["analyze", "-o", str(tmp_path / "o"), "--src", str(files["src"]), str(short)])
    assert res.exit_code == 2 and "has 3" in res.stderr and "400 lines" in res.stderr
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_the_real_corpus_alone(files, result):
    alone = analyze(files["src"], [], real=files["real"], aligner=AlignerConfig(iterations=4))
    timing = {"seconds"}
    assert alone["corpora"] == [] and ({k: v for k, v in alone["real"].items() if k not in timing}
                                       == {k: v for k, v in result["real"].items()
                                           if k not in timing})
    with pytest.raises(UserError, match=r"give at least one target corpus \(--tgt\) or the real"):
        analyze(files["src"], [])
