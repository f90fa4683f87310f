"""Config loading: recipes, dotted overrides, and one-line errors for every kind of bad input."""

from __future__ import annotations

import pytest
import yaml
from conftest import RECIPE, distill_config, phases

from textdistill.config import (
    DistillConfig,
    FinetuneConfig,
    Recipe,
    Strict,
    apply_overrides,
    config_hash,
    load_config,
    read_yaml,
    save_config,
)
from textdistill.errors import UserError


def test_quickstart_recipe_loads():
    recipe = load_config(Recipe, RECIPE)
    assert recipe.name == "quickstart"
    assert [s.kind for s in recipe.stages] == ["finetune", "distill", "distill", "evaluate"]
    assert [s.name for s in recipe.stages] == ["teacher", "student", "student-labels",
                                               "evaluate"]
    student = recipe.stages[1]
    assert isinstance(student, DistillConfig)
    assert student.teacher == "teacher"
    assert [p.name for p in student.phases] == ["intermediate", "prediction"]
    assert [o.loss for o in student.phases[0].objectives] == ["embedding", "hidden", "attention"]
    assert [o.loss for o in student.phases[1].objectives] == ["soft_ce"]
    assert student.phases[1].objectives[0].temperature == 1.0
    assert student.phases[0].optim.lr == pytest.approx(1e-3)
    assert recipe.stages[2].teacher is None
    assert [o.loss for o in recipe.stages[2].phases[0].objectives] == ["hard"]
    assert recipe.stages[3].models == ["teacher", "student", "student-labels"]


def test_dotted_overrides_reach_list_items():
    recipe = load_config(Recipe, RECIPE, [
        "stages.1.phases.0.epochs=2",
        "stages.1.phases.0.objectives.0.weight=0.5",
        "stages.0.data.batch_size=8",
        "stages.1.student.init_from_teacher=[1, 3, 5]",
        "stages.2.student.preset=micro-2",
    ])
    kd, labels = recipe.stages[1], recipe.stages[2]
    assert kd.phases[0].epochs == 2
    assert kd.phases[0].objectives[0].weight == 0.5
    assert recipe.stages[0].data.batch_size == 8
    assert kd.student.init_from_teacher == [1, 3, 5]
    assert labels.student.preset == "micro-2"
    # Only the addressed items change.
    assert labels.phases[0].epochs == load_config(Recipe, RECIPE).stages[2].phases[0].epochs
    assert recipe.stages[3].data.batch_size == 32


def test_overrides_create_nested_keys_and_parse_yaml_values():
    data = apply_overrides({}, ["a.b.c=3", "a.flag=true", "a.items=[1, 9]", "a.name=x=y",
                                "a.none=null", "a.text='12'"])
    assert data == {"a": {"b": {"c": 3}, "flag": True, "items": [1, 9], "name": "x=y",
                          "none": None, "text": "12"}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.9.name=x", "'9' is not an index of a list of 4"),
        ("stages.first.name=x", "'first' is not an index of a list of 4"),
        ("name.sub=x", "'name' is not a mapping"),
        ("stages.1.temperature", "must look like key.sub=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(UserError, match="override") as exc:
        load_config(Recipe, RECIPE, [override])
    assert message in str(exc.value)


def test_list_index_into_a_default_list_is_a_clear_error():
    # 'phases' is not in the (empty) config, so it cannot have an item 0 to override.
    with pytest.raises(UserError) as exc:
        distill_config("phases.0.epochs=2")
    assert "phases" in str(exc.value)
    assert "phases=[" in str(exc.value)


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as exc:
        load_config(Recipe, path)
    assert str(exc.value) == f"config file not found: {path}"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: bad\nstages:\n  - kind: finetune\n    name: teacher\n"
         "    data: {corpus: rotten-tomatoes\n    epochs: 3\n", 6),
        ("name: bad\nstages:\n  - kind: finetune\n\tname: teacher\n", 4),
    ],
)
def test_invalid_yaml_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(Recipe, path)
    msg = str(exc.value)
    assert msg.startswith(f"invalid YAML in {path} at line {line}, column ")
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "list.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="must hold a mapping"):
        read_yaml(path)


