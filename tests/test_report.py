"""The HTML run report, checked against a synthetic run directory through an HTML parser."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from textdistill.errors import UserError
from textdistill.report import write_report

ODD = "a<b&c"
"""A model name that must be escaped."""

EVALUATE = {"split": "test", "corpus": "rotten-tomatoes", "models": {
    "teacher": {"accuracy": 0.82591725, "macro_f1": 0.8258134, "mcc": 0.65201, "params": 22713218,
                "params_no_embeddings": 21290114, "latency_ms_b1": 7.41326, "throughput_b32": 812.5,
                "retention": 1.0, "size_ratio": 1.0, "speedup_b1": 1.0},
    "student-kd": {"accuracy": 0.7908067, "macro_f1": 0.790511, "mcc": 0.581802,
                   "params": 4386178, "params_no_embeddings": 1203456, "latency_ms_b1": 1.98765,
                   "throughput_b32": 4123.25, "retention": 0.957509, "size_ratio": 5.178345,
                   "speedup_b1": 3.729661},
    ODD: {"accuracy": 0.75, "macro_f1": 0.7431, "mcc": 0.5, "params": 4386178,
          "params_no_embeddings": 1203456, "latency_ms_b1": 2.0, "throughput_b32": 4000.0,
          "retention": 0.908083, "size_ratio": 5.178345, "speedup_b1": 3.7065},
}}
EVALUATE_MT = {"split": "test", "pair": "en-de", "models": {
    name: {"params": params, **{f"{m}_b{beam}": value + beam / 7 for beam in (1, 5)
                                for m, value in (("bleu", bleu), ("chrf", 40.123456),
                                                 ("sent_per_s", 55.5))}}
    for name, params, bleu in (("teacher", 13100000, 12.2345678), ("student", 3300000, 10.98765))
}}
DISTILL = {"train_seconds": 123.4, "train_examples_per_second": 77.8, "steps": 12,
           "best_dev": {"kind": "eval", "step": 12, "phase": 1, "epoch": 2, "accuracy": 0.71875,
                        "macro_f1": 0.7012, "mcc": 0.43125},
           "params": 4386178, "labels": ["rotten", "fresh"]}
FINETUNE = {"train_seconds": 301.0, "steps": 960, "best_dev": {"epoch": 2, "accuracy": 0.84125}}
GENERATE = {"decode": {"method": "beam", "beam": 5}, "seconds": 12.3456789,
            "corpus": {"sentences": 1200, "tokens": {"source": 30001, "target": 31002}}}
ANALYZE = {"complexity": {"source": 0.1234567, "target": 0.0987654}, "pairs": 500}
METRICS = {"teacher": FINETUNE, "student-kd": DISTILL, "evaluate": EVALUATE,
           "evaluate-mt": EVALUATE_MT, "generate": GENERATE, "analyze": ANALYZE}
KINDS = {"teacher": "finetune", "student-kd": "distill", "evaluate": "evaluate",
         "evaluate-mt": "evaluate-mt", "generate": "generate", "analyze": "analyze"}
MODEL_TABLES = ("evaluate", "evaluate-mt")


class ReportParser(HTMLParser):
    """Tables (stage -> rows -> cells), image sources, every src/href, and the page's text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._table: list[list[dict]] | None = None
        self._cell: dict | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "table":
            assert "data-stage" in a, "every table names its stage"
            assert a["data-stage"] not in self.tables, "one table a stage"
            self._table = self.tables[a["data-stage"]] = []
        elif tag == "tr":
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = {"tag": tag, "key": a.get("data-key"), "value": a.get("data-value"),
                          "text": ""}
            self._table[-1].append(self._cell)
        elif tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


def _value(cell: dict) -> float | None:
    return None if cell["value"] is None else float(cell["value"])


def _model_value(cell: dict) -> float | str | None:
    """A number's raw data-value; a text cell (a model's precision) its text."""
    return _value(cell) if cell["value"] is not None else cell.get("text") or None


def model_cells(rows: list[list[dict]]) -> dict[tuple[str, str], float | None]:
    """(model, metric) -> data-value of a model table; columns named by the headers' data-key."""
    header, *body = rows
    assert all(c["tag"] == "th" for c in header)
    keys = [c["key"] for c in header[1:]]
    assert all(len(row) == len(header) and row[0]["tag"] == "th" for row in body)
    return {(row[0]["text"], key): _model_value(c) for row in body for key, c in zip(keys, row[1:],
                                                                                strict=True)}


def key_value_cells(rows: list[list[dict]]) -> dict[str, float | None]:
    """Dotted key -> data-value (None for a text value) of a key/value table."""
    header, *body = rows
    assert [c["text"] for c in header] == ["key", "value"]
    assert all(len(row) == 2 for row in body)
    return {row[0]["text"]: _value(row[1]) for row in body}


def expected_models(metrics: dict) -> dict[tuple[str, str], float]:
    return {(model, key): value for model, row in metrics["models"].items()
            for key, value in row.items()}


