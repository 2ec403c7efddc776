"""A disk cache of tokenised splits, keyed by everything that changes the result.

The key is the SHA-256 of: the tokenizer (its full serialised vocabulary, merges, normaliser and
special tokens), the pad id, ``max_length``, ``min_chunk_tokens``, packing, the cache format
version, and the SHA-256 of the documents' text itself. Hashing the text (rather than file
names and modification times) means any change to the data, wherever it came from (a file, a
directory, a hub dataset revision), gives a new key, and renaming or touching a file does not.

Entries are ``datasets`` Arrow folders written with ``save_to_disk`` (no pickle) under
``cache_dir`` (default ``$LIGHTNING_UNLEARN_CACHE`` or ``~/.cache/lightning_unlearn/data``).
An entry is written into a temporary folder and renamed into place, so a crash or two processes
building the same entry at once never leave a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CACHE_FORMAT_VERSION",
    "default_cache_dir",
    "tokenizer_fingerprint",
    "documents_fingerprint",
    "cache_key",
    "load_or_build",
]

CACHE_FORMAT_VERSION = 1
_META = "lightning_unlearn_cache.json"


def default_cache_dir() -> Path:
    """``$LIGHTNING_UNLEARN_CACHE`` if set, else ``~/.cache/lightning_unlearn/data``."""
    env = os.environ.get("LIGHTNING_UNLEARN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/lightning_unlearn/data").expanduser()


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 identifying what a tokenizer does (not where it was loaded from)."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
    else:
        vocab = sorted(tokenizer.get_vocab().items())
        h.update(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    specials = {
        name: str(getattr(tokenizer, name, None))
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
    }
    h.update(json.dumps(specials, sort_keys=True).encode())
    probe = tokenizer("Probe text: déjà vu 123", add_special_tokens=True)["input_ids"]
    h.update(json.dumps(list(probe)).encode())
    return h.hexdigest()


def documents_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 of the documents, in order (length-prefixed, so boundaries count)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """Hex key from JSON-serialisable parts (order-independent)."""
    parts = {"cache_format": CACHE_FORMAT_VERSION, **parts}
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def load_or_build(
    cache_root: str | os.PathLike,
    key: str,
    build: Callable[[], dict[str, list]],
    *,
    describe: str,
    meta: dict[str, Any] | None = None,
):
    """Return the cached ``datasets.Dataset`` for ``key``, building and saving it if absent.

    Args:
        cache_root: folder holding one sub-folder per key.
        key: from :func:`cache_key`.
        build: returns the dataset's columns; only called on a cache miss.
        describe: what is being built, for the log (e.g. ``"forget set 'data/x.jsonl'"``).
        meta: extra information stored next to the entry (for people inspecting the cache).
    """
    import datasets

    root = Path(cache_root).expanduser()
    final = root / key
    if (final / _META).is_file():
        log.info("%s: reusing tokenised cache %s", describe, final)
        return datasets.load_from_disk(str(final))
    columns = build()
    dataset = datasets.Dataset.from_dict(columns)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
    try:
        dataset.save_to_disk(str(tmp))
        info = {"key": key, "describe": describe, "rows": len(dataset), **(meta or {})}
        (tmp / _META).write_text(json.dumps(info, indent=2, default=str) + "\n")
        try:
            os.rename(tmp, final)
            log.info("%s: tokenised %d window(s), cached in %s", describe, len(dataset), final)
        except OSError:
            if not (final / _META).is_file():
                # a stale, incomplete entry (not written by this code): replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            # else another process built the same entry first: keep theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(final))


def splits_fingerprint(datamodule: Any) -> str:
    """SHA-256 of every evaluation split a data module scores: the bytes of each column of its
    tokenised windows (token ids, texts, document numbers...), split by split, plus the options
    that choose what is scored (``eval_subset``). Two data modules with the same fingerprint
    score the same windows, whatever files or names they were read from."""
    h = hashlib.sha256()
    for split in getattr(datamodule, "eval_split_names", ()):
        table = datamodule.eval_dataset(split).data.table
        h.update(f"split {split} {table.num_rows}\n".encode())
        for name in sorted(table.column_names):
            h.update(f"column {name}\n".encode())
            for chunk in table.column(name).combine_chunks().buffers():
                if chunk is not None:
                    h.update(memoryview(chunk))
    subset = getattr(datamodule, "eval_subset", None)
    h.update(json.dumps(subset, sort_keys=True, default=str).encode())
    return h.hexdigest()
