"""The HTML run report: one self-contained page with a recipe run's tables, curves and figures.

Every data table carries ``data-stage``; every numeric cell carries its raw value in
``data-value``, so the page can be checked against ``metrics.json``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from textdistill.errors import UserError
from textdistill.paths import atomic_write_text

TRAINING = ("finetune", "distill", "train")
EVALUATION = ("evaluate", "evaluate-mt")
TITLES = {
    "accuracy": "accuracy", "macro_f1": "macro-F1", "mcc": "MCC", "retention": "retention",
    "params": "params", "params_no_embeddings": "params (no emb.)", "size_ratio": "smaller ×",
    "latency_ms_b1": "ms (b=1)", "speedup_b1": "faster ×", "throughput_b32": "ex/s (b=32)",
}
"""Column titles, in table order; other columns follow in the order they first appear."""
BEAM_TITLES = {"bleu": "BLEU", "chrf": "chrF", "sent_per_s": "sent/s"}
NOT_PLOTTED = {"kind", "step", "phase", "epoch", "lr"}
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 24px auto;
  padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 2px; } h2 { font-size: 19px; margin-top: 32px;
  border-bottom: 1px solid #ccc; padding-bottom: 3px; }
.meta, .kind, .note, figcaption { color: #666; } .kind { font-size: 13px; font-weight: normal; }
.note { font-style: italic; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
caption { text-align: left; color: #555; padding-bottom: 4px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e3e3; }
th { background: #f3f4f6; text-align: left; white-space: nowrap; }
td[data-value] { text-align: right; white-space: nowrap; }
tbody tr:hover { background: #fafafa; }
figure { margin: 12px 0; } img { max-width: 100%; border: 1px solid #eee; }
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` for a recipe run directory; returns its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise UserError(f"{run_dir} has no metrics.json: run the recipe first "
                        f"(textdistill run RECIPE --run-dir {run_dir})")
    try:
        metrics: dict[str, Any] = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{metrics_path} is not valid JSON ({e}): rerun the recipe") from None
    recipe = _read_yaml(run_dir / "config.yaml")
    kinds = {s.get("name"): s.get("kind") for s in recipe.get("stages", []) if isinstance(s, dict)}
    names = list(kinds) + [n for n in metrics if n not in kinds]
    for name in names:
        kinds[name] = kinds.get(name) or _read_yaml(run_dir / name / "config.yaml").get("kind")
    title = f"Run report: {recipe.get('name', run_dir.name)}"
    parts = [f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
             f"<h1>{escape(title)}</h1>\n<p class=\"meta\">Written "
             f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} from {escape(str(run_dir))}</p>"]
    groups = [[n for n in names if kinds[n] in EVALUATION],
              [n for n in names if kinds[n] in TRAINING],
              [n for n in names if kinds[n] not in EVALUATION + TRAINING]]
    for name in (n for group in groups for n in group):
        parts.append(_stage_section(run_dir, name, kinds[name], metrics.get(name)))
    parts.append("</body>\n</html>\n")
    out = run_dir / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out


def _read_yaml(path: Path) -> dict:
    """A YAML mapping, or ``{}`` when the file is missing or not a mapping."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _stage_section(run_dir: Path, name: str, kind: str | None, metrics: Any) -> str:
    """One stage's section: its table(s), training curves and figures, or a note."""
    stage_dir = run_dir / name
    parts = [f"<section>\n<h2>{escape(name)} <span class=\"kind\">{escape(kind or '?')}</span>"
             "</h2>"]
    if metrics is None:
        parts.append(_note("No metrics: this stage has not run yet."))
    elif not stage_dir.is_dir():
        parts.append(_note(f"The stage folder {name}/ is missing: no logs or figures."))
    if kind in EVALUATION and isinstance(metrics, dict) and isinstance(metrics.get("models"), dict):
        parts.append(_models_table(name, metrics))
    elif metrics is not None:
        parts.append(_key_value_table(name, metrics))
    if kind in TRAINING and stage_dir.is_dir():
        parts.append(_training_figures(stage_dir))
    for png in sorted(stage_dir.glob("*.png")):
        parts.append(_figure(png.read_bytes(), png.name))
    parts.append("</section>")
    return "\n".join(parts)


def _note(text: str) -> str:
    return f"<p class=\"note\">{escape(text)}</p>"


def _models_table(stage: str, metrics: dict) -> str:
    """The model-by-metric table of an ``evaluate`` or ``evaluate-mt`` stage."""
    models: dict[str, dict] = metrics["models"]
    seen = list(dict.fromkeys(k for row in models.values() for k in row))
    columns = [k for k in TITLES if k in seen] + [k for k in seen if k not in TITLES]
    about = ", ".join(f"{k} {v}" for k, v in metrics.items() if k != "models" and _is_scalar(v))
    head = "".join(f"<th data-key=\"{escape(k)}\">{escape(_title(k))}</th>" for k in columns)
    rows = [f"<tr><th scope=\"row\">{escape(model)}</th>"
            + "".join(_cell(k, row[k]) if k in row else "<td></td>" for k in columns) + "</tr>"
            for model, row in models.items()]
    return (f"<table data-stage=\"{escape(stage)}\">\n<caption>{escape(about)}</caption>\n"
            f"<thead><tr><th>model</th>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows)
            + "\n</tbody>\n</table>")


