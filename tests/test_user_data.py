"""A user's own labelled files, with other column names and string labels, go through
finetune -> distill -> evaluate with no code, as the README shows (real rotten-tomatoes rows
written by the test into CSV, JSONL and Parquet files with the user's column names)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from textdistill.config import DataConfig
from textdistill.data.corpora import load_classification

pytestmark = pytest.mark.slow

NAMES = {"rotten": "negative", "fresh": "positive"}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """train.csv, dev.jsonl and test.parquet with columns review/verdict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = load_classification(DataConfig(corpus="rotten-tomatoes"))
    folder = tmp_path_factory.mktemp("user-data")

    def rows(split: str, n: int) -> list[dict]:
        return [{"id": i, "review": e.text, "verdict": NAMES[corpus.labels[e.label]]}
                for i, e in enumerate(corpus.split(split)[:n])]

    import csv

    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "review", "verdict"])
        writer.writeheader()
        writer.writerows(rows("train", 96))
    (folder / "dev.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows("dev", 32)), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows("test", 32)), folder / "test.parquet")
    return folder


def _data(folder) -> list[str]:
    return [f"data.train={folder / 'train.csv'}", f"data.dev={folder / 'dev.jsonl'}",
            f"data.test={folder / 'test.parquet'}", "data.columns.text=review",
            "data.columns.label=verdict", "data.max_length=32", "data.batch_size=16"]


def test_own_csv_from_teacher_to_distilled_student(user_files, tmp_path):
    data = _data(user_files)
    teacher = run_cli("finetune", "-o", tmp_path / "teacher", *data, "epochs=1")
    assert teacher.returncode == 0, teacher.stderr
    config = json.loads((tmp_path / "teacher" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    student = run_cli("distill", "-o", tmp_path / "student",
                      f"teacher={tmp_path / 'teacher'}/model", *data, "student.preset=micro-2",
                      "phases=[{epochs: 1, optim: {lr: 0.001}, objectives: [{loss: kd, "
                      "temperature: 2}]}]")
    assert student.returncode == 0, student.stderr
    config = json.loads((tmp_path / "student" / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    report = run_cli("evaluate", tmp_path / "teacher" / "model", tmp_path / "student" / "model",
                     "-o", tmp_path / "eval", *data, "latency_examples=2",
                     "throughput_batches=1")
    assert report.returncode == 0, report.stderr
    table = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert table["split"] == "test" and list(table["models"]) == ["teacher", "student"]
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in table["models"].values())
    assert "teacher" in report.stdout and "student" in report.stdout


def test_teacher_trained_for_other_labels(user_files, tmp_path):
    """A fine-tuned teacher is used as it is; its label names must be the data's."""
    data = _data(user_files)
    run = run_cli("finetune", "-o", tmp_path / "teacher", *data, "epochs=0.1")
    assert run.returncode == 0, run.stderr
    other = run_cli("distill", "-o", tmp_path / "s", f"teacher={tmp_path / 'teacher'}/model",
                    *data, "data.labels=[positive, negative]", "student.preset=micro-2",
                    "phases=[{epochs: 1, objectives: [{loss: kd}]}]")
    assert other.returncode == 2
    assert other.stderr.startswith("error: ") and other.stderr.count("\n") == 1
    assert "trained for labels ['negative', 'positive']" in other.stderr
    assert not (tmp_path / "s" / "model").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("data.columns.text=body", "has no column 'body'"),
    ("data.train=missing.csv", "missing.csv"),
])
def test_bad_user_data_is_one_line(user_files, tmp_path, override, message):
    run = run_cli("distill", "-o", tmp_path / "s", *_data(user_files), override,
                  "student.preset=micro-2")
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "s" / "model").exists()


def test_text_pairs_need_a_tokenizer_with_a_separator():
    from textdistill.data.batching import TokenizedDataset
    from textdistill.data.corpora import Example
    from textdistill.errors import UserError
    from textdistill.seq2seq.vocab import train_tokenizer

    no_sep = train_tokenizer(["a premise", "a hypothesis"] * 20, 40)  # a translation vocabulary
    with pytest.raises(UserError, match="text_pair column but the model's tokenizer"):
        TokenizedDataset([Example("a premise", 0, "a hypothesis")], no_sep, 16)
