"""Where documents come from: local files, a directory with a glob, or a Hugging Face dataset.

A :class:`DataSource` names one collection of documents. Reading it gives a list of non-empty
strings (:func:`read_documents`); everything after that (tokenising, chunking, caching) does not
care where the text came from.

File formats, chosen by suffix:

* ``.jsonl`` / ``.json``: one JSON object per line (or a JSON list of objects), the text in
  ``text_column``; a list of plain strings is accepted too.
* ``.csv``: a header row, the text in ``text_column``.
* ``.parquet``: the text in ``text_column``.
* anything else (``.txt``, ``.md``, ``.py``...): the whole file is one document.

A directory is read file by file (sorted by relative path) with ``glob``; hidden files and folders
and binary files (with NUL bytes) are skipped. Bytes that are not valid UTF-8 are replaced with
U+FFFD and counted in the log; documents that are empty after stripping whitespace are dropped
with a logged count (the text of a kept document is not changed).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DataSource", "read_documents", "SourceError"]

_TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class SourceError(ValueError):
    """A data source is unusable: empty, missing a column, or described inconsistently."""


@dataclass
class DataSource:
    """One collection of documents.

    Give either ``path`` (a local file or directory) or ``hf_name`` (a Hugging Face dataset id or a
    local dataset folder, loaded with ``datasets.load_dataset(hf_name, hf_config, split=split)``).

    Args:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet``/text file, or a directory of files.
        hf_name: Hugging Face dataset name, e.g. ``"llmunlearn/unlearn_dataset"``.
        hf_config: dataset configuration, e.g. ``"arxiv"``, ``"github"`` or ``"general"``.
        split: dataset split for ``hf_name`` (e.g. ``"forget"``, ``"approximate"``, ``"retain"``).
        text_column: column (or JSON key) that holds the document text.
        glob: pattern of files to read when ``path`` is a directory (relative to it).
        limit: keep only the first ``limit`` non-empty documents (``None``: all).
        revision: dataset revision (git tag, branch or commit) for ``hf_name``.
    """

    path: str | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    glob: str = "**/*"
    limit: int | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.hf_name is None):
            raise SourceError(
                f"a data source needs exactly one of 'path' or 'hf_name', got path={self.path!r} "
                f"and hf_name={self.hf_name!r}"
            )
        if self.path is not None:
            self.path = os.fspath(self.path)
        if self.limit is not None and self.limit < 1:
            raise SourceError(
                f"data source {self.describe()}: limit must be >= 1, got {self.limit}"
            )

    @classmethod
    def coerce(cls, value: str | os.PathLike | DataSource | dict[str, Any]) -> DataSource:
        """Turn a path string, a dict of fields or a :class:`DataSource` into a :class:`DataSource`."""
        if isinstance(value, DataSource):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(path=os.fspath(value))
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise SourceError(
                    f"unknown data source field(s) {sorted(unknown)}; "
                    f"use {sorted(cls.__dataclass_fields__)}"
                )
            return cls(**value)
        # jsonargparse may hand over a Namespace
        if hasattr(value, "__dict__") and {"path", "hf_name"} <= set(vars(value)):
            return cls(**{k: v for k, v in vars(value).items() if k in cls.__dataclass_fields__})
        raise SourceError(
            f"cannot use {value!r} as a data source: pass a path string or a DataSource "
            "(path=... or hf_name=..., hf_config=..., split=...)"
        )

    def describe(self) -> str:
        """A short human-readable name used in logs and errors."""
        if self.path is not None:
            return f"'{self.path}'"
        parts = [self.hf_name, self.hf_config, self.split]
        return "'" + ":".join(p for p in parts if p) + "'"


# ---------------------------------------------------------------------------------- decoding
_REPLACED = [0]


def _count_replace(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    _REPLACED[0] += 1
    return "\ufffd", err.end


codecs.register_error("lightning_unlearn_count_replace", _count_replace)


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid bytes with U+FFFD; returns ``(text, replacements)``.

    Each maximal invalid byte sequence counts once, as with ``errors="replace"``.
    """
    _REPLACED[0] = 0
    text = data.decode("utf-8", errors="lightning_unlearn_count_replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, _REPLACED[0]


# ---------------------------------------------------------------------------------- readers
def _column_error(source: DataSource, where: str, columns) -> SourceError:
    return SourceError(
        f"data source {source.describe()}: {where} has no column '{source.text_column}'; "
        f"columns that exist: {sorted(columns)}. Set text_column to one of them."
    )


def _texts_from_records(records: list, source: DataSource, where: str) -> list[str]:
    texts: list[str] = []
    for i, rec in enumerate(records):
        if isinstance(rec, str):
            texts.append(rec)
        elif isinstance(rec, dict):
            if source.text_column not in rec:
                raise _column_error(source, f"{where} (record {i})", rec.keys())
            value = rec[source.text_column]
            texts.append("" if value is None else str(value))
        else:
            raise SourceError(
                f"data source {source.describe()}: {where} record {i} is a "
                f"{type(rec).__name__}; expected an object with '{source.text_column}' or a string"
            )
    return texts


def _read_json(text: str, source: DataSource, where: str) -> list[str]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _texts_from_records(json.loads(text), source, where)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise SourceError(
                f"data source {source.describe()}: {where} line {lineno} is not valid JSON ({err})"
            ) from None
    return _texts_from_records(records, source, where)


def _read_csv(text: str, source: DataSource, where: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        return []
    if source.text_column not in reader.fieldnames:
        raise _column_error(source, where, reader.fieldnames)
    return [row[source.text_column] or "" for row in reader]


def _read_parquet(path: Path, source: DataSource, where: str) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if source.text_column not in table.column_names:
        raise _column_error(source, where, table.column_names)
    return ["" if v is None else str(v) for v in table.column(source.text_column).to_pylist()]


def _read_file(path: Path, source: DataSource) -> list[str]:
    where = f"file '{path}'"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, source, where)
    text, replaced = decode_utf8(path.read_bytes())
    if replaced:
        log.warning(
            "data source %s: replaced %d undecodable byte sequence(s) in '%s' with U+FFFD",
            source.describe(),
            replaced,
            path,
        )
    if suffix in (".jsonl", ".json"):
        return _read_json(text, source, where)
    if suffix == ".csv":
        return _read_csv(text, source, where)
    return [text]


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _read_directory(root: Path, source: DataSource) -> list[str]:
    files = sorted(
        p for p in root.glob(source.glob) if p.is_file() and not _is_hidden(p.relative_to(root))
    )
    if not files:
        raise SourceError(
            f"data source {source.describe()}: no files match glob '{source.glob}' in that "
            "directory; change 'glob' (e.g. '**/*.py' or '**/*.txt')"
        )
    texts: list[str] = []
    binary = 0
    for path in files:
        if path.suffix.lower() not in _TABLE_SUFFIXES:
            with open(path, "rb") as fh:
                if b"\x00" in fh.read(8192):
                    binary += 1
                    continue
        texts.extend(_read_file(path, source))
    if binary:
        log.info("data source %s: skipped %d binary file(s)", source.describe(), binary)
    return texts


def _read_hf(source: DataSource) -> list[str]:
    import datasets

    kwargs: dict[str, Any] = {"split": source.split}
    if source.revision:
        kwargs["revision"] = source.revision
    try:
        ds = datasets.load_dataset(source.hf_name, source.hf_config, **kwargs)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"data source {source.describe()}: could not load dataset '{source.hf_name}' "
            f"(config {source.hf_config!r}, split {source.split!r}): {err}. Check the name, "
            "your network (or HF_DATASETS_OFFLINE), or point 'path' at local files."
        ) from err
    except ValueError as err:  # unknown split or config
        raise SourceError(
            f"data source {source.describe()}: {err}. Check hf_config and split."
        ) from err
    if source.text_column not in ds.column_names:
        raise _column_error(source, f"dataset '{source.hf_name}'", ds.column_names)
    return ["" if v is None else str(v) for v in ds[source.text_column]]


