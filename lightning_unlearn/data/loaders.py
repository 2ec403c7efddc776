"""Datasets, samplers and loaders of :class:`~lightning_unlearn.data.UnlearningDataModule`.

Every split is sharded by the module itself (samplers that Lightning leaves alone:
``DistributedSampler`` subclasses, or no sampler Lightning knows):

* :class:`EvalShardSampler`: an evaluation split, strided over the ranks, longest windows first;
* :class:`ResumableDistributedSampler` / :class:`PartAlternatingSampler`: the forget set, shuffled
  with ``seed + epoch``, resumable in the middle of an epoch;
* :class:`CyclingBatchSampler` in a :class:`CyclingLoader`: the endless retain stream.

:func:`training_loaders` and :func:`evaluation_loaders` put them together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .tokenize import PadCollator

__all__ = [
    "ChunkDataset",
    "ChunkSubset",
    "CyclingBatchSampler",
    "CyclingLoader",
    "EvalShardSampler",
    "PartAlternatingSampler",
    "ResumableDistributedSampler",
    "evaluation_loaders",
    "training_loaders",
]


class ChunkDataset(Dataset):
    """Map-style view of a tokenised split returning only the model's columns (and
    ``prompt_len`` for question–answer rows, which the collator turns into masked labels)."""

    def __init__(self, data, *, with_eval_columns: bool = False) -> None:
        columns = [
            c for c in ("input_ids", "position_ids", "prompt_len", "part") if c in data.column_names
        ]
        if with_eval_columns:
            columns += ["zlib_len", "doc_index"]
        elif "doc_index" in data.column_names and "position_ids" not in data.column_names:
            columns.append("doc_index")  # a training window of one document: which one
        self._num_tokens = data["num_tokens"] if "num_tokens" in data.column_names else None
        if self._num_tokens is not None and "prompt_len" in data.column_names:
            # a question–answer row is as long as its prompt and its answer
            self._num_tokens = [n + p for n, p in zip(self._num_tokens, data["prompt_len"])]
        self.with_eval_columns = with_eval_columns
        self.data = data.select_columns(columns)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.data[int(index)]
        if self.with_eval_columns:  # the window's place in the split: a document's in order
            row["window_index"] = int(index)
        return row

    def lengths(self) -> list[int]:
        """Tokens per window."""
        if self._num_tokens is not None:
            return list(self._num_tokens)
        return [len(ids) for ids in self.data["input_ids"]]


class ChunkSubset(Dataset):
    """Some windows of a :class:`ChunkDataset` (``eval_subset``), keeping their window index."""

    def __init__(self, data: ChunkDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = data, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[self.indices[index]]

    def lengths(self) -> list[int]:
        lengths = self.dataset.lengths()
        return [lengths[i] for i in self.indices]


class EvalShardSampler(DistributedSampler):
    """Strided, disjoint shard of an evaluation split, without padding or shuffling.

    With ``lengths`` (tokens per window) the shard is visited longest first, so each batch holds
    windows of similar length and little padding is computed (the metrics do not depend on the
    order; the longest batch comes first, so an out-of-memory error shows at once)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        num_replicas: int,
        rank: int,
        lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.lengths = None if lengths is None else list(lengths)

    def __iter__(self) -> Iterator[int]:
        shard = range(self.rank, len(self.dataset), self.num_replicas)
        if self.lengths is None:
            return iter(shard)
        return iter(sorted(shard, key=lambda i: (-self.lengths[i], i)))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class ResumableDistributedSampler(DistributedSampler):
    """The forget sampler: ``DistributedSampler`` that can resume in the middle of an epoch.

    :meth:`resume_at` makes the next pass over ``epoch`` skip the indices of the batches already
    trained on (the order itself depends only on ``seed + epoch``), so a run restored from a
    mid-epoch checkpoint sees exactly the batches an uninterrupted run would. ``len`` stays the
    full epoch length: Lightning counts the skipped batches as already done.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_epoch: int | None = None
        self._skip = 0

    def resume_at(self, epoch: int, skip_indices: int) -> None:
        self._resume_epoch, self._skip = int(epoch), int(skip_indices)

    def order(self) -> list[int]:
        """This rank's indices for the current epoch, before any resume skip."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        indices = self.order()
        if self._resume_epoch == self.epoch and self._skip:
            indices = indices[self._skip :]
        return iter(indices)


