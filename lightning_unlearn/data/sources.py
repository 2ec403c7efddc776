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

Question–answer sources (``question_column`` set) are read by :func:`read_qa` into
:class:`QARecord` s from the same table formats (``.jsonl``/``.json``/``.csv``/``.parquet``, a
directory of them, or a Hugging Face dataset). Each record keeps its other columns in ``extras``
(TOFU's ``paraphrased_answer`` and ``perturbed_answer``, for example). Records whose question or
answer is empty are dropped with a logged count. Schemas of the public benchmarks:

* TOFU (``locuslab/TOFU``, split ``train``): ``forget01/05/10`` and ``retain90/95/99`` have
  ``question``, ``answer``; ``forget*_perturbed`` and ``retain_perturbed`` add
  ``paraphrased_answer`` (a string) and ``perturbed_answer`` (a list of strings);
  ``real_authors_perturbed`` and ``world_facts_perturbed`` have ``question``, ``answer``,
  ``perturbed_answer``.
* MUSE (``muse-bench/MUSE-News``, ``MUSE-Books``): config ``raw`` is text (``text``; splits
  ``forget``, ``retain1``, ``retain2``, ``holdout``), ``knowmem`` is question–answer (``question``,
  ``answer``; splits ``forget_qa``, ``retain_qa`` and their ``*_icl`` few-shot examples) and
  ``verbmem`` is prompt–continuation (``prompt``, ``gt``: ``question_column: prompt``,
  ``answer_column: gt``).
* WMDP (Li et al. 2024): the corpora ``cais/wmdp-corpora`` (configs ``cyber-forget-corpus``,
  ``cyber-retain-corpus``, ``bio-retain-corpus``; split ``train``; ``text``); the bio forget
  corpus is gated (a JSON-lines file with ``text`` the user obtains from the authors: read it
  with ``path``). The questions ``cais/wmdp`` are read by lm-eval (:class:`~lightning_unlearn.
  evaluation.WMDP`).

Several sources read as one (``parts``: WMDP's bio and cyber forget corpora together) give their
documents (or records) one after the other, in the order listed.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["DataSource", "QARecord", "read_documents", "read_parts", "read_qa", "SourceError"]

_TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class SourceError(ValueError):
    """A data source is unusable: empty, missing a column, or described inconsistently."""


#: hub datasets (name, config) that cannot be downloaded by name, and what to do instead
GATED = {
    ("cais/wmdp-corpora", "bio-forget-corpus"): (
        "WMDP's bio forget corpus is not on the hub: its authors give it out on request (the form "
        "linked from https://huggingface.co/datasets/cais/wmdp-corpora). Save the file you receive "
        "(JSON lines, the text under 'text') and read it with path: <that file>"
    ),
}


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
        question_column: column holding the question (the prompt). Set, the source is
            question–answer records (:func:`read_qa`): the prompt's tokens are never training
            targets, and ``text_column`` is not used. ``None``: plain documents.
        answer_column: column holding the answer (the target) of a question–answer source, e.g.
            ``"answer"``, or TOFU's ``"paraphrased_answer"``; MUSE ``verbmem``'s is ``"gt"``.
        parts: several sources read as one, in order (instead of ``path`` / ``hf_name``): e.g.
            WMDP's bio and cyber forget corpora. All text, or all question–answer.
        note: added to the error when ``path`` does not exist (where a gated file comes from).
    """

    path: str | None = None
    hf_name: str | None = None
    hf_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    glob: str = "**/*"
    limit: int | None = None
    revision: str | None = None
    question_column: str | None = None
    answer_column: str = "answer"
    parts: list[DataSource] | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.parts is not None:
            self._check_parts()
        elif (self.path is None) == (self.hf_name is None):
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
        if self.question_column is not None and self.question_column == self.answer_column:
            raise SourceError(
                f"data source {self.describe()}: question_column and answer_column are both "
                f"'{self.answer_column}'; the prompt and the target must be different columns"
            )

    def _check_parts(self) -> None:
        if self.path is not None or self.hf_name is not None:
            raise SourceError(
                f"a data source with 'parts' reads its parts only; got path={self.path!r} and "
                f"hf_name={self.hf_name!r} too: move them into a part"
            )
        self.parts = [DataSource.coerce(p) for p in self.parts]
        if not self.parts:
            raise SourceError("a data source with 'parts' needs at least one part, got []")
        kinds = {p.is_qa for p in self.parts}
        if len(kinds) > 1:
            raise SourceError(
                f"data source {self.describe()} mixes text and question–answer parts; set "
                "question_column on all of them or on none"
            )
        if kinds == {True}:
            self.question_column = self.parts[0].question_column

    @property
    def is_qa(self) -> bool:
        """Whether the source holds question–answer records (``question_column`` is set)."""
        return self.question_column is not None

    @classmethod
    def coerce(cls, value: str | os.PathLike | DataSource | dict[str, Any]) -> DataSource:
        """Turn a path string, a dict of fields or a :class:`DataSource` into a :class:`DataSource`."""
        if isinstance(value, DataSource):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(path=os.fspath(value))
        if isinstance(value, (list, tuple)):
            return cls(parts=list(value))
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
            f"cannot use {value!r} as a data source: pass a path string, a DataSource "
            "(path=... or hf_name=..., hf_config=..., split=...) or a list of them"
        )

    def describe(self) -> str:
        """A short human-readable name used in logs and errors."""
        if self.parts is not None:
            return " + ".join(p.describe() for p in self.parts)
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
    return _texts_from_records(_parse_json(text, source, where), source, where)


def _parse_json(text: str, source: DataSource, where: str) -> list:
    """The records of a JSON list or of JSON lines (one value per non-empty line)."""
    if text.lstrip().startswith("["):
        return json.loads(text)
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
    return records


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


def _decoded(path: Path, source: DataSource) -> str:
    """The file's text as UTF-8, undecodable bytes replaced (and counted in the log)."""
    text, replaced = decode_utf8(path.read_bytes())
    if replaced:
        log.warning(
            "data source %s: replaced %d undecodable byte sequence(s) in '%s' with U+FFFD",
            source.describe(),
            replaced,
            path,
        )
    return text


def _read_file(path: Path, source: DataSource) -> list[str]:
    where = f"file '{path}'"
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, source, where)
    text = _decoded(path, source)
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


def _load_hf(source: DataSource):
    gated = GATED.get((source.hf_name, source.hf_config))
    if gated is not None:
        raise SourceError(f"data source {source.describe()}: {gated}")
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
    return ds


def _read_hf(source: DataSource) -> list[str]:
    ds = _load_hf(source)
    if source.text_column not in ds.column_names:
        raise _column_error(source, f"dataset '{source.hf_name}'", ds.column_names)
    return ["" if v is None else str(v) for v in ds[source.text_column]]


def _check_path(source: DataSource, role: str) -> Path:
    path = Path(source.path).expanduser()
    if not path.exists():
        hint = ""
        if not source.path.startswith((".", "/", "~")) and source.path.count("/") == 1:
            hint = f" (for a Hugging Face dataset use hf_name: {source.path})"
        note = f". {source.note}" if source.note else ""
        raise FileNotFoundError(
            f"{role} set {source.describe()} does not exist; pass an existing file or "
            f"directory{hint}{note}"
        )
    return path


def read_documents(source: DataSource, *, role: str = "data") -> list[str]:
    """Read every non-empty document of ``source``.

    A question–answer source (``question_column`` set) gives one document per record of
    :func:`read_qa`: its question and its answer on two lines.

    Args:
        source: where to read from.
        role: what the documents are for (``"forget"``, ``"retain"``...), used in messages.

    Raises:
        FileNotFoundError: ``source.path`` does not exist.
        SourceError: the text column is missing, or no document is left after dropping the
            empty ones.
    """
    if source.is_qa:  # e.g. for hashing the forget set; the data module reads records
        return [f"{r.question}\n{r.answer}" for r in read_qa(source, role=role)]
    if source.parts is not None:
        texts = [t for part in read_parts(source, role=role) for t in part]
    elif source.path is not None:
        path = _check_path(source, role)
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


def read_parts(source: DataSource, *, role: str = "data") -> list[list[str]]:
    """The documents of each part of a source with ``parts``, in order (what
    :func:`read_documents` concatenates); the source's own ``limit`` counts them all together."""
    if source.parts is None:
        raise SourceError(
            f"{role} set {source.describe()} has no parts; read it with read_documents"
        )
    out, left = [], source.limit
    for part in source.parts:
        texts = read_documents(part, role=role)
        if left is not None:
            texts, left = texts[:left], max(left - len(texts), 0)
        out.append(texts)
    return out


# ---------------------------------------------------------------------------------- QA records
@dataclass
class QARecord:
    """One question–answer record.

    Attributes:
        question: the prompt (never a training target).
        answer: the target.
        extras: the record's other columns, unchanged (TOFU's ``paraphrased_answer``, a string,
            and ``perturbed_answer``, a list of strings, for example).
    """

    question: str
    answer: str
    extras: dict[str, Any] = field(default_factory=dict)


def _qa_column_error(source: DataSource, where: str, name: str, columns) -> SourceError:
    which = "question_column" if name == source.question_column else "answer_column"
    return SourceError(
        f"data source {source.describe()}: {where} has no column '{name}'; "
        f"columns that exist: {sorted(columns)}. Set {which} to one of them."
    )


def _check_qa_columns(source: DataSource, where: str, columns) -> None:
    for name in (source.question_column, source.answer_column):
        if name not in columns:
            raise _qa_column_error(source, where, name, columns)


def _qa_text(value: Any, source: DataSource, where: str, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        raise SourceError(
            f"data source {source.describe()}: {where}: column '{name}' holds a "
            f"{type(value).__name__}, not a string; choose a column with one string per record "
            "(the other columns stay in QARecord.extras)"
        )
    return str(value)


def _qa_from_rows(rows: list, source: DataSource, where: str) -> list[QARecord]:
    out: list[QARecord] = []
    q_col, a_col = source.question_column, source.answer_column
    for i, row in enumerate(rows):
        here = f"{where} (record {i})"
        if not isinstance(row, dict):
            raise SourceError(
                f"data source {source.describe()}: {here} is a {type(row).__name__}; expected "
                f"an object with '{q_col}' and '{a_col}'"
            )
        _check_qa_columns(source, here, row.keys())
        extras = {k: v for k, v in row.items() if k not in (q_col, a_col)}
        out.append(
            QARecord(
                _qa_text(row[q_col], source, here, q_col),
                _qa_text(row[a_col], source, here, a_col),
                extras,
            )
        )
    return out


def _qa_from_file(path: Path, source: DataSource) -> list[QARecord]:
    where = f"file '{path}'"
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise SourceError(
            f"data source {source.describe()}: {where} is not a table; question–answer records "
            f"are read from {', '.join(_TABLE_SUFFIXES)} files (question_column "
            f"'{source.question_column}')"
        )
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _check_qa_columns(source, where, table.column_names)
        return _qa_from_rows(table.to_pylist(), source, where)
    text = _decoded(path, source)
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            return []
        _check_qa_columns(source, where, reader.fieldnames)
        return _qa_from_rows(list(reader), source, where)
    return _qa_from_rows(_parse_json(text, source, where), source, where)


def _qa_from_directory(root: Path, source: DataSource) -> list[QARecord]:
    files = sorted(
        p
        for p in root.glob(source.glob)
        if p.is_file()
        and not _is_hidden(p.relative_to(root))
        and p.suffix.lower() in _TABLE_SUFFIXES
    )
    if not files:
        raise SourceError(
            f"data source {source.describe()}: no {'/'.join(_TABLE_SUFFIXES)} files match glob "
            f"'{source.glob}' in that directory; change 'glob' (e.g. '**/*.jsonl')"
        )
    return [rec for path in files for rec in _qa_from_file(path, source)]


def _qa_from_hf(source: DataSource) -> list[QARecord]:
    ds = _load_hf(source)
    where = f"dataset '{source.hf_name}'"
    _check_qa_columns(source, where, ds.column_names)
    return _qa_from_rows(ds.to_list(), source, where)


def read_qa(source: DataSource, *, role: str = "data") -> list[QARecord]:
    """Read every question–answer record of ``source`` (``source.question_column`` must be set).

    Records whose question or answer is empty (after stripping whitespace) are dropped with a
    logged count; ``source.limit`` keeps the first ``limit`` of the rest.

    Args:
        source: where to read from.
        role: what the records are for (``"forget"``, ``"retain"``...), used in messages.

    Raises:
        FileNotFoundError: ``source.path`` does not exist.
        SourceError: ``question_column`` is not set, the question or answer column is missing
            (the message lists the columns that exist), or no record is left after dropping the
            empty ones.
    """
    if not source.is_qa:
        raise SourceError(
            f"{role} set {source.describe()} has no question_column; set question_column (and "
            "answer_column) for question–answer records, or read it with read_documents"
        )
    if source.parts is not None:
        records = [r for part in source.parts for r in read_qa(part, role=role)]
    elif source.path is not None:
        path = _check_path(source, role)
        records = _qa_from_directory(path, source) if path.is_dir() else _qa_from_file(path, source)
    else:
        records = _qa_from_hf(source)
    kept = [r for r in records if r.question.strip() and r.answer.strip()]
    dropped = len(records) - len(kept)
    if dropped:
        log.warning(
            "%s set %s: dropped %d question–answer record(s) of %d with an empty question or "
            "answer",
            role,
            source.describe(),
            dropped,
            len(records),
        )
    if not kept:
        raise SourceError(
            f"{role} set {source.describe()} has 0 question–answer records after removing "
            f"empty ones ({len(records)} read); check the file, question_column "
            f"'{source.question_column}' and answer_column '{source.answer_column}'"
        )
    if source.limit is not None:
        kept = kept[: source.limit]
    return kept
