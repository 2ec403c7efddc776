"""Documents to fixed-size token windows, and windows to padded batches.

Two layouts (Yao et al. 2024 chunk documents into 4096-token windows and drop chunks of fewer than
5 tokens):

* **chunking** (:func:`chunk_documents`): every document is tokenised on its own and cut into
  windows of at most ``max_length`` tokens. No window crosses a document boundary. Each window
  starts with the special tokens the tokenizer puts in front of a text (e.g. Llama's BOS); the
  remaining ``max_length - len(prefix)`` places hold document tokens. Windows with fewer than
  ``min_chunk_tokens`` document tokens are dropped (usually a document's short tail).
* **packing** (:func:`pack_documents`): documents are laid end to end as
  ``prefix + document + eos`` and the stream is cut into windows of exactly ``max_length`` tokens
  (the last one may be shorter; dropped below ``min_chunk_tokens``). No padding is needed.
  ``position_ids`` restart at 0 where a document starts and at the start of each window, so
  attention implementations that read packed sequences from ``position_ids`` (flash-attention
  in transformers) do not attend across documents; other implementations do.

Every window keeps the text it was made from (``text``; for chunks, the exact slice of the
document, so the chunks of a document concatenate back to it; for packed windows, the full texts
of the documents the window touches, joined by the EOS token) and ``zlib_len``, the length in
bytes of ``zlib.compress(text.encode("utf-8"))`` used by the zlib membership-inference score.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..losses import IGNORE_INDEX

__all__ = [
    "special_prefix",
    "chunk_documents",
    "pack_documents",
    "zlib_length",
    "PadCollator",
]

_TOKENIZE_BATCH = 256


def zlib_length(text: str) -> int:
    """Length in bytes of ``zlib.compress(text.encode("utf-8"))``."""
    return len(zlib.compress(text.encode("utf-8")))


def special_prefix(tokenizer) -> list[int]:
    """Token ids the tokenizer puts before a text when asked to add special tokens (e.g. BOS)."""
    probe = "a b"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def _tokenize(tokenizer, texts: Sequence[str]) -> tuple[list[list[int]], list[list[tuple]] | None]:
    """Token ids (no special tokens) and, for fast tokenizers, character offsets per token."""
    fast = bool(getattr(tokenizer, "is_fast", False))
    ids: list[list[int]] = []
    offsets: list[list[tuple]] | None = [] if fast else None
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        part = list(texts[start : start + _TOKENIZE_BATCH])
        enc = tokenizer(
            part,
            add_special_tokens=False,
            return_offsets_mapping=fast,
            return_attention_mask=False,
            verbose=False,
        )
        ids.extend(list(x) for x in enc["input_ids"])
        if fast:
            offsets.extend(enc["offset_mapping"])
    return ids, offsets


def _slice_texts(
    tokenizer, text: str, ids: list[int], offsets: list[tuple] | None, bounds: list[int]
) -> list[str]:
    """Text of each window ``ids[bounds[k]:bounds[k+1]]``: contiguous slices of ``text``."""
    if offsets is None or len(offsets) != len(ids):
        return [
            tokenizer.decode(ids[a:b], skip_special_tokens=False)
            for a, b in zip(bounds, bounds[1:])
        ]
    cuts = [0] + [offsets[b][0] for b in bounds[1:-1]] + [len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


@dataclass
class ChunkStats:
    """What chunking did: counts for the log."""

    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    dropped_chunks: int = 0
    dropped_tokens: int = 0


def chunk_documents(
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    min_chunk_tokens: int = 5,
) -> tuple[dict[str, list], ChunkStats]:
    """Cut each document into windows of at most ``max_length`` tokens (see the module doc).

    Returns columns ``input_ids``, ``text``, ``doc_index``, ``num_tokens`` (document tokens in the
    window, without the prefix) and ``zlib_len``, plus counts.
    """
    prefix = special_prefix(tokenizer)
    room = max_length - len(prefix)
    if room < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for text after the tokenizer's "
            f"{len(prefix)} special prefix token(s); raise max_length"
        )
    all_ids, all_offsets = _tokenize(tokenizer, texts)
    cols: dict[str, list] = {
        k: [] for k in ("input_ids", "text", "doc_index", "num_tokens", "zlib_len")
    }
    stats = ChunkStats(documents=len(texts))
    for doc, (text, ids) in enumerate(zip(texts, all_ids)):
        offsets = all_offsets[doc] if all_offsets is not None else None
        bounds = list(range(0, len(ids), room)) + [len(ids)]
        pieces = _slice_texts(tokenizer, text, ids, offsets, bounds)
        for (a, b), piece in zip(zip(bounds, bounds[1:]), pieces):
            n = b - a
            if n < min_chunk_tokens:
                stats.dropped_chunks += 1
                stats.dropped_tokens += n
                continue
            cols["input_ids"].append(prefix + ids[a:b])
            cols["text"].append(piece)
            cols["doc_index"].append(doc)
            cols["num_tokens"].append(n)
            cols["zlib_len"].append(zlib_length(piece))
            stats.chunks += 1
            stats.tokens += n
    return cols, stats


def pack_documents(
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    min_chunk_tokens: int = 5,
    eos_token_id: int,
) -> tuple[dict[str, list], ChunkStats]:
    """Lay documents end to end (``prefix + doc + eos``) and cut into ``max_length`` windows.

    Returns columns ``input_ids``, ``position_ids``, ``text``, ``doc_index`` (the first document
    in the window), ``num_tokens`` and ``zlib_len``, plus counts.
    """
    prefix = special_prefix(tokenizer)
    all_ids, all_offsets = _tokenize(tokenizer, texts)
    eos_text = tokenizer.convert_ids_to_tokens(eos_token_id) or ""
    stream: list[int] = []
    positions: list[int] = []
    owner: list[int] = []
    for doc, ids in enumerate(all_ids):
        seq = prefix + ids + [eos_token_id]
        stream.extend(seq)
        positions.extend(range(len(seq)))
        owner.extend([doc] * len(seq))
    cols: dict[str, list] = {
        k: [] for k in ("input_ids", "position_ids", "text", "doc_index", "num_tokens", "zlib_len")
    }
    stats = ChunkStats(documents=len(texts))
    for a in range(0, len(stream), max_length):
        b = min(a + max_length, len(stream))
        n = b - a
        if n < min_chunk_tokens:
            stats.dropped_chunks += 1
            stats.dropped_tokens += n
            continue
        window_pos = positions[a:b]
        # restart positions at the window start, keep restarts at document starts
        offset = window_pos[0]
        fixed, shift = [], offset
        for p in window_pos:
            if p == 0:
                shift = 0
            fixed.append(p - shift)
        docs = sorted(set(owner[a:b]))
        text = eos_text.join(texts[d] for d in docs)
        cols["input_ids"].append(stream[a:b])
        cols["position_ids"].append(fixed)
        cols["text"].append(text)
        cols["doc_index"].append(owner[a])
        cols["num_tokens"].append(n)
        cols["zlib_len"].append(zlib_length(text))
        stats.chunks += 1
        stats.tokens += n
    return cols, stats


class PadCollator:
    """Right-pad a list of windows into a batch (picklable, for DataLoader workers).

    ``labels`` equal ``input_ids`` with ``-100`` on padding; ``attention_mask`` is 0 on padding.
    With ``split`` set (evaluation), the batch also carries ``"split": split`` and ``zlib_len``,
    ``doc_index`` and (when the rows have it) ``window_index`` as LongTensors.

    Args:
        pad_token_id: id written into padded positions (never a target: labels are -100 there).
        split: evaluation split name, or ``None`` for training batches.
    """

    def __init__(self, pad_token_id: int, split: str | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.split = split

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        size = len(rows)
        input_ids = torch.full((size, width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((size, width), dtype=torch.long)
        packed = "position_ids" in rows[0]
        position_ids = torch.zeros((size, width), dtype=torch.long) if packed else None
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            input_ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            attention[i, :n] = 1
            if packed:
                position_ids[i, :n] = torch.as_tensor(r["position_ids"], dtype=torch.long)
                # padded positions continue counting so they stay valid positions
                if n < width:
                    start = int(position_ids[i, n - 1]) + 1
                    position_ids[i, n:] = torch.arange(start, start + width - n)
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": input_ids.masked_fill(attention == 0, IGNORE_INDEX),
        }
        if packed:
            batch["position_ids"] = position_ids
        if self.split is not None:
            batch["split"] = self.split
            batch["zlib_len"] = torch.tensor([int(r["zlib_len"]) for r in rows], dtype=torch.long)
            batch["doc_index"] = torch.tensor([int(r["doc_index"]) for r in rows], dtype=torch.long)
            if "window_index" in rows[0]:
                batch["window_index"] = torch.tensor(
                    [int(r["window_index"]) for r in rows], dtype=torch.long
                )
        return batch
