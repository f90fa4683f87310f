"""Masked language models: the candidate words of TinyBERT's data augmentation (``augment``).

``train-mlm`` gives an encoder a masked-LM head (an encoder without one, such as the packaged
all-MiniLM-L6-v2, gets a new one whose decoder is tied to the word embeddings) and trains it on
unlabeled text through the one :class:`~textdistill.trainer.Trainer`, with BERT's masking
(``transformers.DataCollatorForLanguageModeling``: 15% of the tokens, of them 80% [MASK], 10% a
random token, 10% unchanged). By default the encoder is frozen and only the head trains.
``max_eval_examples`` texts are held out; their masks are drawn once with the seed, so the
held-out masked-token accuracy (top-1 over the masked positions) is reproducible. The output
layer runs only at masked positions, in training and in evaluation.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from textdistill.config import TrainMLMConfig, save_config
from textdistill.data.batching import BatchedDataset, TextPieces, pad
from textdistill.data.corpora import split_heldout
from textdistill.errors import UserError
from textdistill.models.classifier import resolve_model_path
from textdistill.models.common import check_vocabulary, count_parameters, save_pretrained_atomic
from textdistill.paths import atomic_write_json
from textdistill.precision import default_device, prefer_eager_attention, resolve_precision
from textdistill.runs import training_record
from textdistill.trainer import PhaseSpec, Trainer


def check_mask_token(tokenizer, path: str | Path) -> None:
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer in {path} ({type(tokenizer).__name__}) has no mask token: "
                        "a masked language model needs one (BERT-style tokenizers have [MASK])")


def load_mlm(name: str, need_head: bool = False) -> tuple[torch.nn.Module, object, bool]:
    """A masked LM of the model folder ``name`` (or ``minilm``), its tokenizer, and whether its
    head is new (the folder had none: then it is initialised, its decoder tied to the word
    embeddings). ``need_head``: a folder without a trained head is an error."""
    path = resolve_model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer in {path}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    check_mask_token(tokenizer, path)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            path, use_safetensors=True, local_files_only=True, attn_implementation="sdpa",
            dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot load a masked language model from {path}: "
                        f"{' '.join(str(exc).split())[:300]}") from None
    check_vocabulary(path, tokenizer, model.get_input_embeddings().num_embeddings)
    prefix = f"{model.base_model_prefix}."
    new_head = any(not key.startswith(prefix) for key in info["missing_keys"])
    if new_head and need_head:
        raise UserError(f"{path} has no masked-LM head (architectures "
                        f"{model.config.architectures}): train one with 'textdistill train-mlm "
                        f"--model {name}' and give its model folder")
    return model, tokenizer, new_head


def output_layer(model: torch.nn.Module):
    """The masked-LM head as a function of hidden states (N, H) -> logits (N, V), or None for a
    model whose head this module does not know (its full forward pass is then used)."""
    return getattr(model, "cls", None)  # BERT-style *ForMaskedLM


def encoder_states(model: torch.nn.Module, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The last hidden states of the masked LM's encoder."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def masked_logits(model: torch.nn.Module, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None, select: torch.Tensor,
                  hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (N, V) at the positions ``select`` (a boolean (B, T) mask), row after row; the
    output layer runs only there."""
    head = output_layer(model)
    if head is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[select]
    if hidden is None:
        hidden = encoder_states(model, input_ids, attention_mask)
    return head(hidden[select])


class MaskedLMModule(torch.nn.Module):
    """The trainer's module: masked-LM cross-entropy over the masked positions of a batch. With
    a frozen encoder, the encoder runs without gradients and without dropout."""

    def __init__(self, model: torch.nn.Module, train_encoder: bool):
        super().__init__()
        self.model = model
        self.train_encoder = train_encoder
        if not train_encoder:
            for param in model.base_model.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> MaskedLMModule:
        super().train(mode)
        if not self.train_encoder:
            self.model.base_model.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor], phase: int = 0) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        select = labels != -100
        hidden = None
        if output_layer(self.model) is not None:
            with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
                hidden = encoder_states(self.model, batch["input_ids"], batch["attention_mask"])
        logits = masked_logits(self.model, batch["input_ids"], batch["attention_mask"], select,
                               hidden)
        if logits.shape[0] == 0:  # no token of the batch was masked: nothing to learn
            return {"loss": logits.float().sum()}
        return {"loss": F.cross_entropy(logits.float(), labels[select])}