def _key_value_table(stage: str, metrics: Any) -> str:
    """Every scalar leaf of a stage's metrics, nested keys dotted."""
    rows = [f"<tr><th scope=\"row\">{escape(key)}</th>{_cell(key, value)}</tr>"
            for key, value in _flatten(metrics)]
    if not rows:
        return _note("No metrics.")
    return (f"<table data-stage=\"{escape(stage)}\">\n<thead><tr><th>key</th><th>value</th>"
            "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, scalar) pairs; a list of scalars stays one value."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and not all(_is_scalar(v) for v in value):
        items = list(enumerate(value))
    else:
        return [(prefix, value)]
    return [pair for k, v in items for pair in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(key: str, value: Any) -> str:
    """A ``<td>``: numbers formatted for reading, with the raw value in ``data-value``."""
    if _is_number(value):
        return f"<td data-value=\"{value!r}\">{escape(_format(key, value))}</td>"
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return f"<td>{escape('' if value is None else str(value))}</td>"


def _format(key: str, value: int | float) -> str:
    """A number as the report shows it, by what its key measures."""
    key = key.rsplit(".", 1)[-1]
    if key.startswith("params") or isinstance(value, int):
        return f"{value:,.0f}"
    if key == "size_ratio" or key.startswith("speedup"):
        return f"{value:.2f}×"
    if key.endswith("seconds"):
        return f"{value:,.1f} s"
    if key.startswith(("throughput", "sent_per_s")) or key.endswith("per_second"):
        return f"{value:,.1f}"
    if key == "lr":
        return f"{value:.2e}"
    if "_ms" in key or key.startswith(("bleu", "chrf")) or abs(value) >= 100:
        return f"{value:,.2f}"
    return f"{value:.4f}"


def _title(key: str) -> str:
    """A column title: ``bleu_b5`` becomes ``BLEU b=5`` (beam 5), ``bleu_t4`` ``BLEU T=4``
    (4 mask-predict iterations)."""
    decoding = re.fullmatch(r"(bleu|chrf|sent_per_s)_([bt])(\d+)", key)
    if decoding:
        return f"{BEAM_TITLES[decoding[1]]} {'b' if decoding[2] == 'b' else 'T'}={decoding[3]}"
    return TITLES.get(key, key)


def _training_figures(stage_dir: Path) -> str:
    """Training loss (and each loss term) against step, each dev metric against epoch."""
    log = stage_dir / "logs" / "metrics.jsonl"
    if not log.is_file():
        return _note("No training log (logs/metrics.jsonl) in this stage's folder.")
    records = _read_jsonl(log)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    phases = _read_yaml(stage_dir / "config.yaml").get("phases") or []
    names = [p.get("name", f"phase {i}") if isinstance(p, dict) else f"phase {i}"
             for i, p in enumerate(phases)]
    parts = []
    if _plot_keys(train):
        parts.append(_loss_figure(train))
    if _plot_keys(evals):
        parts.append(_dev_figure(evals, names))
    return "\n".join(parts) or _note("The training log holds no records to plot.")


def _read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a log, one a line; a partly written line (a run still going) is
    skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _plot_keys(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in records for k, v in r.items()
                              if k not in NOT_PLOTTED and _is_number(v)))


def _loss_figure(train: list[dict]) -> str:
    """The loss terms against step, with a dashed line where each later phase starts."""
    fig = _new_figure(1)
    ax = fig.axes[0]
    for key in _plot_keys(train):
        points = [(r["step"], r[key]) for r in train if _is_number(r.get(key))]
        ax.plot(*zip(*points, strict=True), label=key, linewidth=2 if key == "loss" else 1.2)
    starts = [r["step"] for prev, r in zip(train, train[1:], strict=False)
              if r.get("phase") != prev.get("phase")]
    for step in starts:
        ax.axvline(step, color="#999", linestyle="--", linewidth=1)
    ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax.legend(fontsize=8)
    return _figure(_png(fig), "Training loss and each loss term against step"
                   + ("; dashed lines: where a phase starts" if starts else ""))


def _dev_figure(evals: list[dict], names: list[str]) -> str:
    """One panel per dev metric against epoch, one line per phase."""
    keys = _plot_keys(evals)
    fig = _new_figure(len(keys))
    phases = list(dict.fromkeys(r.get("phase", 0) for r in evals))
    for ax, key in zip(fig.axes, keys, strict=True):
        for phase in phases:
            points = [(r["epoch"], r[key]) for r in evals
                      if r.get("phase", 0) == phase and _is_number(r.get(key))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=_phase_name(names, phase))
        ax.set(xlabel="epoch", title=f"dev {key}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(phases) > 1:
            ax.legend(fontsize=8)
    return _figure(_png(fig), "Dev metrics against epoch")


def _phase_name(names: list[str], phase: Any) -> str:
    """A phase's name from the stage config, else ``phase N``."""
    return names[phase] if isinstance(phase, int) and 0 <= phase < len(names) else f"phase {phase}"


def _new_figure(panels: int) -> Figure:
    """A matplotlib figure with ``panels`` side-by-side axes, drawn with Agg."""
    fig = Figure(figsize=(min(10.0, 3.4 * max(panels, 2)), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(1, panels, squeeze=False)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _figure(png: bytes, caption: str) -> str:
    """An inlined PNG with a caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt=\"{escape(caption)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{escape(caption)}</figcaption></figure>")