class PartAlternatingSampler(ResumableDistributedSampler):
    """The forget sampler of ``alternate_parts``: batches of one part at a time, the parts taking
    turns (part 0, part 1, ..., part 0, ...), each part in its own shuffled order.

    The rank's shard and its order are :class:`ResumableDistributedSampler`'s; they are regrouped
    into runs of ``batch_size`` indices of one part. A part whose windows run out leaves the turn.
    Batches are pure while every run is full: a part's last, short run (its windows not a multiple
    of ``batch_size``) shares a batch with the windows after it, and the batches after it mix two
    parts (the WMDP run has 300 + 300 windows in batches of 4: none).

    Args:
        parts: the part of every window of the dataset.
        batch_size: windows per batch.
        *args, **kwargs: see ``DistributedSampler``.
    """

    def __init__(self, *args: Any, parts: Sequence[int], batch_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts, self.batch_size = list(parts), int(batch_size)

    def order(self) -> list[int]:
        queues: dict[int, list[int]] = {}
        for index in super().order():
            queues.setdefault(self.parts[index], []).append(index)
        size = self.batch_size
        runs = {
            k: [q[i : i + size] for i in range(0, len(q), size)] for k, q in sorted(queues.items())
        }
        turns = max((len(r) for r in runs.values()), default=0)
        return [i for t in range(turns) for r in runs.values() if t < len(r) for i in r[t]]


class CyclingBatchSampler(Sampler[list[int]]):
    """Endless batches of a fixed size from one rank's shard, reshuffled on every pass.

    The shard is strided over ``range(n)`` and padded by wrapping around to ``ceil(n / W)``
    indices, so every rank has data even when ``n < W``. Batches run on across passes, so every
    batch has exactly ``batch_size`` rows. Has no ``__len__``: ``CombinedLoader`` treats it as
    infinite in ``"min_size"`` mode.

    The stream is one endless sequence over the whole run: batch ``b`` depends only on ``seed``,
    ``rank`` and ``b``. Epoch ``e`` starts at batch ``e * batches_per_epoch`` (set by
    :meth:`set_epoch`, which Lightning calls every epoch), plus ``skip_batches`` of that epoch
    when resuming, so a restored run continues exactly where the interrupted one stopped, and
    read-ahead (prefetching, workers) never shifts the order.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.shuffle = shuffle
        per_rank = math.ceil(n / world_size)
        self.shard = [(rank + k * world_size) % n for k in range(per_rank)]
        self.epoch = 0
        self.batches_per_epoch = 0
        self._resume_epoch: int | None = None
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip_batches: int) -> None:
        self._resume_epoch, self._skip = int(epoch), int(skip_batches)

    def _pass_order(self, p: int) -> list[int]:
        if not self.shuffle:
            return self.shard
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 10_007 + p)
        return [self.shard[i] for i in torch.randperm(len(self.shard), generator=g).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        start = self.epoch * self.batches_per_epoch
        if self._resume_epoch == self.epoch:
            start += self._skip
        position = start * self.batch_size  # index into the endless concatenation of passes
        p, offset = divmod(position, len(self.shard))
        batch: list[int] = []
        while True:
            for index in self._pass_order(p)[offset:]:
                batch.append(index)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            p, offset = p + 1, 0


class CyclingLoader:
    """An endless iterable of retain batches (deliberately not a ``DataLoader``, so Lightning
    neither re-samples it nor asks for its length)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    @property
    def sampler(self):
        """The cycling batch sampler (Lightning calls its ``set_epoch`` every epoch)."""
        return self.loader.batch_sampler

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.loader)


def training_loaders(
    forget: Any,
    retain: Any | None,
    *,
    batch_size: int,
    retain_batch_size: int,
    pad_token_id: int,
    num_workers: int,
    seed: int,
    shuffle: bool,
    alternate_parts: bool,
    rank: int,
    world_size: int,
    resume: tuple[int, int] | None = None,
) -> CombinedLoader:
    """``{"forget": batch, "retain": batch}`` in ``"min_size"`` mode over the tokenised training
    sets (``retain=None``: forget batches only); ``resume`` (epoch, batches done) continues both
    orders in the middle of that epoch."""
    dataset = ChunkDataset(forget)
    kwargs = dict(num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    if alternate_parts and "part" in forget.column_names:
        sampler = PartAlternatingSampler(
            dataset, parts=forget["part"], batch_size=batch_size, drop_last=False, **kwargs
        )
    else:
        sampler = ResumableDistributedSampler(dataset, drop_last=False, **kwargs)
    loaders: dict[str, Any] = {
        "forget": DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=PadCollator(pad_token_id),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
    }
    if retain is not None:
        retain = ChunkDataset(retain)
        batches = CyclingBatchSampler(
            len(retain),
            retain_batch_size,
            seed=seed + 1,
            rank=rank,
            world_size=world_size,
            shuffle=shuffle,
        )
        batches.batches_per_epoch = len(loaders["forget"])
        loaders["retain"] = CyclingLoader(
            DataLoader(
                retain,
                batch_sampler=batches,
                collate_fn=PadCollator(pad_token_id),
                num_workers=num_workers,
            )
        )
    if resume is not None:
        epoch, done = resume
        if done < len(loaders["forget"]):  # a checkpoint taken in the middle of the epoch
            sampler.resume_at(epoch, done * batch_size)
            if "retain" in loaders:
                loaders["retain"].sampler.resume_at(epoch, done)
    return CombinedLoader(loaders, mode="min_size")


def evaluation_loaders(
    datasets: Mapping[str, Any],
    *,
    batch_size: int,
    pad_token_id: int,
    num_workers: int,
    subset: int | None,
    rank: int,
    world_size: int,
) -> CombinedLoader:
    """The tokenised evaluation splits in ``"sequential"`` mode, each sharded over the ranks
    (``subset``: at most this many windows of a split, spread evenly over it)."""
    loaders = {}
    for split, dataset in datasets.items():
        data = ChunkDataset(dataset, with_eval_columns=True)
        if subset is not None and len(data) > subset:
            n, k = len(data), subset
            data = ChunkSubset(data, sorted({int(i * n / k) for i in range(k)}))
        loaders[split] = DataLoader(
            data,
            batch_size=batch_size,
            sampler=EvalShardSampler(
                data, num_replicas=world_size, rank=rank, lengths=data.lengths()
            ),
            collate_fn=PadCollator(pad_token_id, split=split),
            num_workers=num_workers,
        )
    return CombinedLoader(loaders, mode="sequential")
