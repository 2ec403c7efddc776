"""``UnlearningDataModule``: forget / retain training data and named evaluation splits.

Training (``train_dataloader``) yields ``{"forget": batch, "retain": batch}`` through a Lightning
``CombinedLoader`` in ``"min_size"`` mode: the forget loader is finite (one epoch is one pass over
the forget set) and the retain loader never ends (it reshuffles and starts again), so the epoch
length is exactly the forget loader's length. Without a retain source the batches are
``{"forget": batch}``.

Evaluation (``val_dataloader`` / ``test_dataloader``) is a ``CombinedLoader`` in ``"sequential"``
mode over the splits present, in the order ``forget``, ``approximate``, ``retain``, ``general``
(``eval_split_names``); every batch carries ``"split"`` (its name), ``"zlib_len"`` and
``"doc_index"``. Evaluation windows are always per-document chunks, never packed, so per-chunk
scores (membership inference, verbatim memorisation) refer to one document.

Question–answer splits (a source with ``question_column``, e.g. TOFU or MUSE ``knowmem``) hold one
row per record, ``prompt + answer + eos`` (:func:`~lightning_unlearn.data.tokenize.encode_qa`, the
tokenizer's chat template applied when it has one), with ``prompt_len``: the prompt's labels are
``-100``, so training and evaluation score only the answer. :meth:`UnlearningDataModule.qa_records`
gives a split's records with their other columns (TOFU's paraphrased and perturbed answers).

Distributed runs: the module shards every split itself by ``trainer.global_rank`` and
``trainer.world_size`` with samplers that Lightning leaves alone (``DistributedSampler``
subclasses), so Lightning adds no sampler of its own:

* evaluation splits are split strided (rank ``r`` gets chunks ``r, r + W, r + 2W, ...``): disjoint,
  together exactly the split, nothing counted twice (ranks may differ by one chunk);
* the forget set is shuffled each epoch with ``seed + epoch`` and split strided; when it does not
  divide evenly, the first chunks of that epoch's order are repeated so that every rank gets
  ``ceil(N / W)`` chunks (``torch.utils.data.DistributedSampler``'s rule) and the same number of
  batches -- otherwise DDP would hang on the last step;
* the retain set is split the same way, and each rank cycles through its own shard.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .cache import (
    cache_key,
    default_cache_dir,
    documents_fingerprint,
    load_or_build,
    tokenizer_fingerprint,
)
from .sources import DataSource, QARecord, SourceError, read_documents, read_parts, read_qa
from .tokenize import (
    QA_FORMAT_VERSION,
    PadCollator,
    chunk_documents,
    pack_documents,
    qa_documents,
)

log = logging.getLogger(__name__)

__all__ = ["UnlearningDataModule", "ChunkDataset", "EVAL_SPLIT_ORDER"]

EVAL_SPLIT_ORDER = ("forget", "approximate", "retain", "general")


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
        if (
            self.with_eval_columns
        ):  # the window's place in the split: windows of a document in order
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
        runs = {k: [q[i : i + self.batch_size] for i in range(0, len(q), self.batch_size)]
                for k, q in sorted(queues.items())}  # fmt: skip
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


class UnlearningDataModule(LightningDataModule):
    """Forget / retain training data and the evaluation splits of an unlearning run.

    A source is a path string (a ``.jsonl``/``.json``/``.csv``/``.parquet``/text file or a
    directory) or a :class:`DataSource` (``path`` with ``glob``/``text_column``, or a Hugging Face
    dataset via ``hf_name``/``hf_config``/``split``). In YAML::

        data:
          tokenizer: HuggingFaceTB/SmolLM2-135M
          forget: {hf_name: llmunlearn/unlearn_dataset, hf_config: arxiv, split: forget}
          retain: {hf_name: llmunlearn/unlearn_dataset, hf_config: arxiv, split: retain}
          approximate: {hf_name: llmunlearn/unlearn_dataset, hf_config: arxiv, split: approximate}
          max_length: 4096

    Question–answer data (TOFU) names its question and answer columns::

        data:
          forget: {hf_name: locuslab/TOFU, hf_config: forget10, question_column: question}
          retain: {hf_name: locuslab/TOFU, hf_config: retain90, question_column: question}
          eval_forget: {hf_name: locuslab/TOFU, hf_config: forget10_perturbed,
                        question_column: question}

    Args:
        tokenizer: the model's tokenizer: a local model folder, a ``.gguf`` file or a hub id
            (from Python a loaded tokenizer object works too). A tokenizer without a pad token
            pads with its EOS token (a notice is logged); padded positions are masked.
        forget: documents to forget (training, and the ``forget`` evaluation split unless
            ``eval_forget`` is given).
        retain: documents whose knowledge must stay (training retain term, and the ``retain``
            evaluation split unless ``eval_retain`` is given). ``None``: forget batches only.
        approximate: unseen in-distribution text, the approximate-retrain reference (evaluation
            only). The model must never have trained on it.
        eval_forget: forget evaluation split, when it differs from the training forget set.
        eval_retain: retain evaluation split, when it differs from the training retain set.
        general: general-domain text for utility (evaluation only).
        eval_splits: evaluate only these splits (``None``: every split that has a source).
        check_splits: the splits scored by validation *during* ``fit`` (the stopping checks);
            ``trainer.validate`` / ``test`` still score every split. ``None``: every split. The
            unlearning workflow sets it to the split its stop reads (``forget``).
        eval_subset: score at most this many windows of each evaluation split, spread evenly
            over it (quick checks and benchmarks); ``None``: all.
        max_length: tokens per window (the paper uses 4096).
        min_chunk_tokens: windows with fewer document tokens are dropped (the paper drops chunks
            under 5 tokens).
        packing: training only: lay documents end to end and cut into full ``max_length``
            windows without padding, instead of one or more padded windows per document. Not
            for question–answer sources (each record is one row whose prompt is masked).
        alternate_parts: training only, for a forget source with ``parts``: each forget batch
            holds windows of one part, the parts taking turns (the WMDP code's loop: a bio
            batch, a cyber batch, ...); each part shuffled within itself.
        windows_per_document: training only: keep each document's first ``n`` windows (``1``:
            its first ``max_length`` tokens, as the WMDP code truncates its corpora); ``None``:
            every window. Evaluation splits keep every window; question–answer records are one
            row each already. Not with ``packing``.
        batch_size: forget windows per training batch (per process).
        retain_per_forget: retain windows per forget window (the paper's ``positive_ratio``):
            the retain batch size is ``batch_size * retain_per_forget``.
        eval_batch_size: windows per evaluation batch (per process).
        cache_dir: where tokenised splits are cached; default ``$LIGHTNING_UNLEARN_CACHE`` or
            ``~/.cache/lightning_unlearn/data``. The cache key covers the tokenizer,
            ``max_length``, ``min_chunk_tokens``, packing and the documents' content (for
            question–answer sources: the questions, the answers, the chat template and
            ``system_prompt``).
        num_workers: DataLoader worker processes.
        seed: seed of the forget shuffling (``seed + epoch``) and of the retain order.
        shuffle: shuffle training windows (forget and retain); evaluation is never shuffled.
        gguf_file: GGUF file name inside ``tokenizer`` when it is a folder.
        trust_remote_code: allow tokenizer code from the hub to run (only for trusted repos).
        max_documents: read at most this many documents from each source that sets no
            ``limit`` of its own (quick experiments).
        system_prompt: system message put before each question of a question–answer source
            (with a chat template, as a ``system`` turn; without one, as a paragraph before the
            question). ``None``: none. Text sources ignore it.
    """

    def __init__(
        self,
        tokenizer: str,
        *,
        forget: str | DataSource,
        retain: str | DataSource | None = None,
        approximate: str | DataSource | None = None,
        eval_forget: str | DataSource | None = None,
        eval_retain: str | DataSource | None = None,
        general: str | DataSource | None = None,
        eval_splits: Sequence[str] | None = None,
        check_splits: Sequence[str] | None = None,
        eval_subset: int | None = None,
        max_length: int = 512,
        min_chunk_tokens: int = 5,
        packing: bool = False,
        alternate_parts: bool = False,
        windows_per_document: int | None = None,
        batch_size: int = 4,
        retain_per_forget: int = 1,
        eval_batch_size: int = 8,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        max_documents: int | None = None,
        system_prompt: str | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("max_length", max_length, 2),
            ("min_chunk_tokens", min_chunk_tokens, 1),
            ("batch_size", batch_size, 1),
            ("retain_per_forget", retain_per_forget, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if windows_per_document is not None and (
            isinstance(windows_per_document, bool)
            or not isinstance(windows_per_document, int)
            or windows_per_document < 1
        ):
            raise ValueError(
                f"windows_per_document must be an integer >= 1 or None, got {windows_per_document!r}"
            )
        if packing and windows_per_document is not None:
            raise ValueError(
                "packing=True lays documents end to end, so a window is not a document's: set "
                "windows_per_document: null, or packing: false"
            )
        if max_documents is not None and max_documents < 1:
            raise ValueError(f"max_documents must be >= 1 or None, got {max_documents!r}")
        if eval_subset is not None and eval_subset < 1:
            raise ValueError(f"eval_subset must be >= 1 or None, got {eval_subset!r}")
        if forget is None:
            raise ValueError("a forget source is required: pass forget='path/to/forget.jsonl'")
        self.max_length = max_length
        self.min_chunk_tokens = min_chunk_tokens
        self.packing = packing
        self.windows_per_document = windows_per_document
        self.alternate_parts = bool(alternate_parts)
        self.batch_size = batch_size
        self.retain_per_forget = retain_per_forget
        self.eval_batch_size = eval_batch_size
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.gguf_file = gguf_file
        self.trust_remote_code = trust_remote_code
        self.max_documents = max_documents
        self.system_prompt = system_prompt
        self.eval_subset = eval_subset
        self.check_splits = None if check_splits is None else tuple(check_splits)

        def coerce(value):
            return None if value is None else DataSource.coerce(value)

        self.train_sources: dict[str, DataSource] = {"forget": coerce(forget)}
        if alternate_parts and self.train_sources["forget"].parts is None:
            raise ValueError(
                f"alternate_parts=True needs a forget source with parts (forget: {{parts: [...]}}); "
                f"forget {self.train_sources['forget'].describe()} has one part"
            )
        if retain is not None:
            self.train_sources["retain"] = coerce(retain)
        if packing:
            qa = [f"{k} {v.describe()}" for k, v in self.train_sources.items() if v.is_qa]
            if qa:
                raise ValueError(
                    f"packing=True cannot be used with question–answer source(s) {', '.join(qa)}: "
                    "each record is one row whose prompt is masked out of the labels. Set "
                    "packing: false (or drop question_column to train on the text as documents)"
                )
        candidates = {
            "forget": coerce(eval_forget) or self.train_sources["forget"],
            "approximate": coerce(approximate),
            "retain": coerce(eval_retain) or self.train_sources.get("retain"),
            "general": coerce(general),
        }
        self.eval_sources: dict[str, DataSource] = {
            k: v for k, v in candidates.items() if v is not None
        }
        if eval_splits is not None:
            if isinstance(eval_splits, str):
                eval_splits = [eval_splits]
            unknown = [name for name in eval_splits if name not in candidates]
            if unknown:
                raise ValueError(
                    f"eval_splits: unknown split(s) {unknown}; choose from {sorted(candidates)}"
                )
            missing = [name for name in eval_splits if name not in self.eval_sources]
            if missing:
                raise ValueError(
                    f"eval_splits asks for {missing} but no source was given for them: pass "
                    f"{' / '.join(missing)}=... or leave them out of eval_splits"
                )
            self.eval_sources = {k: v for k, v in self.eval_sources.items() if k in eval_splits}
        if isinstance(tokenizer, (str, os.PathLike)):
            self.tokenizer_name_or_path: str | None = os.fspath(tokenizer)
            self._tokenizer = None
            self.save_hyperparameters()
        else:
            self.tokenizer_name_or_path = getattr(tokenizer, "name_or_path", None)
            self._tokenizer = tokenizer
            self.save_hyperparameters(ignore=["tokenizer"])
        self._pad_token_id: int | None = None
        self._train: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}
        self._memo: dict[tuple, Any] = {}
        self._qa_memo: dict[str, list[QARecord]] = {}
        self._part_sizes: dict[tuple, list[int]] = {}  # documents per part of a source with parts
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        """The tokenizer, loaded on first use; it always has a pad token afterwards."""
        if self._tokenizer is None:
            from ..models import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.tokenizer_name_or_path,
                gguf_file=self.gguf_file,
                trust_remote_code=self.trust_remote_code,
            )
        tok = self._tokenizer
        if self._pad_token_id is None:
            if tok.pad_token_id is None:
                if tok.eos_token_id is None:
                    raise ValueError(
                        f"tokenizer '{self.tokenizer_name_or_path}' has neither a pad nor an eos "
                        "token; set tokenizer.pad_token before building the data module"
                    )
                log.info(
                    "tokenizer has no pad token; padding with its eos token %r (id %d). Padded "
                    "positions are masked and carry label -100.",
                    tok.eos_token,
                    tok.eos_token_id,
                )
                tok.pad_token = tok.eos_token
            self._pad_token_id = int(tok.pad_token_id)
        return tok

    @property
    def pad_token_id(self) -> int:
        self.tokenizer  # noqa: B018 - resolves the pad token
        return self._pad_token_id

    # ------------------------------------------------------------------ building splits
    def _cache_root(self):
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def _with_limit(self, source: DataSource) -> DataSource:
        from dataclasses import replace

        if source.parts is not None and self.max_documents is not None:  # each part's first few
            return replace(source, parts=[self._with_limit(p) for p in source.parts])
        if source.limit is None and self.max_documents is not None:
            return replace(source, limit=self.max_documents)
        return source

    def _records(self, role: str, source: DataSource) -> list[QARecord]:
        source = self._with_limit(source)
        key = repr(source)
        if key not in self._qa_memo:
            self._qa_memo[key] = read_qa(source, role=role)
        return self._qa_memo[key]

    def _build_qa(self, role: str, source: DataSource):
        tokenizer = self.tokenizer
        records = self._records(role, source)
        source = self._with_limit(source)
        chat_template = getattr(tokenizer, "chat_template", None) or None
        key = cache_key(
            tokenizer=tokenizer_fingerprint(tokenizer),
            pad_token_id=self.pad_token_id,
            max_length=self.max_length,
            layout="qa",
            qa_format=QA_FORMAT_VERSION,
            # tokenizer_fingerprint does not cover the chat template: it shapes every prompt
            chat_template=chat_template,
            system_prompt=self.system_prompt,
            documents=documents_fingerprint([t for r in records for t in (r.question, r.answer)]),
        )
        describe = f"{role} set {source.describe()}"

        def build() -> dict[str, list]:
            cols, stats = qa_documents(
                tokenizer, records, max_length=self.max_length, system_prompt=self.system_prompt
            )
            log.info(
                "%s: %d question–answer record(s) -> %d row(s) of <= %d tokens (%s; %d prompt "
                "tokens masked, %d answer tokens); %d answer(s) cut to fit max_length",
                describe,
                stats.documents,
                stats.chunks,
                self.max_length,
                "chat template" if chat_template else "no chat template",
                stats.prompt_tokens,
                stats.tokens,
                stats.truncated,
            )
            return cols

        return load_or_build(
            self._cache_root(),
            key,
            build,
            describe=describe,
            meta={"source": repr(source), "layout": "qa", "max_length": self.max_length},
        )

    def _build(self, role: str, source: DataSource, *, packed: bool):
        memo_key = (repr(source), packed)
        if memo_key in self._memo:
            return self._memo[memo_key]
        if source.is_qa:
            if packed:  # refused in __init__; kept for direct callers
                raise ValueError(
                    f"{role} set {source.describe()}: cannot pack question–answer data"
                )
            data = self._memo[memo_key] = self._build_qa(role, source)
            return data
        tokenizer = self.tokenizer
        source = self._with_limit(source)
        if source.parts is not None:  # remember which part each document came from
            per_part = read_parts(source, role=role)
            texts = [t for part in per_part for t in part]
            self._part_sizes[memo_key] = [len(part) for part in per_part]
        else:
            texts = read_documents(source, role=role)
        layout = "packed" if packed else "chunked"
        key = cache_key(
            tokenizer=tokenizer_fingerprint(tokenizer),
            pad_token_id=self.pad_token_id,
            max_length=self.max_length,
            min_chunk_tokens=self.min_chunk_tokens,
            layout=layout,
            documents=documents_fingerprint(texts),
        )
        describe = f"{role} set {source.describe()}"

        def build() -> dict[str, list]:
            if packed:
                cols, stats = pack_documents(
                    tokenizer,
                    texts,
                    max_length=self.max_length,
                    min_chunk_tokens=self.min_chunk_tokens,
                    eos_token_id=tokenizer.eos_token_id
                    if tokenizer.eos_token_id is not None
                    else self.pad_token_id,
                )
            else:
                cols, stats = chunk_documents(
                    tokenizer,
                    texts,
                    max_length=self.max_length,
                    min_chunk_tokens=self.min_chunk_tokens,
                )
            log.info(
                "%s: %d document(s) -> %d %s window(s) of <= %d tokens (%d tokens); dropped %d "
                "window(s) under %d tokens (%d tokens)",
                describe,
                stats.documents,
                stats.chunks,
                layout,
                self.max_length,
                stats.tokens,
                stats.dropped_chunks,
                self.min_chunk_tokens,
                stats.dropped_tokens,
            )
            return cols

        def build_checked() -> dict[str, list]:
            cols = build()
            if not cols["input_ids"]:
                raise SourceError(
                    f"{describe} has 0 windows of at least min_chunk_tokens="
                    f"{self.min_chunk_tokens} tokens; its documents are too short: lower "
                    "min_chunk_tokens or add text"
                )
            return cols

        data = load_or_build(
            self._cache_root(),
            key,
            build_checked,
            describe=describe,
            meta={"source": repr(source), "layout": layout, "max_length": self.max_length},
        )
        self._memo[memo_key] = data
        return data

    def prepare_data(self) -> None:
        """Read and tokenise every split into the cache (Lightning runs this on one process per
        node before ``setup``, so ranks do not tokenise the same data at once)."""
        self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        """Build (or load from the cache) the splits the stage needs. Safe to call repeatedly."""
        if stage in (None, "fit"):
            for role, source in self.train_sources.items():
                if role not in self._train:
                    data = self._build(role, source, packed=self.packing)
                    data = self._with_part(source, data)
                    self._train[role] = self._first_windows(role, source, data)
        if stage in (None, "fit", "validate", "test"):
            for role, source in self.eval_sources.items():
                if role not in self._eval:
                    self._eval[role] = self._build(role, source, packed=False)

    def _with_part(self, source: DataSource, data):
        """Training windows of a source with ``parts`` carry ``part``: the index of the part their
        document came from (packed: their first document's), for methods that treat the parts
        differently (RMU's ``direction_per_part``)."""
        sizes = self._part_sizes.get((repr(source), self.packing))
        if sizes is None or "doc_index" not in data.column_names:
            return data
        bounds = list(itertools.accumulate(sizes))
        return data.add_column("part", [bisect.bisect_right(bounds, d) for d in data["doc_index"]])

    def _first_windows(self, role: str, source: DataSource, data):
        """The training windows, each document's first ``windows_per_document`` of them."""
        n = self.windows_per_document
        if n is None or source.is_qa:
            return data
        seen: Counter = Counter()
        keep = []
        for i, doc in enumerate(data["doc_index"]):
            if seen[doc] < n:
                keep.append(i)
            seen[doc] += 1
        log.info(
            "%s set %s: training on the first %d window(s) of each document: %d of %d windows",
            role, source.describe(), n, len(keep), len(data),
        )  # fmt: skip
        return data.select(keep) if len(keep) < len(data) else data

    # ------------------------------------------------------------------ access
    @property
    def eval_split_names(self) -> tuple[str, ...]:
        """Names of the evaluation splits present, in evaluation order."""
        return tuple(s for s in EVAL_SPLIT_ORDER if s in self.eval_sources)

    def eval_dataset(self, split: str):
        """The tokenised evaluation split (all ranks' chunks) as a ``datasets.Dataset`` with
        columns ``input_ids``, ``text``, ``doc_index``, ``num_tokens``, ``zlib_len`` (and
        ``prompt_len`` for a question–answer split, whose ``text`` is the answer)."""
        return self._get(self._eval, split, "evaluation")

    def qa_records(self, split: str) -> list[QARecord]:
        """The question–answer records of an evaluation split, in ``doc_index`` order (row ``i``
        of :meth:`eval_dataset` is record ``i``), with their other columns in ``extras`` -- for
        metrics that need them (TOFU's ``paraphrased_answer`` and ``perturbed_answer``)."""
        if split not in self.eval_sources:
            raise KeyError(
                f"no evaluation split {split!r}; this data module has {list(self.eval_split_names)}"
            )
        source = self.eval_sources[split]
        if not source.is_qa:
            raise ValueError(
                f"evaluation split {split!r} ({source.describe()}) holds documents, not "
                "question–answer records; set question_column on its source"
            )
        return list(self._records(split, source))

    def train_dataset(self, part: str):
        """The tokenised training ``"forget"`` or ``"retain"`` set (all ranks' windows)."""
        return self._get(self._train, part, "training")

    def _get(self, store: dict, name: str, kind: str):
        if name not in store:
            sources = self.eval_sources if store is self._eval else self.train_sources
            if name not in sources:
                raise KeyError(f"no {kind} split {name!r}; this data module has {sorted(sources)}")
            self.setup("fit" if store is self._train else "validate")
        return store[name]

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> CombinedLoader:
        rank, world = self._rank_world()
        data = self.train_dataset("forget")
        forget = ChunkDataset(data)
        kwargs = dict(num_replicas=world, rank=rank, shuffle=self.shuffle, seed=self.seed)
        if self.alternate_parts and "part" in data.column_names:
            sampler = PartAlternatingSampler(
                forget, parts=data["part"], batch_size=self.batch_size, drop_last=False, **kwargs
            )
        else:
            sampler = ResumableDistributedSampler(forget, drop_last=False, **kwargs)
        loaders: dict[str, Any] = {
            "forget": DataLoader(
                forget,
                batch_size=self.batch_size,
                sampler=sampler,
                collate_fn=PadCollator(self.pad_token_id),
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        }
        if "retain" in self.train_sources:
            retain = ChunkDataset(self.train_dataset("retain"))
            batches = CyclingBatchSampler(
                len(retain),
                self.batch_size * self.retain_per_forget,
                seed=self.seed + 1,
                rank=rank,
                world_size=world,
                shuffle=self.shuffle,
            )
            batches.batches_per_epoch = len(loaders["forget"])
            loaders["retain"] = CyclingLoader(
                DataLoader(
                    retain,
                    batch_sampler=batches,
                    collate_fn=PadCollator(self.pad_token_id),
                    num_workers=self.num_workers,
                )
            )
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if done < len(loaders["forget"]):  # a checkpoint taken in the middle of the epoch
                sampler.resume_at(epoch, done * self.batch_size)
                if "retain" in loaders:
                    loaders["retain"].sampler.resume_at(epoch, done)
        return CombinedLoader(loaders, mode="min_size")

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, Any]:
        """Training position saved in checkpoints: the epoch and the batches of it trained on."""
        trainer = self.trainer
        if trainer is None or getattr(trainer.state, "fn", None) != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": int(trainer.current_epoch), "batches_done": int(progress.processed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the forget order and the retain stream at the checkpoint's position."""
        if "epoch" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches_done"]))

    def eval_loaders(self, splits: Sequence[str] | None = None) -> CombinedLoader:
        """Evaluation loaders of ``splits`` (``None``: every split), sharded over the processes."""
        rank, world = self._rank_world()
        names = self.eval_split_names if splits is None else tuple(splits)
        unknown = [s for s in names if s not in self.eval_sources]
        if unknown:
            raise ValueError(
                f"no evaluation split {unknown}: this data module has {list(self.eval_split_names)}"
            )
        loaders = {}
        for split in names:
            data = ChunkDataset(self.eval_dataset(split), with_eval_columns=True)
            if self.eval_subset is not None and len(data) > self.eval_subset:
                n, k = len(data), self.eval_subset
                data = ChunkSubset(data, sorted({int(i * n / k) for i in range(k)}))
            loaders[split] = DataLoader(
                data,
                batch_size=self.eval_batch_size,
                sampler=EvalShardSampler(
                    data, num_replicas=world, rank=rank, lengths=data.lengths()
                ),
                collate_fn=PadCollator(self.pad_token_id, split=split),
                num_workers=self.num_workers,
            )
        return CombinedLoader(loaders, mode="sequential")

    def val_dataloader(self) -> CombinedLoader:
        trainer = self.trainer
        fitting = getattr(getattr(trainer, "state", None), "fn", None) == "fit"
        if fitting and self.check_splits is not None:
            return self.eval_loaders([s for s in self.check_splits if s in self.eval_sources])
        return self.eval_loaders()

    def test_dataloader(self) -> CombinedLoader:
        return self.eval_loaders()

    def eval_texts(self, split: str, *, documents: int | None = None):
        """The documents of an evaluation split as the model reads them: each document's first
        window (its token ids and text), for metrics that generate
        (:class:`~lightning_unlearn.evaluation.base.SplitTexts`)."""
        from ..evaluation.base import SplitTexts

        data = self.eval_dataset(split)
        index, ids, texts, seen = [], [], [], set()
        for doc, row_ids, text in zip(data["doc_index"], data["input_ids"], data["text"]):
            if doc in seen:
                continue
            seen.add(doc)
            index.append(int(doc))
            ids.append(list(row_ids))
            texts.append(text)
            if documents is not None and len(index) >= documents:
                break
        return SplitTexts(split, index, ids, texts)
