"""Corpus decoding: batching/sorting does not change results, resume, skip, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessorList

from textdistill.config import DecodeConfig, validate
from textdistill.data.batching import length_batches
from textdistill.data.corpora import L10N_FILES
from textdistill.data.parallel import load_l10n_pairs
from textdistill.errors import UserError
from textdistill.models.seq2seq import build_seq2seq, load_seq2seq, save_seq2seq
from textdistill.paths import data_dir
from textdistill.seq2seq.generate import (
    RowLengthCap,
    generate_corpus,
    length_limits,
    manifest_path,
    plan_shards,
    read_kbest,
)
from textdistill.seq2seq.vocab import train_tokenizer

pytestmark = pytest.mark.skipif(
    not (data_dir() / L10N_FILES["dev"]).is_file(),
    reason="l10n dev split not found: set TEXTDISTILL_DATA to the shared data directory",
)
SMALL = {"d_model": 32, "heads": 2, "ffn_dim": 64, "encoder_layers": 1, "decoder_layers": 1}
FAST = {"shard_size": 6, "batch_tokens": 160, "max_len_a": 1.0, "max_len_b": 4}
DECODE_KEYS = set(DecodeConfig.model_fields)


def _gen(folder, src, out, method: str = "beam", **kw):
    """``generate_corpus`` with decoding options as keywords (validated like a config)."""
    decode = validate(DecodeConfig, {"method": method,
                                     **{k: v for k, v in kw.items() if k in DECODE_KEYS}})
    return generate_corpus(folder, src, out, decode,
                           **{k: v for k, v in kw.items() if k not in DECODE_KEYS})
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is much faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A randomly initialised tiny model and a tokenizer trained on 300 l10n dev pairs."""
    pairs = load_l10n_pairs("dev", "de")[:300]
    tok = train_tokenizer([s for p in pairs for s in p], 400)
    model = build_seq2seq("tiny", tok, seed=0, **SMALL)
    folder = tmp_path_factory.mktemp("teacher")
    save_seq2seq(model, tok, folder, "en", "de")
    # Varied lengths (2 to 40 words) and an empty line; shuffled so input order != sorted.
    src = [s for s, _ in pairs[300 - 40:] if len(s.split()) <= 40][:30]
    src.insert(5, "")
    return folder, src


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def _cap(tok, line: str) -> int:
    """The per-sentence output cap of FAST (</s> included)."""
    n = len(tok(line)["input_ids"])
    return int(length_limits([n], DecodeConfig(max_len_a=1.0, max_len_b=4))[0])


def _alone(model, tok, line: str, **kw) -> tuple[str, torch.Tensor]:
    """One sentence decoded by itself with HF generate and the same per-sentence cap."""
    enc = tok([line], return_tensors="pt")
    cap = _cap(tok, line)
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=cap, bad_words_ids=[[tok.pad_token_id]],
            logits_processor=LogitsProcessorList([RowLengthCap(torch.tensor([cap]),
                                                               tok.eos_token_id)]),
            **kw,
        )
    return tok.decode(out[0], skip_special_tokens=True), out[0]


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_batched_sorted_output_equals_one_by_one(teacher, tmp_path, method):
    folder, src = teacher
    out = tmp_path / "out.txt"
    summary = _gen(folder, src, out, method, beam=3, **FAST)
    assert summary["shards"] > 2 and not summary["skipped"]
    got = _lines(out)
    model, tok = load_seq2seq(folder)
    if method == "greedy":
        # Plain HF greedy search stopped one token before the cap (where </s> is forced).
        want = []
        for line in src:
            n = tok([line], return_tensors="pt")["input_ids"]
            with torch.no_grad():
                ids = model.generate(input_ids=n, max_new_tokens=_cap(tok, line) - 1,
                                     do_sample=False,
                                     num_beams=1, bad_words_ids=[[tok.pad_token_id]])
            want.append(tok.decode(ids[0], skip_special_tokens=True))
    else:
        kw = {"num_beams": 3, "early_stopping": True, "do_sample": False}
        want = [_alone(model, tok, line, **kw)[0] for line in src]
    assert len(got) == len(src)
    assert got == want
    assert len(set(got)) > len(got) // 2  # the model does not say the same thing everywhere


