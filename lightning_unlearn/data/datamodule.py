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

import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import CombinedLoader

from .config import DataConfig, resolve_sources
from .loaders import ChunkDataset, evaluation_loaders, training_loaders
from .sources import DataSource, QARecord
from .splits import PaddedTokenizer, SplitBuilder

__all__ = ["UnlearningDataModule", "ChunkDataset", "EVAL_SPLIT_ORDER"]

EVAL_SPLIT_ORDER = ("forget", "approximate", "retain", "general")


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
        retain_batch_size: retain windows per training batch, whatever ``batch_size`` is
            (e.g. every forget window in one batch beside a small retain batch); ``None``:
            ``batch_size * retain_per_forget``. Not with ``retain_per_forget`` other than 1.
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
        retain_batch_size: int | None = None,
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
        arguments = locals()  # the settings, checked together (DataConfig), then the sources
        config = DataConfig(
            **{option.name: arguments[option.name] for option in fields(DataConfig)}
        )
        self.train_sources, self.eval_sources = resolve_sources(
            config,
            forget=forget,
            retain=retain,
            approximate=approximate,
            eval_forget=eval_forget,
            eval_retain=eval_retain,
            general=general,
            eval_splits=eval_splits,
        )
        self.config = config
        for option in fields(config):  # every setting is an attribute too: data.max_length ...
            setattr(self, option.name, getattr(config, option.name))
        self.check_splits = None if check_splits is None else tuple(check_splits)
        if isinstance(tokenizer, (str, os.PathLike)):
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=["tokenizer"])
        self._tokenizer = PaddedTokenizer(
            tokenizer, gguf_file=gguf_file, trust_remote_code=trust_remote_code
        )
        self.tokenizer_name_or_path: str | None = self._tokenizer.name_or_path
        self._splits = SplitBuilder(config, self._tokenizer)
        self._train: dict[str, Any] = {}
        self._eval: dict[str, Any] = {}
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        """The tokenizer, loaded on first use; it always has a pad token afterwards."""
        return self._tokenizer.get()

    @property
    def pad_token_id(self) -> int:
        return self._tokenizer.pad_token_id

    # ------------------------------------------------------------------ building splits
    def prepare_data(self) -> None:
        """Read and tokenise every split into the cache (Lightning runs this on one process per
        node before ``setup``, so ranks do not tokenise the same data at once)."""
        self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        """Build (or load from the cache) the splits the stage needs. Safe to call repeatedly."""
        if stage in (None, "fit"):
            for role, source in self.train_sources.items():
                if role not in self._train:
                    self._train[role] = self._splits.training(role, source)
        if stage in (None, "fit", "validate", "test"):
            for role, source in self.eval_sources.items():
                if role not in self._eval:
                    self._eval[role] = self._splits.build(role, source, packed=False)

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
        return list(self._splits.records(split, source))

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
        resume, self._resume = self._resume, None
        return training_loaders(
            self.train_dataset("forget"),
            self.train_dataset("retain") if "retain" in self.train_sources else None,
            batch_size=self.batch_size,
            retain_batch_size=self.config.retain_batch,
            pad_token_id=self.pad_token_id,
            num_workers=self.num_workers,
            seed=self.seed,
            shuffle=self.shuffle,
            alternate_parts=self.alternate_parts,
            rank=rank,
            world_size=world,
            resume=resume,
        )

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
        return evaluation_loaders(
            {split: self.eval_dataset(split) for split in names},
            batch_size=self.eval_batch_size,
            pad_token_id=self.pad_token_id,
            num_workers=self.num_workers,
            subset=self.eval_subset,
            rank=rank,
            world_size=world,
        )

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
