"""Reading, tokenising and caching the splits of :class:`~lightning_unlearn.data.UnlearningDataModule`.

:class:`PaddedTokenizer` loads the tokenizer once and gives it a pad token; :class:`SplitBuilder`
turns a :class:`~lightning_unlearn.data.sources.DataSource` into a tokenised ``datasets.Dataset``
(per-document windows, packed windows or question–answer rows), through the disk cache of
:mod:`lightning_unlearn.data.cache` keyed on the tokenizer, the settings and the documents' content.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from collections import Counter
from dataclasses import replace
from typing import Any

from .cache import (
    cache_key,
    default_cache_dir,
    documents_fingerprint,
    load_or_build,
    tokenizer_fingerprint,
)
from .config import DataConfig
from .sources import DataSource, QARecord, SourceError, read_documents, read_parts, read_qa
from .tokenize import QA_FORMAT_VERSION, chunk_documents, pack_documents, qa_documents

log = logging.getLogger(__name__)

__all__ = ["PaddedTokenizer", "SplitBuilder"]


class PaddedTokenizer:
    """The data's tokenizer, loaded on first use, with a pad token (its EOS token when it has
    none; a notice is logged).

    Args:
        tokenizer: a local model folder, a ``.gguf`` file, a hub id or a loaded tokenizer.
        gguf_file: GGUF file name inside ``tokenizer`` when it is a folder.
        trust_remote_code: allow tokenizer code from the hub to run.
    """

    def __init__(self, tokenizer: Any, *, gguf_file: str | None, trust_remote_code: bool) -> None:
        if isinstance(tokenizer, (str, os.PathLike)):
            self.name_or_path: str | None = os.fspath(tokenizer)
            self._tokenizer = None
        else:
            self.name_or_path = getattr(tokenizer, "name_or_path", None)
            self._tokenizer = tokenizer
        self.gguf_file, self.trust_remote_code = gguf_file, trust_remote_code
        self._pad_token_id: int | None = None

    def get(self) -> Any:
        """The tokenizer; it always has a pad token afterwards."""
        if self._tokenizer is None:
            from ..models import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.name_or_path,
                gguf_file=self.gguf_file,
                trust_remote_code=self.trust_remote_code,
            )
        tok = self._tokenizer
        if self._pad_token_id is None:
            if tok.pad_token_id is None:
                if tok.eos_token_id is None:
                    raise ValueError(
                        f"tokenizer '{self.name_or_path}' has neither a pad nor an eos "
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
        self.get()  # resolves the pad token
        return self._pad_token_id


class SplitBuilder:
    """Tokenised splits from sources, each built (or read from the cache) once.

    Args:
        config: the data module's settings (``max_length``, ``min_chunk_tokens``,
            ``max_documents``, ``system_prompt``, ``windows_per_document``, ``packing``,
            ``cache_dir``).
        tokenizer: the tokenizer the windows are cut with.
    """

    def __init__(self, config: DataConfig, tokenizer: PaddedTokenizer) -> None:
        self.config, self.tokenizer = config, tokenizer
        self._memo: dict[tuple, Any] = {}
        self._qa_memo: dict[str, list[QARecord]] = {}
        self._part_sizes: dict[tuple, list[int]] = {}  # documents per part of a source with parts

    def cache_root(self) -> Any:
        return self.config.cache_dir if self.config.cache_dir is not None else default_cache_dir()

    def with_limit(self, source: DataSource) -> DataSource:
        """``source`` with ``max_documents`` as its ``limit`` (each part's) when it sets none."""
        limit = self.config.max_documents
        if source.parts is not None and limit is not None:  # each part's first few
            return replace(source, parts=[self.with_limit(p) for p in source.parts])
        if source.limit is None and limit is not None:
            return replace(source, limit=limit)
        return source

    def records(self, role: str, source: DataSource) -> list[QARecord]:
        """The question–answer records of ``source`` (read once)."""
        source = self.with_limit(source)
        key = repr(source)
        if key not in self._qa_memo:
            self._qa_memo[key] = read_qa(source, role=role)
        return self._qa_memo[key]

    def training(self, role: str, source: DataSource):
        """The training windows of ``role`` (packed with ``packing``), with their ``part`` and
        each document's first ``windows_per_document``."""
        data = self.build(role, source, packed=self.config.packing)
        data = self._with_part(source, data)
        return self._first_windows(role, source, data)

    def build(self, role: str, source: DataSource, *, packed: bool):
        """The tokenised ``source``: question–answer rows, or packed or per-document windows."""
        memo_key = (repr(source), packed)
        if memo_key in self._memo:
            return self._memo[memo_key]
        if source.is_qa:
            if packed:  # refused by the data module's settings; kept for direct callers
                raise ValueError(
                    f"{role} set {source.describe()}: cannot pack question–answer data"
                )
            data = self._memo[memo_key] = self._build_qa(role, source)
            return data
        tokenizer = self.tokenizer.get()
        source = self.with_limit(source)
        if source.parts is not None:  # remember which part each document came from
            per_part = read_parts(source, role=role)
            texts = [t for part in per_part for t in part]
            self._part_sizes[memo_key] = [len(part) for part in per_part]
        else:
            texts = read_documents(source, role=role)
        data = self._tokenised(role, source, tokenizer, texts, packed=packed)
        self._memo[memo_key] = data
        return data

    def _tokenised(self, role: str, source: DataSource, tokenizer: Any, texts: list, *, packed):
        cfg, pad_token_id = self.config, self.tokenizer.pad_token_id
        layout = "packed" if packed else "chunked"
        key = cache_key(
            tokenizer=tokenizer_fingerprint(tokenizer),
            pad_token_id=pad_token_id,
            max_length=cfg.max_length,
            min_chunk_tokens=cfg.min_chunk_tokens,
            layout=layout,
            documents=documents_fingerprint(texts),
        )
        describe = f"{role} set {source.describe()}"

        def build() -> dict[str, list]:
            window = dict(max_length=cfg.max_length, min_chunk_tokens=cfg.min_chunk_tokens)
            if packed:
                eos = tokenizer.eos_token_id
                eos = eos if eos is not None else pad_token_id
                cols, stats = pack_documents(tokenizer, texts, eos_token_id=eos, **window)
            else:
                cols, stats = chunk_documents(tokenizer, texts, **window)
            log.info(
                "%s: %d document(s) -> %d %s window(s) of <= %d tokens (%d tokens); dropped %d "
                "window(s) under %d tokens (%d tokens)",
                describe,
                stats.documents,
                stats.chunks,
                layout,
                cfg.max_length,
                stats.tokens,
                stats.dropped_chunks,
                cfg.min_chunk_tokens,
                stats.dropped_tokens,
            )
            if not cols["input_ids"]:
                raise SourceError(
                    f"{describe} has 0 windows of at least min_chunk_tokens="
                    f"{cfg.min_chunk_tokens} tokens; its documents are too short: lower "
                    "min_chunk_tokens or add text"
                )
            return cols

        meta = {"source": repr(source), "layout": layout, "max_length": cfg.max_length}
        return load_or_build(self.cache_root(), key, build, describe=describe, meta=meta)

    def _build_qa(self, role: str, source: DataSource):
        cfg, tokenizer = self.config, self.tokenizer.get()
        records = self.records(role, source)
        source = self.with_limit(source)
        chat_template = getattr(tokenizer, "chat_template", None) or None
        key = cache_key(
            tokenizer=tokenizer_fingerprint(tokenizer),
            pad_token_id=self.tokenizer.pad_token_id,
            max_length=cfg.max_length,
            layout="qa",
            qa_format=QA_FORMAT_VERSION,
            # tokenizer_fingerprint does not cover the chat template: it shapes every prompt
            chat_template=chat_template,
            system_prompt=cfg.system_prompt,
            documents=documents_fingerprint([t for r in records for t in (r.question, r.answer)]),
        )
        describe = f"{role} set {source.describe()}"

        def build() -> dict[str, list]:
            cols, stats = qa_documents(
                tokenizer, records, max_length=cfg.max_length, system_prompt=cfg.system_prompt
            )
            log.info(
                "%s: %d question–answer record(s) -> %d row(s) of <= %d tokens (%s; %d prompt "
                "tokens masked, %d answer tokens); %d answer(s) cut to fit max_length",
                describe,
                stats.documents,
                stats.chunks,
                cfg.max_length,
                "chat template" if chat_template else "no chat template",
                stats.prompt_tokens,
                stats.tokens,
                stats.truncated,
            )
            return cols

        meta = {"source": repr(source), "layout": "qa", "max_length": cfg.max_length}
        return load_or_build(self.cache_root(), key, build, describe=describe, meta=meta)

    def _with_part(self, source: DataSource, data):
        """Training windows of a source with ``parts`` carry ``part``: the index of the part their
        document came from (packed: their first document's), for methods that treat the parts
        differently (RMU's ``direction_per_part``)."""
        sizes = self._part_sizes.get((repr(source), self.config.packing))
        if sizes is None or "doc_index" not in data.column_names:
            return data
        bounds = list(itertools.accumulate(sizes))
        return data.add_column("part", [bisect.bisect_right(bounds, d) for d in data["doc_index"]])

    def _first_windows(self, role: str, source: DataSource, data):
        """The training windows, each document's first ``windows_per_document`` of them."""
        n = self.config.windows_per_document
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
            role,
            source.describe(),
            n,
            len(keep),
            len(data),
        )
        return data.select(keep) if len(keep) < len(data) else data