def test_kbest_jsonl_scores(teacher, tmp_path):
    folder, src = teacher
    out = tmp_path / "kbest.jsonl"
    _gen(folder, src, out, "beam", beam=4, num_return=3, **FAST)
    records = [json.loads(line) for line in _lines(out)]
    assert [(r["id"], r["rank"]) for r in records] == [
        (i, k) for i in range(len(src)) for k in range(3)
    ]
    for i in range(len(src)):
        scores = [r["score"] for r in records[3 * i:3 * i + 3]]
        assert scores == sorted(scores, reverse=True)
    for r in records:
        assert r["score"] == pytest.approx(r["logprob"] / r["length"], rel=1e-5)
    kbest = read_kbest(out)
    assert len(kbest) == len(src) and kbest[2][1].text == records[7]["text"]

    # The score is the model's log-probability: check greedy against an independent loss.
    greedy = tmp_path / "greedy.jsonl"
    _gen(folder, src, greedy, "greedy", **FAST)
    model, tok = load_seq2seq(folder)
    for r in (json.loads(line) for line in _lines(greedy)[:8]):
        enc = tok([src[r["id"]]], return_tensors="pt")
        _, ids = _alone(model, tok, src[r["id"]], num_beams=1, do_sample=False)
        labels = ids[1:].unsqueeze(0)
        with torch.no_grad():
            loss = model(**enc, labels=labels).loss.item()
        assert r["length"] == labels.shape[1]
        assert r["logprob"] == pytest.approx(-loss * labels.shape[1], rel=1e-4)


def test_tsv_output(teacher, tmp_path):
    folder, src = teacher
    out = tmp_path / "kbest.tsv"
    _gen(folder, src[:8], out, "beam", beam=2, num_return=2, **FAST)
    rows = [line.split("\t") for line in _lines(out)]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(i, k) for i in range(8) for k in (0, 1)]
    assert all(len(r) == 4 and float(r[2]) < 0 for r in rows)
    assert [h.text for h in read_kbest(out)[3]] == [rows[6][3], rows[7][3]]


class Killed(Exception):
    pass


def _kill_after(n: int):
    def callback(shard: int, done: int) -> None:
        if done == n:
            raise Killed(f"killed after shard {shard}")

    return callback


@pytest.mark.parametrize("out_name", ["samples.jsonl", "topk.txt"])
def test_resume_after_interruption(teacher, tmp_path, out_name):
    folder, src = teacher
    kw = {"method": "topk", "top_k": 5, "seed": 7, **FAST}
    if out_name.endswith(".jsonl"):
        kw["num_return"] = 2
    full = tmp_path / ("full-" + out_name)
    total = _gen(folder, src, full, **kw)["shards"]

    out = tmp_path / out_name
    with pytest.raises(Killed):
        _gen(folder, src, out, on_shard=_kill_after(2), **kw)
    parts = out.with_name(out.name + ".parts")
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("shard-*")) == ["shard-00000.jsonl",
                                                              "shard-00001.jsonl"]
    (parts / ".shard-00002.jsonl.abc.tmp").write_text("half a shard")  # a killed write

    calls = []
    summary = _gen(folder, src, out, on_shard=lambda s, d: calls.append(s), **kw)
    assert calls == list(range(2, total))  # finished shards are not decoded again
    assert summary["shards_done_now"] == total - 2
    assert out.read_bytes() == full.read_bytes()  # same samples: seeded per shard
    assert not parts.exists()
    if kw.get("num_return"):
        ids = [json.loads(line)["id"] for line in _lines(out)]
        assert sorted(ids) == sorted(list(range(len(src))) * 2)
    else:
        assert len(_lines(out)) == len(src)


def test_complete_output_is_skipped(teacher, tmp_path):
    folder, src = teacher
    out = tmp_path / "out.txt"
    _gen(folder, src, out, "greedy", **FAST)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["records"] == len(src) and manifest["config"]["decode"]["method"] == "greedy"
    before = out.stat().st_mtime_ns

    calls = []
    summary = _gen(folder, src, out, "greedy", on_shard=lambda s, d: calls.append(s),
                              **FAST)
    assert summary["skipped"] and calls == [] and out.stat().st_mtime_ns == before

    with pytest.raises(UserError, match=r"was not made by this configuration.*overwrite=True"):
        _gen(folder, src, out, "beam", beam=2, **FAST)
    with pytest.raises(UserError, match=r"was not made by this configuration"):
        _gen(folder, src[:-1], out, "greedy", **FAST)  # other source lines
    summary = _gen(folder, src, out, "beam", beam=2, overwrite=True, **FAST)
    assert not summary["skipped"] and manifest_path(out).read_text() != json.dumps(manifest)

    out.write_text("edited by hand\n")
    with pytest.raises(UserError, match="was not made by this configuration"):
        _gen(folder, src, out, "beam", beam=2, **FAST)


