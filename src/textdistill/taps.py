"""Read pre-softmax attention scores (and the queries, keys and values behind them) from
unmodified Hugging Face encoders with forward hooks.

The hooks capture the outputs of each self-attention layer's query, key and value
projections, so they work with every attention implementation (eager, sdpa, flash),
including those that return no attention weights. Scores are rebuilt as Q K^T / sqrt(d_head)
without the mask.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from textdistill.errors import UserError

# (query, key, value) child-module names, in lookup order: BERT-like, BART/OPT-like, DistilBERT.
QKV_NAMES: tuple[tuple[str, str, str], ...] = (
    ("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))
# Module-name fragments of cross-attention blocks, which are not tapped.
_CROSS_HINTS = ("crossattention", "cross_attn", "encoder_attn")
# Config fields that mean positions are mixed into Q/K after the projection (rotary).
_ROTARY_FIELDS = ("rope_parameters", "rope_theta", "rope_scaling", "rotary_dim", "rotary_pct")


def hidden_states(outputs: Any) -> tuple[Tensor, ...]:
    """Return ``outputs.hidden_states`` (embeddings first), or raise if it was not requested."""
    states = getattr(outputs, "hidden_states", None)
    if not states:
        raise UserError(
            "the model output has no hidden states; call the model with output_hidden_states=True"
        )
    return tuple(states)


def _find_qkv(model: nn.Module) -> list[tuple[str, nn.Linear, nn.Linear, nn.Linear]]:
    found: list[tuple[str, nn.Linear, nn.Linear, nn.Linear]] = []
    for name, module in model.named_modules():
        if any(hint in name.lower() for hint in _CROSS_HINTS):
            continue
        children = module._modules
        for names in QKV_NAMES:
            q, k, v = (children.get(n) for n in names)
            if all(isinstance(m, nn.Linear) for m in (q, k, v)):
                found.append((name, q, k, v))
                break
    return found


def _is_rotary(config: Any) -> bool:
    if getattr(config, "model_type", None) == "roformer":
        return True
    if getattr(config, "position_embedding_type", None) == "rotary":
        return True
    return any(getattr(config, field, None) for field in _ROTARY_FIELDS)


class AttentionTap:
    """Capture every self-attention layer's pre-softmax scores (:meth:`scores`) and its
    queries, keys and values (:meth:`qkv`) during a forward pass.

    Usage::

        with AttentionTap(model) as tap:
            model(**batch)
            scores = tap.scores()  # list of (B, H, L, L), one per layer, in depth order

    Captures are reset automatically at the start of each forward of ``model`` and by
    :meth:`clear`. Gradients flow through the scores when the forward ran with grad enabled.
    Call :meth:`scores` before ``backward``: gradient checkpointing re-runs layers during
    backward and would add captures.
    """

    def __init__(self, model: nn.Module) -> None:
        cls = type(model).__name__
        config = getattr(model, "config", None)
        if config is None:
            raise UserError(
                f"{cls} has no .config; attention taps need a Hugging Face model whose config "
                "gives num_attention_heads and hidden_size"
            )
        if _is_rotary(config):
            raise UserError(
                f"{cls} uses rotary position embeddings, applied after the query/key "
                "projections, so its attention scores cannot be tapped; disable attention "
                "distillation for this model"
            )
        found = _find_qkv(model)
        if not found:
            expected = ", ".join("/".join(names) for names in QKV_NAMES)
            raise UserError(
                f"no self-attention query/key/value Linear modules found in {cls} (expected "
                f"child modules named {expected}); disable attention distillation for this model"
            )
        num_heads = getattr(config, "num_attention_heads", None)
        if not isinstance(num_heads, int) or num_heads < 1:
            raise UserError(
                f"{cls}.config has no valid num_attention_heads ({num_heads!r}); "
                "attention taps need the head count from the model config"
            )
        head_dim = getattr(config, "head_dim", None)
        if not isinstance(head_dim, int) or head_dim < 1:
            hidden = getattr(config, "hidden_size", None)
            if not isinstance(hidden, int) or hidden % num_heads:
                raise UserError(
                    f"{cls}.config has hidden_size {hidden!r}, not a multiple of "
                    f"num_attention_heads {num_heads}; cannot derive the attention head size"
                )
            head_dim = hidden // num_heads

        self.model_class = cls
        self.num_heads: int = num_heads
        self.head_dim: int = head_dim
        # Score tensors per forward: one per attention module, unless modules are reused
        # across layers (ALBERT), in which case the config's layer count.
        depth = getattr(config, "num_hidden_layers", None)
        shared = isinstance(depth, int) and depth > len(found) and depth % len(found) == 0
        self.num_layers: int = depth if shared else len(found)
        self.module_names: list[str] = [name for name, *_ in found]
        self._pending: list[dict[str, Tensor]] = [{} for _ in found]
        self._triples: list[tuple[Tensor, Tensor, Tensor]] = []
        self._handles: list[RemovableHandle] = []
        for idx, (_, *projections) in enumerate(found):
            for kind, module in zip("qkv", projections, strict=True):
                self._handles.append(module.register_forward_hook(self._hook(idx, kind)))
        self._handles.append(model.register_forward_pre_hook(self._on_model_forward))

    def _hook(self, idx: int, kind: str):
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            slot = self._pending[idx]
            slot[kind] = output
            if len(slot) == 3:
                self._triples.append((slot.pop("q"), slot.pop("k"), slot.pop("v")))

        return hook

    def _on_model_forward(self, _module: nn.Module, _inputs: Any) -> None:
        self.clear()

    def clear(self) -> None:
        """Drop captured tensors (and the graphs they hold)."""
        self._triples.clear()
        for slot in self._pending:
            slot.clear()

    def remove(self) -> None:
        """Remove all hooks and drop captures; the model is left as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> AttentionTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _split(self, x: Tensor, what: str) -> Tensor:
        if x.dim() != 3 or x.shape[-1] % self.head_dim:
            raise UserError(
                f"{self.model_class} {what} projection output has shape {tuple(x.shape)}, not "
                f"(batch, length, heads * {self.head_dim}); this model is not supported by taps"
            )
        b, length, width = x.shape
        return x.view(b, length, width // self.head_dim, self.head_dim).transpose(1, 2)

    def qkv(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """(Q, K, V) per layer, each (B, H, L, d_head); key and value heads shared by several
        query heads (grouped-query attention) are repeated to one per query head."""
        out = []
        for q_raw, k_raw, v_raw in self._triples:
            q = self._split(q_raw, "query")
            if q.shape[1] != self.num_heads:
                raise UserError(
                    f"{self.model_class} query has {q.shape[1]} heads but config says "
                    f"{self.num_heads}; this model is not supported by taps"
                )
            k, v = self._split(k_raw, "key"), self._split(v_raw, "value")
            if k.shape[1] != q.shape[1]:  # grouped-query attention: share key/value heads
                if q.shape[1] % k.shape[1]:
                    raise UserError(
                        f"{self.model_class} has {q.shape[1]} query heads and {k.shape[1]} key "
                        "heads; this model is not supported by taps"
                    )
                k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
            out.append((q, k, v))
        return out

    def scores(self) -> list[Tensor]:
        """Pre-softmax scores Q K^T / sqrt(d_head), (B, H, L, L) per layer, mask not added."""
        return [torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
                for q, k, _ in self.qkv()]