def expected_leaves(value, prefix: str = "") -> dict[str, float | None]:
    """Scalar leaves of nested metrics, dotted; numbers kept, text (and lists) as None."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items()
                for k, v in expected_leaves(item, f"{prefix}.{key}" if prefix else key).items()}
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {prefix: value if number else None}


def tiny_png(path: Path) -> None:
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.subplots().scatter([0, 1], [1, 0])
    fig.savefig(path, dpi=20)


def make_run(root: Path) -> Path:
    """A run directory: every stage but ``teacher`` has a folder; ``student-kd`` has logs over
    two phases, ``analyze`` a figure."""
    run = root / "run"
    run.mkdir()
    stages = [{"kind": KINDS[name], "name": name} for name in METRICS]
    (run / "config.yaml").write_text(yaml.safe_dump({"name": "demo <run>", "stages": stages}))
    (run / "metrics.json").write_text(json.dumps(METRICS))
    for name, metrics in METRICS.items():
        if name == "teacher":
            continue
        (run / name).mkdir()
        config = {"kind": KINDS[name], "name": name}
        if name == "student-kd":
            config["phases"] = [{"name": "warmup"}, {"name": "kd"}]
        (run / name / "config.yaml").write_text(yaml.safe_dump(config))
        (run / name / "metrics.json").write_text(json.dumps(metrics))
    logs = run / "student-kd" / "logs"
    logs.mkdir()
    records = [{"kind": "train", "step": s, "phase": s // 7, "epoch": 1 + s % 7 // 4,
                "lr": 1e-3, "loss": 2.0 / s, "kd": 1.5 / s, "hard": 0.5 / s} for s in range(1, 13)]
    records += [{"kind": "eval", "step": 6 * p + 3 * e, "phase": p, "epoch": e,
                 "accuracy": 0.6 + 0.05 * e + 0.01 * p, "macro_f1": 0.55 + 0.05 * e,
                 "mcc": 0.3 + 0.05 * e} for p in (0, 1) for e in (1, 2)]
    (logs / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tiny_png(run / "analyze" / "scatter.png")
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, ReportParser]:
    run = make_run(tmp_path_factory.mktemp("report"))
    path = write_report(run)
    page = path.read_text(encoding="utf-8")
    return path, page, ReportParser(page)


def test_written_in_run_dir(report):
    path, page, _ = report
    assert path.name == "report.html" and (path.parent / "metrics.json").is_file()
    assert page.startswith("<!doctype html>")


def test_every_table_matches_metrics_exactly(report):
    _, _, parsed = report
    assert set(parsed.tables) == set(METRICS)
    for stage, metrics in METRICS.items():
        rows = parsed.tables[stage]
        if stage in MODEL_TABLES:
            assert model_cells(rows) == expected_models(metrics), stage
        else:
            assert key_value_cells(rows) == expected_leaves(metrics), stage


def test_size_and_latency_columns_for_classification(report):
    header = report[2].tables["evaluate"][0]
    keys = [c["key"] for c in header]
    for key in ("params", "size_ratio", "latency_ms_b1", "speedup_b1"):
        assert key in keys


def test_numbers_are_formatted_for_reading(report):
    shown = {(model, key): c for (model, key), c in _text_cells(report[2].tables["evaluate"])}
    assert shown["teacher", "accuracy"] == "0.8259"
    assert shown["teacher", "params"] == "22,713,218"
    assert shown["teacher", "latency_ms_b1"] == "7.41"
    mt = dict(_text_cells(report[2].tables["evaluate-mt"]))
    assert mt["teacher", "bleu_b5"] == f"{12.2345678 + 5 / 7:.2f}"
    assert mt["student", "params"] == "3,300,000"
    assert mt["teacher", "sent_per_s_b1"] == "55.6"
    assert shown["student-kd", "size_ratio"] == "5.18×"


def _text_cells(rows: list[list[dict]]):
    keys = [c["key"] for c in rows[0][1:]]
    return [((row[0]["text"], key), c["text"]) for row in rows[1:]
            for key, c in zip(keys, row[1:], strict=True)]


def test_a_wrong_or_rounded_value_does_not_match(report):
    _, page, _ = report
    assert 'data-value="0.82591725"' in page
    rounded = ReportParser(page.replace('data-value="0.82591725"', 'data-value="0.8259"'))
    assert model_cells(rounded.tables["evaluate"]) != expected_models(EVALUATE)
    dropped = ReportParser(page.replace("<th data-key=\"mcc\">", "<th data-key=\"MCC\">", 1))
    assert model_cells(dropped.tables["evaluate"]) != expected_models(EVALUATE)
    generate = expected_leaves(GENERATE) | {"corpus.sentences": 1201}
    assert key_value_cells(report[2].tables["generate"]) != generate


def test_images_are_inline_pngs(report):
    _, page, parsed = report
    # loss and dev figures of student-kd, and analyze/scatter.png
    assert len(parsed.images) == 3
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG")
    assert "scatter.png" in "".join(parsed.text)


def test_nothing_points_outside_the_document(report):
    _, page, parsed = report
    assert parsed.links
    assert all(link.startswith("data:") for link in parsed.links), parsed.links
    assert "http:" not in page and "https:" not in page
    for tag in ("<script", "<link", "<iframe"):
        assert tag not in page.lower()


def test_text_from_metrics_is_escaped(report):
    _, page, parsed = report
    assert ODD not in page and "demo <run>" not in page
    assert "a&lt;b&amp;c" in page
    names = [row[0]["text"] for row in parsed.tables["evaluate"][1:]]
    assert names == ["teacher", "student-kd", ODD]
    assert "Run report: demo <run>" in "".join(parsed.text)


def test_missing_stage_folder_is_a_note(report):
    text = " ".join(report[2].text)
    assert "stage folder teacher/ is missing" in text


def test_missing_training_log_is_a_note(tmp_path):
    run = make_run(tmp_path)
    (run / "student-kd" / "logs" / "metrics.jsonl").unlink()
    parsed = ReportParser(write_report(run).read_text(encoding="utf-8"))
    assert "No training log" in " ".join(parsed.text)
    assert len(parsed.images) == 1


def test_run_dir_without_metrics_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run the recipe first") as e:
        write_report(tmp_path)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "report.html").exists()