def masker(tokenizer, probability: float, seed: int | None = None
           ) -> DataCollatorForLanguageModeling:
    """BERT's masking; with ``seed``, from a private generator, else from torch's global one
    (which the trainer's checkpoints restore, so a resumed run masks as an uninterrupted one)."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
    if seed is not None:
        collator.generator = torch.Generator().manual_seed(seed)
    return collator


def mask_batch(collator: DataCollatorForLanguageModeling, rows: list[list[int]],
               special: set[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded ids of ``rows`` masked by ``collator`` (special tokens and padding never), their
    attention mask and labels (-100 where not masked)."""
    ids, attention = pad(rows, pad_id)
    keep = (attention == 0) | torch.isin(ids, torch.tensor(sorted(special), dtype=torch.long))
    ids, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=keep)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


class MaskedTextPieces(TextPieces):
    """Text pieces masked afresh in every batch (training)."""

    def __init__(self, texts, tokenizer, max_length: int, probability: float):
        super().__init__(texts, tokenizer, max_length)
        self.collator = masker(tokenizer, probability)
        self.special = set(tokenizer.all_special_ids)

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return mask_batch(self.collator, rows, self.special, self.pad_id)


class FixedMaskedPieces(BatchedDataset):
    """Text pieces masked once, each on its own in order by one seeded generator, so the masks
    do not depend on batching (held-out evaluation)."""

    def __init__(self, pieces: TextPieces, tokenizer, probability: float, seed: int):
        collator = masker(tokenizer, probability, seed)
        special = set(tokenizer.all_special_ids)
        self.pad_id = pieces.pad_id
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        for row in pieces.input_ids:
            masked = mask_batch(collator, [row], special, self.pad_id)
            self.input_ids.append(masked["input_ids"][0].tolist())
            self.labels.append(masked["labels"][0].tolist())

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.input_ids[i], self.labels[i]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def masked_tokens(self) -> int:
        return sum(label != -100 for row in self.labels for label in row)

    def collate(self, rows: list[tuple]) -> dict[str, torch.Tensor]:
        ids, attention = pad([r[0] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": attention,
                "labels": pad([r[1] for r in rows], -100)[0]}


@torch.no_grad()
def masked_accuracy(model: torch.nn.Module, data: FixedMaskedPieces, batch_size: int
                    ) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over the masked positions of ``data``."""
    device = next(model.parameters()).device
    correct = total = 0
    loss = 0.0
    for batch in data.loader(batch_size, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        select = batch["labels"] != -100
        logits = masked_logits(model, batch["input_ids"], batch["attention_mask"], select).float()
        labels = batch["labels"][select]
        correct += int((logits.argmax(-1) == labels).sum())
        total += labels.numel()
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    if total == 0:
        raise UserError("the held-out text has no masked token: hold out more text "
                        "(data.max_eval_examples)")
    return {"accuracy": correct / total, "loss": loss / total}


def run_train_mlm(cfg: TrainMLMConfig, out_dir: str | Path, resume: bool = False) -> dict:
    """Train a masked-LM head (and, with ``train_encoder``, the encoder) on ``cfg.data``:
    ``out_dir/model`` (an ordinary Hugging Face masked-LM folder, the best on the held-out
    text) and ``metrics.json`` (its held-out masked-token accuracy, ``heldout_accuracy``)."""
    out_dir = Path(out_dir)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, tokenizer, new_head = load_mlm(cfg.model)
    train_texts, held_texts = split_heldout(cfg.data, cfg.seed)
    train = MaskedTextPieces(train_texts, tokenizer, cfg.data.max_length, cfg.mlm_probability)
    held = FixedMaskedPieces(TextPieces(held_texts, tokenizer, cfg.data.max_length), tokenizer,
                             cfg.mlm_probability, cfg.seed)
    module = MaskedLMModule(model, cfg.train_encoder)
    save_config(cfg, out_dir / "config.yaml")
    precision = resolve_precision(cfg.precision, default_device())
    if cfg.train_encoder:
        prefer_eager_attention(model, precision, default_device())
    trainer = Trainer(
        module, train, cfg.data.batch_size, [PhaseSpec("mlm", cfg.epochs, cfg.optim)], out_dir,
        evaluate_fn=lambda m: masked_accuracy(m.model, held, cfg.data.batch_size),
        save_fn=lambda m, folder: save_pretrained_atomic(m.model, tokenizer, folder),
        select_metric="accuracy", seed=cfg.seed, run_config=training_record(cfg),
        precision=precision)
    summary = trainer.train(resume=resume)
    summary.update({
        "heldout_accuracy": summary["best_dev"].get("accuracy"),
        "heldout_texts": len(held_texts), "heldout_pieces": len(held),
        "heldout_masked_tokens": held.masked_tokens(),
        "train_texts": len(train_texts), "train_pieces": len(train),
        "head": "new" if new_head else "loaded", "train_encoder": cfg.train_encoder,
        "trained_params": count_parameters(module)["params"],
    })
    if trainer.is_main:
        atomic_write_json(out_dir / "metrics.json", summary)
    return summary