def test_errors(teacher, tmp_path):
    folder, src = teacher
    with pytest.raises(UserError, match=r"needs a k-best format: write to a \.jsonl or \.tsv"):
        _gen(folder, src, tmp_path / "o.txt", "beam", num_return=2)
    with pytest.raises(UserError, match="'method': Input should be 'beam'.*got 'nucleus'"):
        _gen(folder, src, tmp_path / "o.txt", "nucleus")
    with pytest.raises(UserError, match="num_return 6 is larger than the beam 5"):
        _gen(folder, src, tmp_path / "o.jsonl", "beam", num_return=6)
    with pytest.raises(UserError, match="'top_p': Input should be less than or equal to 1"):
        _gen(folder, src, tmp_path / "o.txt", "topp", top_p=1.5)
    with pytest.raises(UserError, match="model folder .* does not exist"):
        _gen(tmp_path / "none", src, tmp_path / "o.txt")
    with pytest.raises(UserError, match=r"trained for en->de but the data is en->fr"):
        _gen(folder, src, tmp_path / "o.txt", src_lang="en", tgt_lang="fr")
    with pytest.raises(UserError, match="file not found"):
        _gen(folder, tmp_path / "missing.en", tmp_path / "o.txt")
    (tmp_path / "o.txt.parts").mkdir()
    (tmp_path / "o.txt.parts" / "mine").write_text("x")
    with pytest.raises(UserError, match="is not a shard folder"):
        _gen(folder, src, tmp_path / "o.txt", "greedy", **FAST)


def test_make_batches_and_shards():
    lengths = [5, 30, 7, 7, 12, 3, 30, 1]
    batches = length_batches(lengths, batch_tokens=40, longest_first=True)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(b) * max(lengths[i] for i in b) <= 40 or len(b) == 1 for b in batches)
    assert batches[:2] == [[1], [6]]  # 2 × 30 > 40
    assert [len(b) for b in length_batches(lengths, batch_size=3, longest_first=True)] == [3, 3, 2]
    # too long alone: its own batch
    assert length_batches([50], batch_tokens=10, longest_first=True) == [[0]]
    shards = plan_shards(length_batches(lengths, batch_size=2, longest_first=True), shard_size=3)
    assert [sum(len(b) for b in s) for s in shards] == [4, 4]
    with pytest.raises(UserError):
        length_batches(lengths, longest_first=True)


def _launch_script(tmp_path: Path, folder: Path, src: list[str]) -> Path:
    (tmp_path / "src.txt").write_text("".join(line + "\n" for line in src), encoding="utf-8")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, signal
        from textdistill.config import DecodeConfig
        from textdistill.seq2seq.generate import generate_corpus

        kill = int(os.environ.get("KILL_AFTER", "0"))

        def on_shard(shard, done):
            if done == kill:
                os.kill(os.getpid(), signal.SIGKILL)

        decode = DecodeConfig(method="topk", num_return=2, seed=3, max_len_a=1.0, max_len_b=4)
        generate_corpus({str(folder)!r}, {str(tmp_path / "src.txt")!r}, sys.argv[1], decode,
                        shard_size=6, batch_tokens=160, on_shard=on_shard)
        import torch.distributed as dist
        dist.destroy_process_group()  # as a script under accelerate launch should end
    """))
    return script


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO / "src")}


@pytest.mark.slow
def test_sigkill_and_resume(teacher, tmp_path):
    folder, src = teacher
    script = _launch_script(tmp_path, folder, src)
    out = tmp_path / "killed.jsonl"
    proc = subprocess.run([sys.executable, str(script), str(out)], env={**_env(),
                          "KILL_AFTER": "2"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9
    assert len(list((tmp_path / "killed.jsonl.parts").glob("shard-*.jsonl"))) == 2
    _gen(folder, tmp_path / "src.txt", out, "topk", num_return=2, seed=3, **FAST)
    full = tmp_path / "full.jsonl"
    _gen(folder, tmp_path / "src.txt", full, "topk", num_return=2, seed=3, **FAST)
    assert out.read_bytes() == full.read_bytes()


@pytest.mark.slow
def test_two_processes_with_accelerate(teacher, tmp_path):
    """``accelerate launch --multi_gpu`` on a CPU machine: torchrun + gloo, 2 processes."""
    folder, src = teacher
    script = _launch_script(tmp_path, folder, src)
    out2 = tmp_path / "two.jsonl"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", str(script), str(out2)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode and "Connection closed by peer" in proc.stderr:
        # gloo on a loaded machine, now and then (pytorch/pytorch#61670): the run resumes
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one.jsonl"
    _gen(folder, tmp_path / "src.txt", one, "topk", num_return=2, seed=3, **FAST)
    assert out2.read_bytes() == one.read_bytes()
    meta = json.loads(manifest_path(out2).read_text())
    assert meta["records"] == 2 * len(src)
