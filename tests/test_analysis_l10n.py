"""End to end on the real l10n dev split (read from the data directory, never copied)."""

from __future__ import annotations

import pytest

from textdistill.analysis.analyze import analyze
from textdistill.analysis.data import read_l10n, write_l10n_columns
from textdistill.config import AlignerConfig
from textdistill.data.corpora import L10N_FILES
from textdistill.errors import UserError
from textdistill.paths import data_dir

pytestmark = pytest.mark.skipif(
    not (data_dir() / L10N_FILES["dev"]).is_file(),
    reason="l10n dev split not found: set TEXTDISTILL_DATA to the shared data directory",
)


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    d = tmp_path_factory.mktemp("l10n")
    paths = write_l10n_columns("dev", ["en", "de", "fr", "es"], d)
    # A stand-in for distilled German: every line loses its last token.
    lines = paths["de"].read_text(encoding="utf-8").split("\n")[:-1]
    paths["cut"] = d / "cut.de"
    paths["cut"].write_text("".join(" ".join(x.split()[:-1]) + "\n" for x in lines), "utf-8")
    return paths


@pytest.mark.slow
def test_dev_en_de_end_to_end(dev):
    res = analyze(
        dev["en"],
        [dev["cut"]],
        real=dev["de"],
        aligner=AlignerConfig(iterations=2),
        language_refs={"de": dev["de"], "fr": dev["fr"], "es": dev["es"]},
    )
    real, cut = res["real"], res["corpora"][0]
    assert res["source"]["lines"] == 2000
    assert real["aligned_pairs"] == 2000 and real["skipped_lines"] == 0
    assert cut["skipped_lines"] > 0  # one-word lines became empty
    assert 0.3 < real["complexity"] < 4.0
    assert 0.5 < real["reordering"] < 1.0  # German is mostly, not fully, monotone
    assert cut["faithfulness"] > 0.1
    assert 50 < cut["bleu"] < 100 and 50 < cut["chrf"] < 100
    lm = real["language_mode"]
    assert lm["mode_proportions"]["de"] > 0.95 and lm["mode_entropy"] < 0.2


def test_read_l10n_columns():
    en = read_l10n("dev", "en")
    assert len(en) == 2000 and all(isinstance(x, str) and x for x in en[:50])
    with pytest.raises(UserError, match="l10n has no language"):
        read_l10n("dev", "it")
    with pytest.raises(UserError, match="l10n has no split"):
        read_l10n("valid", "en")


@pytest.mark.slow
def test_analyze_stage_takes_sources_real_targets_and_language_sides_from_a_corpus(tmp_path):

    from textdistill.analysis.command import run_analyze
    from textdistill.config import AnalyzeConfig, validate
    from textdistill.data.parallel import load_pairs

    data = {"corpus": "l10n", "tgt_lang": "de", "max_eval_examples": 60}
    real = [t for _, t in load_pairs(validate(AnalyzeConfig, {
        "tgt": ["x"], "data": data}).data, "dev")]
    out = tmp_path / "one"
    (tmp_path / "hyp.de").write_text("".join(f"{t}\n" for t in real[::-1]))  # misaligned
    res = run_analyze(validate(AnalyzeConfig, {
        "tgt": [str(tmp_path / "hyp.de")], "data": data, "split": "dev", "iterations": 1}), out)
    assert res["real"]["aligned_pairs"] == 60 and res["corpora"][0]["bleu"] < 50
    assert (out / "inputs" / "dev.en").read_text().count("\n") == 60
    assert (out / "complexity_faithfulness.png").is_file()
    # three target languages: the language sides come from the training split, one per language
    three = {**data, "tgt_lang": "de+fr+es", "max_train_examples": 400}
    out = tmp_path / "three"
    res = run_analyze(validate(AnalyzeConfig, {
        "tgt": [str(tmp_path / "hyp.de")], "data": three, "split": "dev", "iterations": 1}), out)
    mode = res["corpora"][0]["language_mode"]
    assert mode["languages"] == ["de", "fr", "es"] and mode["mode_proportions"]["de"] > 0.9
    assert (out / "language_modes.png").is_file()
    # the real side is the corpus's own targets, one drawn language per source
    drawn = load_pairs(validate(AnalyzeConfig, {"data": three}).data, "dev")
    assert (out / "inputs" / "dev.de+fr+es").read_text() == "".join(f"{t}\n" for _, t in drawn)
    shares = res["real"]["language_mode"]["mode_proportions"]
    assert len(set(drawn.langs)) == 3 and min(shares.values()) > 0.1
    # every target of every source (a multi-target training set) and no other corpus
    every = {**three, "multi_target": "all", "max_eval_examples": 30}
    res = run_analyze(validate(AnalyzeConfig, {"data": every, "split": "dev",
                                               "iterations": 1}), tmp_path / "every")
    sources = (tmp_path / "every" / "inputs" / "dev.en").read_text().splitlines()
    assert len(sources) == 30 and sources[0] == sources[1] == sources[2] != sources[3]
    assert res["corpora"] == [] and res["real"]["complexity"] > 0
    with pytest.raises(UserError, match="give the source side as 'src'"):
        validate(AnalyzeConfig, {"tgt": ["x"]})
    with pytest.raises(UserError, match="nothing to measure: give target corpora"):
        validate(AnalyzeConfig, {"src": "s"})
    with pytest.raises(UserError, match="one of them"):
        validate(AnalyzeConfig, {"tgt": ["x"], "src": "s", "data": data})