def read_documents(source: DataSource, *, role: str = "data") -> list[str]:
    """Read every non-empty document of ``source``.

    Args:
        source: where to read from.
        role: what the documents are for (``"forget"``, ``"retain"``...), used in messages.

    Raises:
        FileNotFoundError: ``source.path`` does not exist.
        SourceError: the text column is missing, or no document is left after dropping the
            empty ones.
    """
    if source.path is not None:
        path = Path(source.path).expanduser()
        if not path.exists():
            hint = ""
            if not source.path.startswith((".", "/", "~")) and source.path.count("/") == 1:
                hint = f" (for a Hugging Face dataset use hf_name: {source.path})"
            raise FileNotFoundError(
                f"{role} set {source.describe()} does not exist; pass an existing file or "
                f"directory{hint}"
            )
        texts = _read_directory(path, source) if path.is_dir() else _read_file(path, source)
    else:
        texts = _read_hf(source)
    kept = [t for t in texts if t.strip()]
    dropped = len(texts) - len(kept)
    if dropped:
        log.warning(
            "%s set %s: dropped %d empty document(s) of %d",
            role,
            source.describe(),
            dropped,
            len(texts),
        )
    if not kept:
        raise SourceError(
            f"{role} set {source.describe()} has 0 documents after removing empty ones "
            f"({len(texts)} read); check the file and text_column '{source.text_column}'"
        )
    if source.limit is not None:
        kept = kept[: source.limit]
    return kept
