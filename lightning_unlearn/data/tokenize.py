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

A third layout holds **question–answer** records (:func:`encode_qa`, :func:`qa_documents`): one
row per record, ``prompt + answer + eos``, with ``prompt_len`` (the number of prompt tokens) so
that :class:`PadCollator` gives the prompt's tokens label ``-100``: only the answer (and its EOS)
is a target, as in TOFU and MUSE.

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
    "encode_qa",
    "qa_documents",
    "zlib_length",
    "PadCollator",
    "QA_FORMAT_VERSION",
]

#: bump when :func:`encode_qa`'s layout changes (part of the data module's cache key)
QA_FORMAT_VERSION = 1

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
    prompt_tokens: int = 0
    truncated: int = 0


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


def _prompt_texts(tokenizer, questions: Sequence[str], system_prompt: str | None) -> list[str]:
    """The prompt of each question as text: the chat template's, or the question itself."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        head = "" if system_prompt is None else system_prompt + "\n\n"
        return [head + q for q in questions]
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return [
        tokenizer.apply_chat_template(
            [*system, {"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in questions
    ]


def _encode_qa_batch(
    tokenizer,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    max_length: int,
    system_prompt: str | None = None,
) -> list[tuple[list[int], int, bool]]:
    """``(ids, prompt_len, truncated)`` of each record (see :func:`encode_qa`)."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = _prompt_texts(tokenizer, questions, system_prompt)
    if chat:
        prefix: list[int] = []  # the template writes its own special tokens (BOS...)
        answer_texts = list(answers)
    else:
        prefix = special_prefix(tokenizer)
        answer_texts = [a if a[:1].isspace() else " " + a for a in answers]
    prompt_ids, _ = _tokenize(tokenizer, prompts)
    answer_ids, _ = _tokenize(tokenizer, answer_texts)
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    out = []
    for question, p_ids, a_ids in zip(questions, prompt_ids, answer_ids):
        prompt = prefix + p_ids
        room = max_length - len(prompt)
        if room < 1:
            raise ValueError(
                f"the prompt of question {question[:60]!r} is {len(prompt)} tokens, leaving no "
                f"room for its answer in max_length={max_length}; raise max_length (prompts are "
                "never truncated)"
            )
        target = a_ids + eos
        out.append((prompt + target[:room], len(prompt), len(target) > room))
    return out


def encode_qa(
    tokenizer,
    question: str,
    answer: str,
    *,
    max_length: int,
    system_prompt: str | None = None,
) -> tuple[list[int], int]:
    """Token ids of ``prompt + answer + eos`` and the number of prompt tokens.

    With a chat template (``tokenizer.chat_template``) the prompt is the template applied to the
    user message ``question`` (after a system message ``system_prompt``, if given) with
    ``add_generation_prompt=True``, tokenised without adding special tokens (the template writes
    its own, as ``apply_chat_template(..., tokenize=True)`` does). Without one, the prompt is the
    tokenizer's special prefix (e.g. BOS) and ``question`` (preceded by ``system_prompt`` and a
    blank line, if given), and the answer is preceded by a space.

    The prompt and the answer are tokenised separately and their ids concatenated, so the
    prompt/answer boundary is exact: ``ids[:prompt_len]`` are the prompt's tokens and every later
    token belongs to the answer (tokenising the joined text could merge a token across the
    boundary). The answer ends with the tokenizer's EOS token (for chat models usually the
    end-of-turn token); the answer is cut so the whole fits ``max_length``, and a cut answer
    has no EOS (it did not end there). The prompt is never cut.

    Raises:
        ValueError: the prompt alone leaves no room for an answer token in ``max_length``.
    """
    ids, prompt_len, _ = _encode_qa_batch(
        tokenizer, [question], [answer], max_length=max_length, system_prompt=system_prompt
    )[0]
    return ids, prompt_len


def qa_documents(
    tokenizer,
    records: Sequence,
    *,
    max_length: int,
    system_prompt: str | None = None,
) -> tuple[dict[str, list], ChunkStats]:
    """One row per question–answer record, encoded by :func:`encode_qa`.

    ``records`` are :class:`~lightning_unlearn.data.sources.QARecord` s (or ``(question, answer)``
    pairs). Returns the columns of :func:`chunk_documents` -- ``input_ids``, ``text`` (the answer,
    as far as it was kept), ``doc_index`` (the record's index), ``num_tokens`` (the answer's
    tokens, the targets) and ``zlib_len`` (of ``text``) -- plus ``prompt_len``, and counts. No
    record is dropped: a short answer ("Paris") is still a question.
    """
    pairs = [(r.question, r.answer) if hasattr(r, "question") else tuple(r) for r in records]
    encoded = _encode_qa_batch(
        tokenizer,
        [q for q, _ in pairs],
        [a for _, a in pairs],
        max_length=max_length,
        system_prompt=system_prompt,
    )
    cols: dict[str, list] = {
        k: [] for k in ("input_ids", "text", "doc_index", "num_tokens", "zlib_len", "prompt_len")
    }
    stats = ChunkStats(documents=len(pairs))
    for index, ((_, answer), (ids, prompt_len, truncated)) in enumerate(zip(pairs, encoded)):
        n = len(ids) - prompt_len
        if truncated:
            text = tokenizer.decode(ids[prompt_len:], skip_special_tokens=False).strip()
            stats.truncated += 1
        else:
            text = answer
        cols["input_ids"].append(ids)
        cols["text"].append(text)
        cols["doc_index"].append(index)
        cols["num_tokens"].append(n)
        cols["zlib_len"].append(zlib_length(text))
        cols["prompt_len"].append(prompt_len)
        stats.chunks += 1
        stats.tokens += n
        stats.prompt_tokens += prompt_len
    return cols, stats


class PadCollator:
    """Right-pad a list of windows into a batch (picklable, for DataLoader workers).

    ``labels`` equal ``input_ids`` with ``-100`` on padding; ``attention_mask`` is 0 on padding.
    Rows of question–answer records carry ``prompt_len``: their first ``prompt_len`` labels are
    ``-100`` too, so only answer tokens are targets (in training and in evaluation). Training rows
    of a source with ``parts`` carry ``part``, and unpacked training rows ``doc_index`` (the
    window's document), passed on as LongTensors.
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
        ignore = attention == 0
        if "prompt_len" in rows[0]:
            prompt_len = torch.tensor([int(r.get("prompt_len") or 0) for r in rows])
            ignore |= torch.arange(width)[None, :] < prompt_len[:, None]
        batch: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": input_ids.masked_fill(ignore, IGNORE_INDEX),
        }
        if packed:
            batch["position_ids"] = position_ids
        if "part" in rows[0]:  # training windows of a source with parts: which part
            batch["part"] = torch.tensor([int(r["part"]) for r in rows], dtype=torch.long)
        if "doc_index" in rows[0]:  # the document of each window (not of packed windows)
            batch["doc_index"] = torch.tensor([int(r["doc_index"]) for r in rows], dtype=torch.long)
        if self.split is not None:
            batch["split"] = self.split
            batch["zlib_len"] = torch.tensor([int(r["zlib_len"]) for r in rows], dtype=torch.long)
            if "window_index" in rows[0]:
                batch["window_index"] = torch.tensor(
                    [int(r["window_index"]) for r in rows], dtype=torch.long
                )
        return batch
