"""Numeric precision of training, teacher passes, decoding and evaluation.

``auto`` picks bf16 where the hardware computes it natively (CPUs with AVX512-BF16 or AMX,
GPUs that support it) and fp32 elsewhere. In training, bf16 and fp16 run the forward passes
under ``torch.autocast``; weights, optimizer state and the losses stay fp32 and saved models
are ordinary fp32 folders. Inference (evaluation, decoding) casts the weights once instead
(:func:`for_inference`).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path

import torch

from textdistill.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"the GPU {torch.cuda.get_device_name(device)}"
    return "this CPU"


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (``config.Precision``) on ``device``;
    a one-line UserError for a precision the hardware cannot run."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    bf16 = torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()
    if precision == "auto":
        return "bf16" if bf16 else "fp32"
    if precision == "bf16" and not bf16:
        raise UserError(f"precision bf16: {_hardware(device)} has no native bf16 arithmetic "
                        "(no AVX512-BF16 or AMX): use precision auto or fp32")
    if precision == "fp16" and not cuda:
        raise UserError("precision fp16 needs a CUDA GPU; on a CPU use precision auto (bf16 "
                        "where supported) or fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return precision


def default_device() -> torch.device:
    """The device stages run on: the GPU when there is one (as Accelerate picks it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(precision: str, device: torch.device | str = "cpu") -> AbstractContextManager:
    """Forward passes in ``precision`` (a resolved one) on ``device``; fp32: no change."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def for_inference(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """``model`` with its weights cast once, in place, to ``precision`` (a resolved one) for
    inference without autocast; fp32: unchanged. Under autocast every forward casts the weights
    and the activations between fp32 and bf16 again, which at batch 1 on a CPU costs more than
    bf16 saves (decoding ran 1.3-2.7x slower than in fp32); weights cast once run about as fast
    as fp32 at batch 1 and faster in batches, with the same BLEU (docs/benchmarks.md)."""
    if precision != "fp32":
        model.to(DTYPES[precision])
    return model


def full_precision(device: torch.device | str = "cpu") -> AbstractContextManager:
    """fp32 inside an autocast region (for the losses)."""
    return torch.autocast(torch.device(device).type, enabled=False)


def prefer_eager_attention(model, precision: str, device: torch.device | str = "cpu") -> None:
    """Train a Hugging Face model with eager attention under bf16 on a CPU: there PyTorch's
    SDPA backward (flash attention for CPU) is the slowest part of the step (figures:
    ``benchmarks/bench_precision.py``, docs/benchmarks.md)."""
    if (precision == "bf16" and torch.device(device).type == "cpu"
            and hasattr(model, "set_attn_implementation")):
        model.set_attn_implementation("eager")
