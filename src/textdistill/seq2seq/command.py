"""The ``generate`` command (the main CLI registers it, e.g. ``app.command("generate")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from textdistill.clitools import user_errors


@user_errors
def generate_command(
    model: Annotated[Path, typer.Option("--model", help="Teacher folder (model + tokenizer).")],
    src: Annotated[Path, typer.Option("--src", help="Source sentences, one per line (UTF-8).")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Output: .jsonl or .tsv for k-best lists, else one per line."),
    ],
    method: Annotated[
        str, typer.Option("--method", help="beam, greedy, sample, topk or topp.")
    ] = "beam",
    beam: Annotated[int, typer.Option("--beam", help="Beam size (method beam).")] = 5,
    num_return: Annotated[
        int, typer.Option("--num-return", help="Hypotheses per sentence (k-best / samples).")
    ] = 1,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Sampling temperature.")
    ] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="k of method topk.")] = 10,
    top_p: Annotated[float, typer.Option("--top-p", help="p of method topp.")] = 0.9,
    length_penalty: Annotated[
        float, typer.Option("--length-penalty", help="Beam score: logprob / length^this.")
    ] = 1.0,
    batch_tokens: Annotated[
        int, typer.Option("--batch-tokens", help="Padded source tokens per batch.")
    ] = 4096,
    max_length: Annotated[
        int, typer.Option("--max-length", help="Most output tokens per sentence (</s> included).")
    ] = 256,
    max_len_a: Annotated[
        float, typer.Option("--max-len-a", help="Output cap a·source_tokens + b: a.")
    ] = 1.5,
    max_len_b: Annotated[int, typer.Option("--max-len-b", help="Output cap: b.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (per shard).")] = 0,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Sentences per resumable shard.")
    ] = 1000,
    src_lang: Annotated[
        str | None, typer.Option("--src-lang", help="Check the teacher's source language.")
    ] = None,
    tgt_lang: Annotated[
        str | None, typer.Option("--tgt-lang", help="Check the teacher's target language.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an output made with other settings.")
    ] = False,
) -> None:
    """Translate a corpus with a teacher (sequence-level KD data); resumable, multi-process."""
    from textdistill.seq2seq.generate import generate_corpus

    summary = generate_corpus(
        model,
        src,
        out,
        method,
        beam=beam,
        num_return=num_return,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        length_penalty=length_penalty,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        max_length=max_length,
        seed=seed,
        batch_tokens=batch_tokens,
        shard_size=shard_size,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        overwrite=overwrite,
    )
    from textdistill.seq2seq.generate import _process_state

    if _process_state().is_main_process:
        if summary["skipped"]:
            typer.echo(f"{out} is already complete ({summary['lines']} lines): skipped", err=True)
        else:
            rate = summary["lines"] / max(summary["seconds"], 1e-9)
            typer.echo(
                f"wrote {out}: {summary['lines']} lines, {summary['records']} hypotheses, "
                f"{summary['shards']} shards ({summary['shards_done_now']} decoded now), "
                f"{summary['seconds']:.1f} s, {rate:.1f} sentences/s",
                err=True,
            )