def test_empty_yaml_is_an_empty_config(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert read_yaml(path) == {}
    assert load_config(FinetuneConfig, path) == FinetuneConfig()


@pytest.mark.parametrize(
    ("model", "override", "key", "hint"),
    [
        (Recipe, "stages.1.phases.1.objectives.0.temprature=2",
         "stages.1.phases.1.objectives.0.temprature", "did you mean 'temperature'?"),
        (Recipe, "stages.1.student.prest=x", "stages.1.student.prest", "did you mean 'preset'?"),
        (Recipe, "nme=x", "nme", "did you mean 'name'?"),
        (DistillConfig, "data.batch_sise=8", "data.batch_sise", "did you mean 'batch_size'?"),
        (DistillConfig, "phases=[{objectives: [{loss: hidden, layer_map: {stratgy: top}}]}]",
         "phases.0.objectives.0.layer_map.stratgy", "did you mean 'strategy'?"),
        (DistillConfig, "data.columns.lable=y", "data.columns.lable", "did you mean 'label'?"),
        (DistillConfig, "zzz=1", "zzz", "valid keys: kind, name, teacher, student"),
    ],
)
def test_unknown_key_suggests_the_closest_valid_key(model, override, key, hint):
    path = RECIPE if model is Recipe else None
    with pytest.raises(UserError) as exc:
        load_config(model, path, [override])
    msg = str(exc.value)
    assert f"unknown key '{key}'" in msg
    assert hint in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("override", "key", "detail"),
    [
        ("stages.0.data.batch_size=lots", "stages.0.data.batch_size", "(got 'lots')"),
        ("stages.0.optim.lr=fast", "stages.0.optim.lr", "valid number"),
        ("stages.0.optim.max_grad_norm=-1", "stages.0.optim.max_grad_norm", "greater than 0"),
        ("stages.0.seed=-1", "stages.0.seed", "greater than or equal to 0"),
        ("stages.0.seed=4294967296", "stages.0.seed", "less than 4294967296"),
        ("stages.1.phases.1.objectives.0.temperature=0",
         "stages.1.phases.1.objectives.0.temperature", "greater than 0"),
        ("stages.1.phases.1.objectives.0.temperature=.inf",
         "stages.1.phases.1.objectives.0.temperature", "finite number"),
        ("stages.1.phases.1.objectives=[{loss: kd, alpha: 1.5}]",
         "stages.1.phases.1.objectives.0.alpha",
         "less than or equal to 1"),
        ("stages.1.phases.0.objectives.0.loss=kld", "stages.1.phases.0.objectives.0.loss",
         "unknown loss 'kld'; use one of 'hard', 'kd', 'reverse_kl', 'jsd'"),
        ("stages.1.phases=[{objectives: [{loss: attention, layer_map: {strategy: middle}}]}]",
         "stages.1.phases.0.objectives.0.layer_map.strategy", "'uniform'"),
    ],
)
def test_wrong_type_or_value_names_the_key(override, key, detail):
    with pytest.raises(UserError) as exc:
        load_config(Recipe, RECIPE, [override])
    msg = str(exc.value)
    assert msg.startswith(f"{RECIPE}: '{key}': ")
    assert detail in msg


def test_unknown_stage_kind():
    with pytest.raises(UserError) as exc:
        load_config(Recipe, RECIPE, ["stages.0.kind=pretrain"])
    assert "'stages.0.kind': unknown kind 'pretrain'" in str(exc.value)
    assert ("'finetune', 'distill', 'general-distill', 'prune', 'train-mlm', 'augment', "
            "'evaluate', 'train', 'generate', 'evaluate-mt', 'analyze'") in str(exc.value)


@pytest.mark.parametrize("loss", ["kd", "soft_ce", "hidden", "attention", "embedding"])
def test_losses_that_need_a_teacher_without_one(loss):
    with pytest.raises(UserError) as exc:
        distill_config(phases(loss, "hard"))
    assert f"losses ['{loss}'] need a teacher" in str(exc.value)


