"""Per-document token statistics: what every token metric reads.

An evaluation pass runs each window of a split through the model once and keeps, for every real
target token, the statistics of :func:`~lightning_unlearn.losses.token_statistics` (log-probability
of the true token, mean and spread of the model's own log-probabilities, whether the argmax was
right). :class:`DocumentCollector` gathers them per window on each process, and ``documents()``
joins the windows of a document (``doc_index``, in window order) after gathering every process's
share, so a document that spans several windows is one document and every process sees the same
documents in the same order: metrics computed from them agree on one process and on many.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["SplitDocuments", "DocumentCollector", "padded"]

#: the per-token statistics a collector keeps (``mask`` selects the real target positions)
TOKEN_FIELDS = ("logprob", "mu", "sigma", "correct")


@dataclass
class SplitDocuments:
    """The documents of one evaluation split, each a 1-D tensor per statistic (its target tokens).

    Attributes:
        split: the split's name (``forget``, ``approximate``, ...).
        doc_index: each document's index in its source (the order of everything else).
        logprob / mu / sigma / correct: per document, the statistic at each target token.
        zlib_len: per document, zlib-compressed bytes of its text (summed over its windows), or
            ``None`` when the batches did not carry ``zlib_len``.
    """

    split: str
    doc_index: list[int] = field(default_factory=list)
    logprob: list[Tensor] = field(default_factory=list)
    mu: list[Tensor] = field(default_factory=list)
    sigma: list[Tensor] = field(default_factory=list)
    correct: list[Tensor] = field(default_factory=list)
    zlib_len: list[int] | None = None
    #: per document, the model's last hidden state at each target position (``[tokens, hidden]``),
    #: collected only for splits a metric asks for (``TokenMetric.hidden_splits``)
    hidden: list[Tensor] = field(default_factory=list)
    #: per document, the target token ids (collected with the hidden states)
    targets: list[Tensor] = field(default_factory=list)
    #: the model's output projection (``[vocab, hidden]``) when hidden states were collected
    output_weight: Tensor | None = None

    def __len__(self) -> int:
        return len(self.doc_index)

    @property
    def tokens(self) -> int:
        """Target tokens over all documents."""
        return int(sum(t.numel() for t in self.logprob))

    def without(self, doc_indices) -> SplitDocuments:
        """These documents minus those whose ``doc_index`` is in ``doc_indices``."""
        drop = {int(i) for i in doc_indices}
        keep = [i for i, d in enumerate(self.doc_index) if d not in drop]
        out = SplitDocuments(self.split, output_weight=self.output_weight)
        out.doc_index = [self.doc_index[i] for i in keep]
        for name in ("logprob", "mu", "sigma", "correct", "hidden", "targets"):
            values = getattr(self, name)
            setattr(out, name, [values[i] for i in keep] if values else [])
        out.zlib_len = None if self.zlib_len is None else [self.zlib_len[i] for i in keep]
        return out


def padded(values: list[Tensor], *, fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack ragged 1-D tensors into ``[documents, longest]`` with a mask of real entries."""
    if not values:
        return torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.bool)
    width = max(1, max(v.numel() for v in values))
    out = torch.full((len(values), width), fill, dtype=values[0].dtype)
    mask = torch.zeros((len(values), width), dtype=torch.bool)
    for i, v in enumerate(values):
        out[i, : v.numel()] = v
        mask[i, : v.numel()] = True
    return out, mask


class DocumentCollector:
    """Collects per-window token statistics of evaluation batches; joins them into documents.

    ``update(split, stats, batch)`` takes the output of
    :func:`~lightning_unlearn.losses.token_statistics` for one batch and the batch (for
    ``doc_index``, ``window_index`` and ``zlib_len``, when it carries them: a batch without
    ``doc_index`` makes each row its own document). ``documents()`` returns
    ``{split: SplitDocuments}`` over every process (under ``torch.distributed`` every rank must
    call it: it gathers).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._windows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._rows = 0
        self._output_weight: Tensor | None = None

    def update(self, split: str, stats: dict[str, Tensor], batch: dict | None = None) -> None:
        batch = batch if isinstance(batch, dict) else {}
        mask = stats["mask"].bool()
        doc_index = _column(batch.get("doc_index"))
        window_index = _column(batch.get("window_index"))
        zlib_len = _column(batch.get("zlib_len"))
        for b in range(mask.size(0)):
            keep = mask[b]
            self._rows += 1
            if not bool(keep.any()):
                continue  # a window without target tokens carries nothing to score
            record = {f: stats[f][b][keep].detach().cpu() for f in TOKEN_FIELDS if f in stats}
            if "hidden" in stats:
                record["hidden"] = stats["hidden"][b][keep].detach().float().cpu()
                record["targets"] = batch["labels"][b, 1:][keep].detach().cpu()
            rank = _rank()
            record["doc"] = doc_index[b] if doc_index is not None else (rank, self._rows)
            record["window"] = window_index[b] if window_index is not None else self._rows
            record["order"] = (rank, self._rows)
            record["zlib_len"] = zlib_len[b] if zlib_len is not None else None
            self._windows[split].append(record)
        if "output_weight" in stats:
            self._output_weight = stats["output_weight"]

    def documents(self) -> dict[str, SplitDocuments]:
        """Every process's windows joined into documents, sorted by ``doc_index``."""
        gathered = _gather(dict(self._windows))
        out: dict[str, SplitDocuments] = {}
        for split in sorted({s for part in gathered for s in part}, key=_split_order):
            windows = [w for part in gathered for w in part.get(split, [])]
            by_doc: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for w in windows:
                by_doc[w["doc"]].append(w)
            docs = SplitDocuments(split)
            with_zlib = all(w["zlib_len"] is not None for w in windows)
            docs.zlib_len = [] if with_zlib else None
            for key in sorted(by_doc, key=_sort_key):
                parts = sorted(by_doc[key], key=lambda w: (w["window"], w["order"]))
                docs.doc_index.append(key if isinstance(key, int) else len(docs.doc_index))
                for f in (*TOKEN_FIELDS, "hidden", "targets"):
                    if f in parts[0]:
                        getattr(docs, f).append(torch.cat([p[f] for p in parts]))
                if with_zlib:
                    docs.zlib_len.append(int(sum(p["zlib_len"] for p in parts)))
            if docs.hidden and self._output_weight is not None:
                docs.output_weight = self._output_weight.detach().float().cpu()
            out[split] = docs
        return out


#: splits in the order reports list them (others after, by name)
SPLIT_ORDER = ("forget", "approximate", "retain", "general")


def _split_order(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _column(value: Any) -> list | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _sort_key(key: Any) -> tuple:
    return (0, key, ()) if isinstance(key, int) else (1, -1, key)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _gather(local: dict[str, list]) -> list[dict[str, list]]:
    """Every process's collected windows (a list with one entry per rank)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return parts