def test_labels_only_needs_no_teacher():
    cfg = distill_config(phases("hard"))
    assert cfg.teacher is None
    assert [o.loss for o in cfg.phases[0].objectives] == ["hard"]


def test_recipe_stage_without_its_teacher():
    with pytest.raises(UserError, match=r"need a teacher") as exc:
        load_config(Recipe, RECIPE, ["stages.1.teacher=null"])
    assert str(exc.value).startswith(f"{RECIPE}: 'stages.1': ")


def test_duplicate_stage_names():
    with pytest.raises(UserError) as exc:
        load_config(Recipe, RECIPE, ["stages.2.name=student"])
    assert "stage names must be unique; repeated: ['student']" in str(exc.value)


def test_recipe_needs_a_stage(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: nothing\nstages: []\n")
    with pytest.raises(UserError, match="'stages'"):
        load_config(Recipe, path)


def test_saved_config_loads_back_identically(tmp_path):
    recipe = load_config(Recipe, RECIPE, ["stages.1.phases.0.epochs=0.5"])
    save_config(recipe, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["stages"][1]["phases"][0]["epochs"] == 0.5
    assert saved["stages"][1]["phases"][0]["objectives"][0]["weight"] == 1.0  # defaults resolved
    assert load_config(Recipe, tmp_path / "run" / "config.yaml") == recipe


def test_config_hash_tracks_config_and_salt():
    def kd(tau: str) -> DistillConfig:
        return distill_config(
            "teacher=t", f"phases=[{{objectives: [{{loss: kd, temperature: {tau}}}]}}]")

    a = kd("2")
    assert config_hash(a) == config_hash(kd("2.0"))
    assert config_hash(a) != config_hash(kd("3"))
    assert config_hash(a) != config_hash(a, salt="upstream")
    assert len(config_hash(a)) == 16


def test_config_hash_ignores_unset_options():
    class Old(Strict):
        lr: float = 1e-3

    class New(Old):
        init: list[int] | None = None

    assert config_hash(New()) == config_hash(Old())
    assert config_hash(New(init=[1])) != config_hash(Old())


# Recipes whose comments say to run them with the same --run-dir, and the stages they share.
SHARED_STAGES = {
    ("micro", "bbc-news"): ["general-micro"],
    ("micro", "micro-ablations"): ["teacher", "general-micro", "micro-gd-tinybert",
                                   "micro-gd-tinybert-seed2", "micro-gd-tinybert-seed3"],
    ("tinybert-full", "micro-ablations"): ["teacher", "mlm"],
    ("bbc-news", "micro-ablations"): ["general-micro", "mlm"],
    ("bbc-news", "tinybert-full"): ["mlm"],
    ("nat", "nat-decoding"): ["teacher", "distilled", "nat-gold", "nat-kd"],
    ("nat", "nat-teachers"): ["teacher", "distilled", "nat-kd"],
    ("nat-decoding", "nat-teachers"): ["teacher", "distilled", "nat-kd"],
}


def test_every_recipe_validates_and_shared_stages_are_identical():
    """A recipe that fails to load is a broken promise; a stage two recipes share by name but
    not by settings would be trained again (its digest differs) instead of reused, and
    overwrite the other recipe's output in the shared run folder."""
    from conftest import ROOT

    from textdistill.config import Recipe, config_hash, load_config

    recipes = {p.stem: load_config(Recipe, p) for p in sorted((ROOT / "recipes").glob("*.yaml"))}
    assert {"quickstart", "bbc-news", "nat", "tinybert-full"} <= set(recipes)
    for (a, b), names in SHARED_STAGES.items():
        first = {s.name: config_hash(s) for s in recipes[a].stages}
        second = {s.name: config_hash(s) for s in recipes[b].stages}
        assert [n for n in names if first.get(n) is not None and first[n] == second.get(n)] \
            == names, (a, b)
        assert sorted(first.keys() & second.keys()) == sorted(names), (a, b)  # no name clash
